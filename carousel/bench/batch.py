"""`carousel bench batch`: the pipeline at a store's size, measured end to end on this machine.

It generates the synthetic store (`--users`, `--items`, about `--events` events over `DAYS` days, or
one of the `PRESETS`), imports it into a private lake, starts a private Redis, then runs
the full pipeline (input gate, train + score every shopper, output gate, publish) and one 15-minute
incremental run with 1% of the shoppers active, timing every stage. While they run it samples the memory
of this process and its children (the Spark JVM) for the peak, and afterwards measures the Redis memory of
a sample of stored lists. Writes the contract's JSON and prints a table.
"""

from __future__ import annotations

import gc
import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import redis

from carousel.lake import Lake
from configs.settings import Settings
from infra.redis_server import free_port, start_server, stop_server
from jobs.generate import StoreSpec, generate_store
from serving import keyspace

Progress = Callable[[str], None]
END = pd.Timestamp("2026-11-01T00:00:00Z")


class PeakMemory:
    """Samples the resident memory of this process and all its descendants every `every_s` seconds:
    the peak of their sum, and the peaks of this process (Python) and of its descendants (the Spark
    JVM) on their own."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.peak_bytes = 0
        self.peak_self_bytes = 0
        self.peak_children_bytes = 0
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            own = me.memory_info().rss
            children = 0
            for process in me.children(recursive=True):
                try:
                    children += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, own + children)
            self.peak_self_bytes = max(self.peak_self_bytes, own)
            self.peak_children_bytes = max(self.peak_children_bytes, children)
            self._stop.wait(self._every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# The period of every benchmark store: long enough for the ranker's two 21-day label windows and the
# 90-day popularity window, as in production and in the evaluation's synthetic store. A shorter period
# would leave the training windows empty and the benchmark would skip the ranker's training.
DAYS = 90


@dataclass(frozen=True)
class Preset:
    users: int
    items: int
    events: int


# Store sizes of `carousel bench batch --preset`; explicit --users/--items/--events override them.
PRESETS: dict[str, Preset] = {
    "small": Preset(users=20_000, items=2_000, events=1_000_000),
    "medium": Preset(users=200_000, items=20_000, events=5_000_000),
    "large": Preset(users=1_000_000, items=100_000, events=20_000_000),
}


def store_size(preset: str, users: int | None, items: int | None, events: int | None) -> Preset:
    """The preset's size with every figure given explicitly (not None) taking its place."""
    base = PRESETS[preset]
    return Preset(
        users=base.users if users is None else users,
        items=base.items if items is None else items,
        events=base.events if events is None else events,
    )


def store_spec(users: int, items: int, events: int) -> StoreSpec:
    """The store with `users` shoppers, `items` items and about `events` events over `DAYS` days: the
    generator makes about users x events_per_user events whatever the period (within 1%)."""
    return StoreSpec(users=users, items=items, days=DAYS, seed=5, end=END, events_per_user=events / users)


def redis_bytes_per_list(client: redis.Redis, sample: int = 500) -> float:
    """Mean MEMORY USAGE of stored shopper hashes (one list each after a full publish)."""
    sizes = []
    for key in client.scan_iter(match=keyspace.USER_PREFIX + "*", count=1_000):
        sizes.append(int(client.memory_usage(key, samples=0) or 0))
        if len(sizes) >= sample:
            break
    return float(np.mean(sizes)) if sizes else 0.0


def bench_batch(
    *, users: int, items: int, events: int, settings: Settings, progress: Progress
) -> dict[str, Any]:
    from jobs import pipeline

    started = time.perf_counter()
    store = generate_store(store_spec(users, items, events))
    progress(
        f"generated {len(store.events):,} events over {DAYS} days in {time.perf_counter() - started:.1f}s"
    )
    with tempfile.TemporaryDirectory(prefix="carousel-bench-batch-") as tmp:
        root = Path(tmp)
        redis_url = start_server(root / "redis", free_port())
        try:
            run_settings = settings.model_copy(
                update={"redis_url": redis_url, "var_dir": root / "var", "lake_dir": root / "var" / "lake"}
            )
            lake = Lake(run_settings.lake_dir)
            lake.upsert_items(store.items, source="bench items")
            lake.upsert_users(store.users, source="bench users")
            lake.append_events(store.events, now=END, source="bench events")
            # The events live in the lake now: held here too they would count (gigabytes at 20M) in the
            # peak of a process the pipeline's jobs never share with the generator.
            n_events = int(len(store.events))
            shoppers, catalog = store.users, store.items
            del store
            gc.collect()
            with PeakMemory() as memory:
                t0 = time.perf_counter()
                full = pipeline.run_refresh(
                    run_settings, interval_end=END.to_pydatetime(), run_id="bench-full", mode="full"
                )
                full_total = time.perf_counter() - t0
                progress(f"full pipeline: {full_total:.1f}s {full.stages}")
                consenting = shoppers.loc[shoppers["consent_personalization"], "user_id"].to_numpy()
                active = np.random.default_rng(2).choice(
                    consenting, size=max(1, len(shoppers) // 100), replace=False
                )
                late = _activity(active, catalog["item_id"].to_numpy())
                lake.append_events(late, now=END + pd.Timedelta(minutes=15), source="bench late events")
                t0 = time.perf_counter()
                incremental = pipeline.run_refresh(
                    run_settings,
                    interval_start=END.to_pydatetime(),
                    interval_end=(END + timedelta(minutes=15)).to_pydatetime(),
                    run_id="bench-incremental",
                    mode="incremental",
                )
                incremental_total = time.perf_counter() - t0
                progress(
                    f"incremental run ({len(active):,} active shoppers): {incremental_total:.1f}s {incremental.stages}"
                )
            per_list = redis_bytes_per_list(redis.Redis.from_url(redis_url))
            # What the full run trained, so a store too small to train the ranker cannot pass unnoticed.
            full_model = json.loads(
                (pipeline.run_dir(run_settings, "bench-full") / "manifest.json").read_text()
            )["model"]
        finally:
            stop_server(redis_url)
    return {
        "events": n_events,
        "events_requested": int(events),
        "days": DAYS,
        "users": int(len(shoppers)),
        "items": int(len(catalog)),
        "mode": "full",
        "stages": {k: round(float(v), 2) for k, v in full.stages.items()},
        "total_s": round(full_total, 2),
        "incremental_total_s": round(incremental_total, 2),
        "incremental_stages": {k: round(float(v), 2) for k, v in incremental.stages.items()},
        "incremental_active_users": int(len(active)),
        "redis_bytes_per_list": round(per_list, 1),
        "ranker": full_model["ranker"],
        "ranker_train_rows": int(full_model["ranker_train_rows"]),
        "full_counts": {k: int(v) for k, v in full.counts.items()},
        "list_length_stored": settings.list_length + settings.list_overflow,
        "peak_rss_mb": round(memory.peak_bytes / 1e6, 1),
        "peak_rss_mb_python": round(memory.peak_self_bytes / 1e6, 1),
        "peak_rss_mb_spark_jvm": round(memory.peak_children_bytes / 1e6, 1),
        "seconds_per_million_events": round(full_total / max(1e-9, n_events / 1e6), 2),
    }


def _activity(users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """Four events each (view, view, add to cart, purchase) for `users` within the next 15 minutes."""
    rng = np.random.default_rng(4)
    rows = []
    for n, user in enumerate(users):
        for k, kind in enumerate(("view", "view", "add_to_cart", "purchase")):
            rows.append(
                {
                    "user_id": user,
                    "session_id": f"bench-{user}",
                    "item_id": items[rng.integers(len(items))],
                    "event_type": kind,
                    "ts": END + pd.Timedelta(minutes=1 + n % 13, seconds=10 * k),
                    "quantity": 1,
                    "price": 9.0,
                    "country": "Germany",
                    "device": "mobile",
                    "referrer": "direct",
                }
            )
    return pd.DataFrame(rows)

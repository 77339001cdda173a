"""`carousel bench batch`: the pipeline at a store's size, measured end to end on this machine.

It generates the synthetic store (`--users`, `--items`, about `--events` events: the period is sized
from a pilot so the count comes close), imports it into a private lake, starts a private Redis, then runs
the full pipeline (input gate, train + score every shopper, output gate, publish) and one 15-minute
incremental run with 1% of the shoppers active, timing every stage. While they run it samples the memory
of this process and its children (the Spark JVM) for the peak, and afterwards measures the Redis memory of
a sample of stored lists. Writes the contract's JSON and prints a table.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
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
    """Samples the resident memory of this process and all its descendants every `every_s` seconds."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.peak_bytes = 0
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self._every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _days_for(users: int, items: int, events: int) -> int:
    """The period that gives about `events` events for `users` shoppers (from a 2,000-shopper pilot)."""
    pilot = generate_store(StoreSpec(users=2_000, items=min(items, 2_000), days=30, seed=1, end=END))
    per_user_day = len(pilot.events) / (2_000 * 30)
    return int(np.clip(round(events / max(1.0, users * per_user_day)), 14, 365))


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

    days = _days_for(users, items, events)
    started = time.perf_counter()
    store = generate_store(StoreSpec(users=users, items=items, days=days, seed=5, end=END))
    progress(
        f"generated {len(store.events):,} events over {days} days in {time.perf_counter() - started:.1f}s"
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
            with PeakMemory() as memory:
                t0 = time.perf_counter()
                full = pipeline.run_refresh(
                    run_settings, interval_end=END.to_pydatetime(), run_id="bench-full", mode="full"
                )
                full_total = time.perf_counter() - t0
                progress(f"full pipeline: {full_total:.1f}s {full.stages}")
                consenting = store.users.loc[store.users["consent_personalization"], "user_id"].to_numpy()
                active = np.random.default_rng(2).choice(
                    consenting, size=max(1, len(store.users) // 100), replace=False
                )
                late = _activity(active, store.items["item_id"].to_numpy())
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
        finally:
            stop_server(redis_url)
    return {
        "events": int(len(store.events)),
        "users": int(len(store.users)),
        "items": int(len(store.items)),
        "mode": "full",
        "stages": {k: round(float(v), 2) for k, v in full.stages.items()},
        "total_s": round(full_total, 2),
        "incremental_total_s": round(incremental_total, 2),
        "incremental_stages": {k: round(float(v), 2) for k, v in incremental.stages.items()},
        "incremental_active_users": int(len(active)),
        "redis_bytes_per_list": round(per_list, 1),
        "list_length_stored": settings.list_length + settings.list_overflow,
        "peak_rss_mb": round(memory.peak_bytes / 1e6, 1),
        "seconds_per_million_events": round(full_total / max(1e-9, len(store.events) / 1e6), 2),
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

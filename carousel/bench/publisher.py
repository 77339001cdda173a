"""A synthetic version of the list cache, built and published the way the pipeline publishes one.

`bench serve` uses it twice: in-process to give the API a version to serve, and as its own process
(`python -m carousel.bench.publisher`) to publish a second, large version while the API is under load,
which is how the publish-during-load figures are measured. That process writes the shoppers' lists to
a sorted Parquet file first, as the pipeline's compute stage leaves them, and publishes from it block by
block, as the publish stage does. It prints `publishing` once the file is written (so only the publish
is under measurement), `step <seconds> <name>` as each of the loader's steps ends, and
`published <seconds>` at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from jobs.publishing.lists_file import SortedListsFile
from jobs.publishing.loader import publish_version

LIST_LENGTH = 30  # 20 served + 10 overflow, as the pipeline stores them
COUNTRIES = ("Germany", "France", "United Kingdom", "Spain", "Italy")


@dataclass(frozen=True)
class SyntheticVersion:
    user_lists: pd.DataFrame
    segment_lists: pd.DataFrame
    item_lists: pd.DataFrame
    catalog: pd.DataFrame
    user_ids: list[str]


def synthetic_version(*, users: int, items: int = 5_000, seed: int = 3) -> SyntheticVersion:
    """`users` 30-item personal lists (distinct items each, reasons mixed as the ranker mixes them,
    a third naming the shopper's own item), country and global segment lists, similar items per item,
    and the catalog (titles, five departments, prices)."""
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{k:06d}" for k in range(items)], dtype=object)
    user_ids = np.array([f"u{k:07d}" for k in range(users)], dtype=object)
    # Distinct items per list: a random start and a stride coprime with the catalog size.
    start = rng.integers(0, items, size=(users, 1))
    picks = (start + np.arange(LIST_LENGTH) * 7919) % items
    codes = np.array(["similar_shoppers", "viewed", "popular", "goes_with_yours", "buy_again"], dtype=object)
    code = codes[rng.integers(0, len(codes), size=users * LIST_LENGTH)]
    texts = {
        "similar_shoppers": "Shoppers with similar taste bought this",
        "viewed": "You looked at this recently",
        "popular": "Popular right now",
        "buy_again": "You bought this before",
    }
    text = pd.Series(code).map(texts).to_numpy(dtype=object)
    goes_with = code == "goes_with_yours"
    anchors = item_ids[rng.integers(0, items, size=int(goes_with.sum()))]
    text[goes_with] = "Goes with Product " + anchors.astype(str)
    user_lists = pd.DataFrame(
        {
            "user_id": np.repeat(user_ids, LIST_LENGTH),
            "rank": np.tile(np.arange(1, LIST_LENGTH + 1), users),
            "item_id": item_ids[picks.ravel()],
            "score": np.sort(rng.random((users, LIST_LENGTH)), axis=1)[:, ::-1].ravel() * 3 - 1,
            "reason_code": code,
            "reason_text": text,
        }
    )
    segments = pd.DataFrame(
        [
            {
                "segment": seg,
                "rank": r,
                "item_id": item_ids[(k * 7 + r) % items],
                "score": 1.0 - r / 100,
                "reason_code": "bestseller",
                "reason_text": "Bestseller right now",
            }
            for k, seg in enumerate(["global", *(f"country:{c.lower()}" for c in COUNTRIES)])
            for r in range(1, LIST_LENGTH + 1)
        ]
    )
    anchor_rank = np.tile(np.arange(1, 11), items)
    similar = pd.DataFrame(
        {
            "anchor_id": np.repeat(item_ids, 10),
            "rank": anchor_rank,
            "item_id": item_ids[(np.repeat(np.arange(items), 10) + anchor_rank) % items],
            "score": 0.5,
            "reason_code": "bought_together",
            "reason_text": "Often bought or viewed together",
        }
    )
    departments = np.array(["home", "garden", "kitchen", "toys", "books"], dtype=object)
    catalog = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": "Product " + item_ids.astype(str),
            "category": departments[np.arange(items) % len(departments)] + "/misc",
            "brand": None,
            "price": np.round(rng.uniform(1, 100, size=items), 2),
            "in_stock": True,
        }
    )
    return SyntheticVersion(user_lists, segments, similar, catalog, user_ids.tolist())


def publish_synthetic(url: str, *, users: int, items: int = 5_000, seed: int = 3) -> list[str]:
    """Publish a synthetic full version with `users` lists; returns the shoppers' ids."""
    built = synthetic_version(users=users, items=items, seed=seed)
    _publish(url, built)
    return built.user_ids


def _publish(
    url: str,
    built: SyntheticVersion,
    on_step: Callable[[str], None] | None = None,
    user_lists: SortedListsFile | None = None,
) -> None:
    publish_version(
        redis.Redis.from_url(url),
        version=datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"),
        user_lists=built.user_lists if user_lists is None else user_lists,
        segment_lists=built.segment_lists,
        item_lists=built.item_lists,
        catalog=built.catalog,
        manifest={"run_id": "bench", "generated_at": datetime.now(UTC).isoformat()},
        on_step=on_step,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--lists", type=int, required=True)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--nice", type=int, default=0, help="run at this niceness, as a batch job would")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    with tempfile.TemporaryDirectory(prefix="carousel-publisher-") as tmp:
        # As the pipeline's publish stage does: the shoppers' lists come from the run's sorted Parquet
        # file, read block by block; the frames built here are gone before the publish starts.
        built = synthetic_version(users=args.lists, items=args.items, seed=11)
        path = Path(tmp) / "user_lists.parquet"
        built.user_lists.to_parquet(path, index=False)
        built = replace(built, user_lists=built.user_lists.iloc[0:0], user_ids=[])
        gc.collect()
        print("publishing", flush=True)
        started = time.perf_counter()
        _publish(
            args.redis_url,
            built,
            lambda name: print(f"step {time.perf_counter() - started:.2f} {name}", flush=True),
            user_lists=SortedListsFile(path),
        )
        print(f"published {time.perf_counter() - started:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every shopper's list computed by Spark tasks, not by the driver.

The shoppers' feature rows (the `SHOPPER_FRAMES`, as Spark frames) are range-partitioned by shopper.
Each task scores its shoppers a block at a time (`score_block`) with the model's parts and the
item-level frames, which are broadcast once, and returns their lists in shopper order. Short lists are
topped up in a second pass over the same partitions, once the lowest score of all lists is known
(`fill_short_lists`), and Spark writes the lists as Parquet parts: part n holds shoppers that sort
before part n+1's, so the loader streams the parts in order (`SortedListsFile`). The driver holds the
model and the item-level frames, never a shopper's features or lists, and a cluster scores on every
executor core.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.features.frames import SHOPPER_FRAMES, FeatureSet, popular_items, sorted_frame
from jobs.ranking.lists import LIST_SCHEMA, fill_short_lists, list_table
from jobs.ranking.model import ModelParams, TrainedModel
from jobs.ranking.scoring import by_shopper, score_block, shoppers_block

# Shoppers per partition, at most: a task holds its partition's feature rows while it scores them.
PARTITION_SHOPPERS = 10_000
# More partitions than cores keep every core busy until the last task, as long as each has enough
# shoppers to be worth a task (a worker starts and compiles its ranker once, for its first task); a
# multiple of the cores, so the last round of tasks is not one core's alone.
PARTITIONS_PER_CORE = 4
MIN_PARTITION_SHOPPERS = 1_000
# Shoppers a task scores at once: a block's candidates with their features (about 0.4 KB each, up to
# ~300 per shopper) take about 0.6 GB, per task running.
TASK_BLOCK_SHOPPERS = 5_000

_FRAME = "_frame"  # which shopper frame a row of the partitioned union belongs to
LIST_DDL = "user_id string, rank long, item_id string, score double, reason_code string, reason_text string"


@dataclass(frozen=True)
class ScoringJob:
    """What every scoring task needs besides its shoppers' rows: broadcast once to each executor."""

    trained: TrainedModel
    params: ModelParams
    as_of: pd.Timestamp
    items: pd.DataFrame  # the feature set's items frame (`jobs.features.collect.item_frame`)
    titles: pd.Series  # item titles by item id, for the "Goes with <title>" reasons
    length: int
    block_shoppers: int = TASK_BLOCK_SHOPPERS


@dataclass(frozen=True)
class ScoredShoppers:
    """What `write_user_lists` wrote: the number of lists, the shoppers' feature rows it scored, and
    how long it took on how many cores (Spark's default parallelism)."""

    lists: int
    rows: dict[str, int]
    seconds: float
    cores: int


def write_user_lists(
    spark: SparkSession,
    frames: dict[str, DataFrame],
    job: ScoringJob,
    path: Path,
    progress: Callable[[str], None] | None = None,
) -> ScoredShoppers:
    """Score every shopper of `frames` on the executors and write their lists to `path`, a folder of
    Parquet parts in shopper order. The parts are written beside it and renamed into place whole, so
    `path` is never seen half written. `progress` hears how long each phase took."""
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            progress(f"scoring: {message} ({time.perf_counter() - started:.1f}s)")

    rows = _tagged(frames).persist(StorageLevel.DISK_ONLY)
    staging = path.with_name(f"{path.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        counts = {str(r[_FRAME]): int(r["count"]) for r in rows.groupBy(_FRAME).count().collect()}
        counts = {name: counts.get(name, 0) for name in frames}
        say(f"feature rows of {counts['users']:,} shoppers computed")
        columns = {name: list(frame.columns) for name, frame in frames.items()}
        scored, partitions = _scored(spark, rows, columns, job, counts["users"])
        scored = scored.persist(StorageLevel.DISK_ONLY)
        say(f"scoring in {partitions} partitions")
        try:
            lists = _fill_and_write(scored, job, staging, say)
        finally:
            scored.unpersist()
    finally:
        rows.unpersist()
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    staging.replace(path)
    seconds = time.perf_counter() - started
    return ScoredShoppers(lists, counts, seconds, spark.sparkContext.defaultParallelism)


def _tagged(frames: dict[str, DataFrame]) -> DataFrame:
    """The shopper frames as one frame of rows tagged with their frame's name (each row keeps its own
    frame's columns; the others are null), so one range partitioning puts all of a shopper's rows in
    the same partition."""
    tagged = [frame.withColumn(_FRAME, F.lit(name)) for name, frame in frames.items()]
    return reduce(lambda left, right: left.unionByName(right, allowMissingColumns=True), tagged)


def _scored(
    spark: SparkSession, rows: DataFrame, columns: dict[str, list[str]], job: ScoringJob, shoppers: int
) -> tuple[DataFrame, int]:
    """The unfilled lists of every shopper in `rows` (`_tagged`; `columns`: each frame's own columns),
    partition by partition in shopper order, and the number of partitions."""
    cores = spark.sparkContext.defaultParallelism
    partitions = max(
        math.ceil(shoppers / PARTITION_SHOPPERS / cores) * cores,
        min(cores * PARTITIONS_PER_CORE, math.ceil(shoppers / MIN_PARTITION_SHOPPERS)),
        1,
    )
    # The compiled ranker is native code that does not travel: each worker compiles its own.
    shared = spark.sparkContext.broadcast(replace(job, trained=job.trained.uncompiled()))
    partitioned = rows.repartitionByRange(partitions, "user_id")

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from _score_partition(shared, columns, batches)

    return partitioned.mapInArrow(score, LIST_DDL), partitions


def _score_partition(
    shared: Broadcast[ScoringJob], columns: dict[str, list[str]], batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """One task: its shoppers' feature rows in, their lists out in shopper order."""
    chunks = list(batches)
    if not chunks:
        return
    table = pa.Table.from_batches(chunks)
    if not table.num_rows:
        return
    # A Python worker loads the broadcast job once and keeps it for its later tasks, the ranker
    # compiled by its first (`TrainedModel.ranker`).
    job = shared.value
    tags = table.column(_FRAME)
    frames = {
        name: sorted_frame(table.filter(pc.equal(tags, name)).select(cols).to_pandas(), SHOPPER_FRAMES[name])
        for name, cols in columns.items()
    }
    del table, chunks, tags
    fs = by_shopper(FeatureSet.of(job.as_of, job.items, frames))
    users = fs.users["user_id"].to_numpy()
    for start in range(0, len(users), job.block_shoppers):
        block = users[start : start + job.block_shoppers]
        lists = score_block(
            shoppers_block(fs, block), job.trained, block, job.params, length=job.length, titles=job.titles
        )
        if not lists.empty:
            yield from list_table(lists).to_batches()


def _fill_and_write(scored: DataFrame, job: ScoringJob, folder: Path, say: Callable[[str], None]) -> int:
    """Top up the short lists below the lowest score of all lists, as `fill_short_lists` does for lists
    built at once, and write them; returns the number of lists."""
    summary = (
        scored.groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("n"), F.min("score").alias("low"))
        .agg(F.count(F.lit(1)).alias("lists"), F.min("n").alias("shortest"), F.min("low").alias("floor"))
        .first()
    )
    lists = int(summary["lists"]) if summary is not None else 0
    say(f"{lists:,} lists scored")
    fill = popular_items(job.items, job.length * 2)
    out = scored
    short = bool(lists) and int(summary["shortest"]) < job.length and not fill.empty  # type: ignore[index]
    if short:
        out = scored.mapInArrow(_filler(fill, job.length, float(summary["floor"])), LIST_DDL)  # type: ignore[index]
    out.write.parquet(str(folder))
    say("lists written" + (", short ones topped up" if short else ""))
    if not any(folder.glob("*.parquet")):
        # No shopper to score: an empty part, so readers find the lists' columns.
        pq.write_table(LIST_SCHEMA.empty_table(), folder / "part-00000-empty.parquet")
    return lists


def _filler(
    fill: pd.DataFrame, length: int, floor: float
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def filled(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        chunks = list(batches)
        if not chunks:
            return
        lists = pa.Table.from_batches(chunks).to_pandas()
        if len(lists):
            yield from list_table(fill_short_lists(lists, length, fill, floor=floor)).to_batches()

    return filled

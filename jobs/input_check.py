"""Pipeline stage 0: validate the events a run reads, before any model work (Great Expectations).

A run reads the lake's events strictly before its data interval end; `quality.input_gate` reduces them
to one row of counts and validates it. The counts over parts the gate has scanned before are kept
(`quality.input_ledger`), so a run reads only the parts added since: a 15-minute run scans minutes of
events, not the whole lake again, with the same metrics. The volume check compares the row count with
the last successful runs' (from the run history), so a lake that suddenly lost data stops the run.
Future timestamps are refused earlier, when events are written to the lake.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from carousel.lake import Lake
from configs.settings import Settings
from jobs.run_history import RunHistory, folder_name
from jobs.spark import spark_session
from quality.input_ledger import ADDITIVE_COUNTS, DAY_US, LakeSummary, sorted_unique

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InputValidationFailed(RuntimeError):
    """The input gate refused the run's events; nothing is computed or published."""


def recent_input_volumes(history: RunHistory, limit: int = 10) -> list[int]:
    """Input row counts of the latest runs whose inputs passed the gate."""
    volumes = []
    for run in history.recent(limit * 3):
        inputs = run.get("inputs") or {}
        if inputs.get("success") and inputs.get("rows"):
            volumes.append(int(inputs["rows"]))
    return volumes[:limit]


def check_inputs(settings: Settings, *, run_id: str, interval_end: datetime) -> dict[str, Any]:
    """Validate the run's input events; raise `InputValidationFailed` when the gate fails."""
    from quality.input_gate import METRIC_COLUMNS, validate_run_inputs  # GX is heavy: import here

    interval_end = interval_end.astimezone(UTC)
    lake = Lake(settings.lake_dir)
    history = RunHistory(settings.runs_dir / "history.sqlite")
    if not lake.event_files():
        raise InputValidationFailed(f"the lake at {settings.lake_dir} has no events: import data first")
    summary, scanned = lake_summary(settings, spark_session(settings), lake, interval_end, run_id)
    metrics = pd.DataFrame([summary.metrics(_micros(interval_end))], columns=list(METRIC_COLUMNS))
    metrics["max_ts"] = pd.to_datetime(metrics["max_ts"], unit="us")  # naive UTC, as Spark's toPandas gives
    result = validate_run_inputs(
        run_id=run_id,
        metrics=metrics,
        recent_volumes=recent_input_volumes(history),
        quality_dir=settings.quality_dir,
        max_duplicate_rate=settings.max_duplicate_rate,
        min_volume_ratio=settings.min_volume_ratio,
    )
    verdict = {
        "success": result.success,
        "failures": result.failures,
        "rows": int(metrics["rows"].iloc[0]),
        "docs_index": str(result.docs_index),
        **scanned,
    }
    history.update(run_id, inputs=verdict, interval_end=interval_end.isoformat())
    if not result.success:
        history.update(run_id, status="failed", failed_stage="inputs", error="; ".join(result.failures[:5]))
        raise InputValidationFailed(
            f"run {run_id}: input events failed validation: "
            + "; ".join(result.failures[:5])
            + f". Data Docs: {result.docs_index}"
        )
    return verdict


def lake_summary(
    settings: Settings, spark: SparkSession, lake: Lake, interval_end: datetime, run_id: str
) -> tuple[LakeSummary, dict[str, int]]:
    """The input metrics' summary of every lake event before `interval_end`, scanning only the parts the
    kept summary lacks, and what was scanned. The kept summary gains the scanned parts whose rows are
    all before `interval_end`; one it cannot use (a part changed or gone, or a run before its newest
    event, such as a backfill) is rebuilt from every part."""
    path = settings.quality_dir / "inputs_ledger" / "lake_summary.npz"
    end = _micros(interval_end)
    signatures = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in lake.event_files()}
    kept = LakeSummary.load(path)
    if kept is None or not kept.valid_for(signatures, end):
        kept = LakeSummary()
    new = [lake.events_dir / name for name in signatures if name not in kept.parts]
    complete = [p for p in new if _newest_event(p) < end]
    # A part drained after the interval ended holds later events: counted up to the end this run, kept
    # out of the summary until a run's end is past all of it.
    partial = [p for p in new if p not in complete]
    # Executors write the scanned rows' keys here: like the lake, on storage every node sees.
    scratch = settings.quality_dir / "inputs_ledger" / f"scan-{folder_name(run_id)}"
    try:
        summary = kept.merge(_scan(spark, complete, signatures, interval_end, scratch))
        if complete:
            summary.save(path)
        run_summary = summary.merge(_scan(spark, partial, signatures, interval_end, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    scanned = run_summary.counts["rows"] - kept.counts["rows"]
    return run_summary, {"parts": len(signatures), "parts_scanned": len(new), "rows_scanned": scanned}


def _scan(
    spark: SparkSession,
    parts: list[Path],
    signatures: dict[str, list[int]],
    interval_end: datetime,
    scratch: Path,
) -> LakeSummary:
    """The summary of `parts`' events before `interval_end`: one Spark pass for the counts, one that
    writes each row's keys as Parquet (read back with pyarrow, not through the driver's heap)."""
    from quality.input_gate import input_counts, row_keys

    if not parts:
        return LakeSummary()
    events = spark.read.parquet(*(str(p) for p in parts)).where(F.col("ts") < F.lit(interval_end))
    # The newest time as microseconds from Spark: a timestamp collected to Python is read in this
    # process's local zone.
    counts = input_counts(events, interval_end).withColumn("max_ts", F.unix_micros("max_ts")).first()
    assert counts is not None  # an aggregate without grouping gives one row
    shutil.rmtree(scratch, ignore_errors=True)
    row_keys(events).write.parquet(str(scratch))
    keys = pq.read_table(scratch)
    shutil.rmtree(scratch, ignore_errors=True)

    def values(column: str) -> np.ndarray:
        return keys[column].drop_null().to_numpy().astype(np.int64, copy=False)

    newest = counts["max_ts"]
    times = np.sort(values("ts_us"))
    return LakeSummary(
        parts={p.name: signatures[p.name] for p in parts},
        counts={k: int(counts[k]) for k in ADDITIVE_COUNTS},
        max_ts=newest,
        fingerprints=sorted_unique(values("fingerprint")),
        users=sorted_unique(values("user")),
        items=sorted_unique(values("item")),
        recent_ts=times if newest is None else times[np.searchsorted(times, newest - DAY_US) :],
    )


def _newest_event(part: Path) -> int:
    """The part's newest event time (microseconds) from its Parquet footer; a part without statistics
    counts as newer than any run, so it is scanned by every run and never kept."""
    metadata = pq.ParquetFile(part).metadata
    column = metadata.schema.names.index("ts")
    newest = -1
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            return np.iinfo(np.int64).max
        newest = max(newest, _micros(statistics.max))
    return newest


def _micros(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)

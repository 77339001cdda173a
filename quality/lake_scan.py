"""The input gate's metrics over the lake, without reading the whole lake each run.

Lake parts never change once written, so the metrics of the parts already scanned are kept as a
mergeable summary (`quality.input_ledger.LakeSummary`), and each run scans only the parts added since
(Spark), merging their summary in. The result equals a full scan's (a test compares them run by run).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from carousel.lake import Lake, micros, newest_event_us
from carousel.runs import folder_name
from quality.input_ledger import ADDITIVE_COUNTS, DAY_US, LakeSummary, sorted_unique


def lake_summary(
    spark: SparkSession, lake: Lake, interval_end: datetime, *, quality_dir: Path, run_id: str
) -> tuple[LakeSummary, dict[str, int]]:
    """The input metrics' summary of every lake event before `interval_end`, scanning only the parts the
    kept summary lacks, and what was scanned. The kept summary gains the scanned parts whose rows are
    all before `interval_end`; one it cannot use (a part changed or gone, or a run before its newest
    event, such as a backfill) is rebuilt from every part."""
    path = quality_dir / "inputs_ledger" / "lake_summary.npz"
    end = micros(interval_end)
    signatures = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in lake.event_files()}
    kept = LakeSummary.load(path)
    if kept is None or not kept.valid_for(signatures, end):
        kept = LakeSummary()
    new = [lake.events_dir / name for name in signatures if name not in kept.parts]
    complete = [p for p in new if newest_event_us(p) < end]
    # A part drained after the interval ended holds later events: counted up to the end this run, kept
    # out of the summary until a run's end is past all of it.
    partial = [p for p in new if p not in complete]
    # Executors write the scanned rows' keys here: like the lake, on storage every node sees.
    scratch = quality_dir / "inputs_ledger" / f"scan-{folder_name(run_id)}"
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
    """The summary of `parts`' events before `interval_end`, from one Spark pass that writes each row's
    keys as Parquet (read back with pyarrow, not through the driver's heap)."""
    from quality.input_metrics import FLAGGED_COUNTS, row_keys

    if not parts:
        return LakeSummary()
    events = spark.read.parquet(*(str(p) for p in parts)).where(F.col("ts") < F.lit(interval_end))
    shutil.rmtree(scratch, ignore_errors=True)
    row_keys(events, interval_end).write.parquet(str(scratch))
    keys = pq.read_table(scratch)
    shutil.rmtree(scratch, ignore_errors=True)

    def values(column: str) -> np.ndarray:
        return keys[column].drop_null().to_numpy().astype(np.int64, copy=False)

    flags = values("flags")
    counts = {"rows": keys.num_rows}
    counts.update(
        {name: int(np.count_nonzero(flags & (1 << bit))) for bit, name in enumerate(FLAGGED_COUNTS)}
    )
    times = np.sort(values("ts_us"))
    newest = int(times[-1]) if len(times) else None
    return LakeSummary(
        parts={p.name: signatures[p.name] for p in parts},
        counts={k: counts[k] for k in ADDITIVE_COUNTS},
        max_ts=newest,
        fingerprints=sorted_unique(values("fingerprint")),
        users=sorted_unique(values("user")),
        items=sorted_unique(values("item")),
        recent_ts=times if newest is None else times[np.searchsorted(times, newest - DAY_US) :],
    )

"""Pipeline stage 0: validate the events a run reads, before any model work (Great Expectations).

A run reads the lake's events strictly before its data interval end; `quality.input_gate` reduces them
to one row of counts in Spark and validates it. The volume check compares the row count with the last
successful runs' (from the run history), so a lake that suddenly lost data stops the run. Future
timestamps are refused earlier, when events are written to the lake.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyspark.sql import functions as F

from carousel.lake import Lake
from configs.settings import Settings
from jobs.run_history import RunHistory
from jobs.spark import spark_session


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
    from quality.input_gate import input_metrics, validate_run_inputs  # GX is heavy: import here

    interval_end = interval_end.astimezone(UTC)
    lake = Lake(settings.lake_dir)
    history = RunHistory(settings.runs_dir / "history.sqlite")
    spark = spark_session(settings)
    if not lake.event_files():
        raise InputValidationFailed(f"the lake at {settings.lake_dir} has no events: import data first")
    events = spark.read.parquet(str(lake.events_dir)).where(F.col("ts") < F.lit(interval_end))
    metrics = input_metrics(events, interval_end).toPandas()
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

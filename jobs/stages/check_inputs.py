"""Stage `check_inputs`: validate the events a run reads, before any model work (Great Expectations).

Extract: the lake's events strictly before the run's data interval end, scanned only where the kept
summary lacks them (`quality.lake_scan`), and the row counts of recent successful runs. Transform: the
input gate (`quality.input_metrics` in Spark, then `quality.input_gate` in GX: nulls, event types, bad prices
and quantities, duplicate rate, a volume drop against recent runs). Load: the verdict into the run's history;
a failed gate raises `InputValidationFailed`. Future timestamps are refused earlier, when events are written
to the lake.
"""

from __future__ import annotations

import importlib
import threading
from datetime import UTC
from typing import Any

import pandas as pd

from carousel.lake import Lake, micros
from carousel.runs import RunHistory
from jobs.features.session import spark_session
from jobs.stages.run import StageResult, StageRun, ValidationFailed
from quality.input_metrics import METRIC_COLUMNS
from quality.lake_scan import lake_summary


class InputValidationFailed(ValidationFailed):
    """The input gate refused the run's events; nothing is computed or published."""


def run(job: StageRun) -> StageResult:
    verdict = check_inputs(job)
    return StageResult(f"inputs passed ({verdict['rows']:,} events)", verdict)


def recent_input_volumes(history: RunHistory, limit: int = 10) -> list[int]:
    """Input row counts of the latest runs whose inputs passed the gate."""
    volumes = []
    for record in history.recent(limit * 3):
        inputs = record.get("inputs") or {}
        if inputs.get("success") and inputs.get("rows"):
            volumes.append(int(inputs["rows"]))
    return volumes[:limit]


def check_inputs(job: StageRun) -> dict[str, Any]:
    """Validate the run's input events; raise `InputValidationFailed` when the gate fails."""
    # Great Expectations takes seconds to import: it loads on a thread while Spark starts and scans the
    # lake (the Spark half, `quality.input_metrics`, does not need it). A failed import raises below.
    loading = threading.Thread(target=importlib.import_module, args=("quality.input_gate",), daemon=True)
    loading.start()
    settings, run_id = job.settings, job.run_id
    interval_end = job.interval_end.astimezone(UTC)
    lake = Lake(settings.lake_dir)
    if not lake.event_files():
        raise InputValidationFailed(f"the lake at {settings.lake_dir} has no events: import data first")
    summary, scanned = lake_summary(
        spark_session(settings), lake, interval_end, quality_dir=settings.quality_dir, run_id=run_id
    )
    loading.join()
    from quality.input_gate import validate_run_inputs

    metrics = pd.DataFrame([summary.metrics(micros(interval_end))], columns=list(METRIC_COLUMNS))
    metrics["max_ts"] = pd.to_datetime(metrics["max_ts"], unit="us")  # naive UTC, as Spark's toPandas gives
    result = validate_run_inputs(
        run_id=run_id,
        metrics=metrics,
        recent_volumes=recent_input_volumes(job.history),
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
    job.history.update(run_id, inputs=verdict, interval_end=interval_end.isoformat())
    if not result.success:
        raise InputValidationFailed(
            f"run {run_id}: input events failed validation: "
            + "; ".join(result.failures[:5])
            + f". Data Docs: {result.docs_index}"
        )
    return verdict

"""Running stages: the run's folder and history, each stage timed and recorded, and a whole chain of
stages in one process (`carousel refresh`, `carousel retrain`).

Stages hand over through the run's folder `<var_dir>/runs/<run_id>/`, so each one can run in its own
process (the DAG's `carousel submit` tasks) and a retried task redoes only its own stage. Nothing reads
the wall clock: every stage gets the run's data interval, and the model's "now" is the newest event
before its end.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carousel.runs import RunHistory, folder_name
from configs.settings import Settings
from jobs.stages import MODES, STAGES

Progress = Callable[[str], None]


class PipelineError(RuntimeError):
    """A stage could not run; the message says why. Nothing was published."""


class ValidationFailed(PipelineError):
    """A quality gate refused the run's inputs or lists; nothing is published."""


def version_for(interval_end: datetime) -> str:
    """The sortable version id of the lists covering data up to `interval_end`."""
    return interval_end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def run_dir(settings: Settings, run_id: str) -> Path:
    return settings.runs_dir / folder_name(run_id)


def history(settings: Settings) -> RunHistory:
    return RunHistory(settings.runs_dir / "history.sqlite")


@dataclass(frozen=True)
class StageRun:
    """What every stage of one run is told: the run, its data interval and the compute mode."""

    settings: Settings
    run_id: str
    interval_end: datetime
    interval_start: datetime | None = None
    mode: str = "full"
    progress: Progress | None = None

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    @property
    def folder(self) -> Path:
        return run_dir(self.settings, self.run_id)

    @property
    def history(self) -> RunHistory:
        return history(self.settings)


@dataclass(frozen=True)
class StageResult:
    """A stage's one-line summary and what it produced (for the caller that chains stages)."""

    summary: str
    value: Any = None


# Each stage's module under jobs.stages; imported only when the stage runs (the input gate's job must
# not load LightGBM, the API's process none of them).
_MODULES = {
    "drain_events": "drain",
    "compact_erased": "compact",
    "check_inputs": "check_inputs",
    "compute": "compute",
    "train": "train",
    "validate": "validate",
    "publish": "publish",
    "audiences": "audiences",
}


@contextmanager
def stage_timer(job: StageRun, name: str) -> Iterator[None]:
    """Time a stage into the run's history; a failure records the stage and the error, then re-raises."""
    started = time.perf_counter()
    job.say(f"{name} ...")
    try:
        yield
    except Exception as exc:
        job.history.update(job.run_id, status="failed", failed_stage=name, error=str(exc)[:2000])
        raise
    took = round(time.perf_counter() - started, 2)
    job.history.update(job.run_id, stages={name: took})
    job.say(f"{name} done in {took:.1f}s")


def run_stage(name: str, job: StageRun) -> StageResult:
    """Run one stage of the run `job` describes, timed and recorded."""
    if name not in STAGES:
        raise PipelineError(f"unknown stage {name!r}: use one of {', '.join(STAGES)}")
    if job.mode not in MODES:
        raise PipelineError(f"unknown mode {job.mode!r}: use one of {', '.join(MODES)}")
    module = importlib.import_module(f"jobs.stages.{_MODULES[name]}")
    with stage_timer(job, name):
        result: StageResult = module.run(job)
    job.say(f"{name}: {result.summary}")
    return result


def run_stages(stages: Sequence[str], job: StageRun) -> dict[str, StageResult]:
    """Every stage of `stages` in order, in this process (what `carousel refresh` and `carousel retrain`
    do); the first failure stops the chain."""
    return {name: run_stage(name, job) for name in stages}


def data_interval(job: StageRun) -> tuple[datetime, datetime]:
    """The run's data interval in UTC: [interval_start, interval_end), 15 minutes by default."""
    end = job.interval_end.astimezone(UTC)
    start = (job.interval_start or end - timedelta(minutes=15)).astimezone(UTC)
    if start >= end:
        raise PipelineError(
            f"the data interval is empty: start {start.isoformat()} is not before end {end.isoformat()}"
        )
    return start, end

"""`carousel refresh`: every stage of the refresh DAG (`jobs.stages.REFRESH`) in a row, in one process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from configs.settings import Settings
from jobs.publishing.loader import PublishResult
from jobs.stages import REFRESH
from jobs.stages.manifest import RunManifest
from jobs.stages.run import Progress, StageRun, run_stages, version_for


@dataclass(frozen=True)
class RefreshResult:
    run_id: str
    published: PublishResult
    manifest: RunManifest

    @property
    def version(self) -> str:
        return self.published.version


def run_refresh(
    settings: Settings,
    *,
    interval_end: datetime,
    interval_start: datetime | None = None,
    mode: str = "full",
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RefreshResult:
    """Every stage of the refresh DAG (`jobs.stages.REFRESH`) in a row, in this process: what
    `carousel refresh` runs."""
    run_id = run_id or f"manual__{version_for(interval_end)}"
    job = StageRun(settings, run_id, interval_end, interval_start, mode, progress)
    results = run_stages(REFRESH, job)
    return RefreshResult(run_id, results["publish"].value, results["compute"].value)

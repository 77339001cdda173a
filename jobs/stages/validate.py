"""Stage `validate`: the Great Expectations output gate over the run's lists.

Extract: the run's lists, a block of whole lists at a time, and the lake's catalog; the live version's
lists of a sample of the run's shoppers (the drift baseline). Transform: the gate (`quality.output_gate`).
Load: `validation.json` in the run's folder and the verdict in the run's history; a failed gate raises
`ValidationFailed`, so nothing is published.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from carousel.cache.client import sync_client
from carousel.cache.versions import live_version, read_user_lists
from carousel.lake import Lake
from configs.settings import Settings
from jobs.publishing import PublishError
from jobs.publishing.lists_file import Lists, SortedListsFile, blocks, open_lists
from jobs.stages.manifest import RunManifest
from jobs.stages.run import PipelineError, StageResult, StageRun, ValidationFailed

if TYPE_CHECKING:
    from quality.output_gate import DriftBaseline


def run(job: StageRun) -> StageResult:
    verdict = validate_lists(job)
    return StageResult(f"lists passed; Data Docs: {verdict['docs_index']}", verdict)


def validate_lists(job: StageRun) -> dict[str, Any]:
    """Run the output gate; raise `ValidationFailed` (nothing published) on failure."""
    # GX is heavy: import only for this stage.
    from quality.output_gate import CHECKED_COLUMNS, validate_run_output

    settings, folder = job.settings, job.folder
    manifest = RunManifest.read(folder, job.run_id)
    catalog = Lake(settings.lake_dir).read_items()
    if catalog is None:
        raise PipelineError(f"the lake at {settings.lake_dir} has no items table")
    # Read a block of whole lists at a time, as the loader does: the gate never holds every list's rows.
    user_lists = open_lists(folder / "user_lists.parquet", columns=("user_id", *CHECKED_COLUMNS))
    try:
        result = validate_run_output(
            run_id=job.run_id,
            user_lists=blocks(user_lists),
            segment_lists=pd.read_parquet(folder / "segment_lists.parquet"),
            catalog=catalog[["item_id", "in_stock"]],
            active_users=manifest.counts.modelled_users,
            list_length=settings.stored_list_length,
            min_user_coverage=settings.min_user_coverage,
            quality_dir=settings.quality_dir,
            drift=_drift_baseline(settings, _owners(user_lists), manifest.version),
        )
    except PublishError as error:  # rows without an owner: the loader would refuse them too
        raise ValidationFailed(f"run {job.run_id} failed validation: {error}") from error
    verdict = {
        "success": result.success,
        "failures": result.failures,
        "results_path": str(result.results_path),
        "docs_index": str(result.docs_index),
    }
    (folder / "validation.json").write_text(json.dumps(verdict, indent=2))
    job.history.update(job.run_id, validation=verdict)
    if not result.success:
        raise ValidationFailed(
            f"run {job.run_id} failed validation ({len(result.failures)} expectation(s)): "
            + "; ".join(result.failures[:5])
            + f". Data Docs: {result.docs_index}"
        )
    return verdict


def _owners(lists: Lists) -> pd.Series:
    return lists.owners() if isinstance(lists, SortedListsFile) else pd.Series(lists["user_id"].unique())


def _drift_baseline(settings: Settings, shoppers: pd.Series, version: str) -> DriftBaseline | None:
    """The live version's lists of a fixed sample of this run's shoppers (None when nothing older is
    live: a first run, or a rerun of the live interval, has nothing to drift from)."""
    from quality.output_gate import DriftBaseline

    client = sync_client(settings)
    live = live_version(client)
    if live is None or live >= version:
        return None
    sample = shoppers.sample(min(settings.drift_sample, len(shoppers)), random_state=0).sort_values()
    return DriftBaseline(
        version=live,
        live_lists=read_user_lists(client, live, sample.astype(str).tolist()),
        min_list_overlap=settings.min_list_overlap,
        score_tolerance=settings.drift_score_tolerance,
        min_item_coverage_ratio=settings.min_item_coverage_ratio,
    )

"""Stage `publish`: the validated lists into Redis as a new version, then the live pointer switched.

Extract: the run's manifest, verdict, list files and catalog. Transform and load:
`jobs.publishing.loader` (shoppers streamed block by block from the sorted lists file, completeness
checked before a forward-only switch). A run that has not passed validation is refused; a rerun of the live
interval switches nothing and says whether its recomputed lists equal the published ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from carousel.cache.client import sync_client
from carousel.cache.memory import memory_warnings, read_memory
from carousel.cache.shoppers import erasures
from jobs.publishing.lists_file import open_lists
from jobs.publishing.loader import PublishResult, publish_version
from jobs.stages.manifest import RunManifest
from jobs.stages.run import PipelineError, StageResult, StageRun


def run(job: StageRun) -> StageResult:
    result = publish_lists(job)
    return StageResult(
        f"version {result.version} {'is live' if result.switched else 'was already live'}", result
    )


def publish_lists(job: StageRun) -> PublishResult:
    """Load the validated lists into Redis as a new version and switch the live pointer."""
    settings, folder = job.settings, job.folder
    manifest = RunManifest.read(folder, job.run_id)
    verdict_path = folder / "validation.json"
    if not verdict_path.exists() or not json.loads(verdict_path.read_text())["success"]:
        raise PipelineError(f"run {job.run_id} has not passed validation: refusing to publish")
    item_lists = folder / "item_lists.parquet"
    client = sync_client(settings)
    result = publish_version(
        client,
        version=manifest.version,
        user_lists=open_lists(folder / "user_lists.parquet"),
        segment_lists=pd.read_parquet(folder / "segment_lists.parquet"),
        manifest={
            "run_id": job.run_id,
            "generated_at": manifest.interval_end,
            "as_of": manifest.as_of,
            "model": manifest.model.model_dump(exclude={"path"}),
        },
        keep_versions=settings.keep_versions,
        kind="delta" if manifest.mode == "incremental" else "full",
        item_lists=pd.read_parquet(item_lists) if item_lists.exists() else None,
        catalog=_catalog(folder / "catalog.parquet"),
        erasure_salt=erasures(client, settings).salt or None,
        on_step=lambda name: job.say(f"publish: {name}"),
    )
    job.history.update(
        job.run_id,
        status="published" if result.switched else "already_live",
        published_version=result.version,
        publish_kind=result.kind,
        digest=result.digest,
    )
    # A policy that may evict the live lists, or a node nearly full, is said where the operator reads
    # about the run (and on /ops), not found later as lists that went missing or events refused.
    for warning in memory_warnings(read_memory(client)):
        job.say(f"WARNING Redis memory: {warning}")
    if not result.switched:
        same = "identical to" if result.identical else "DIFFERENT from"
        job.say(
            f"version {result.version} is already live (this interval was published before); recomputed "
            f"lists are {same} it"
        )
    return result


def _catalog(path: Path) -> pd.DataFrame | None:
    """The items as of the run, which the compute stage wrote; None for a run folder from before it was
    written (its version then has no catalog: the API still serves it, without titles in session
    reasons or `fields=`)."""
    return pd.read_parquet(path) if path.exists() else None

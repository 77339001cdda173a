"""Stage `train` (the nightly `carousel_retrain`): the compute stage in train mode. It fits ALS, the
co-visitation similarity and the LightGBM ranker on the data up to the interval end and stores them as
a new numbered model with its out-of-sample figures; it writes no lists. The next `carousel_refresh`
sees a model newer than the live version's and rescores every shopper with it."""

from __future__ import annotations

from dataclasses import replace

from jobs.stages import compute
from jobs.stages.run import StageResult, StageRun


def run(job: StageRun) -> StageResult:
    manifest = compute.compute_lists(replace(job, mode="train"))
    return StageResult(
        f"trained model {manifest.model.number}; out-of-sample figures: {manifest.model.evaluation}", manifest
    )

"""The run's manifest: what the compute stage hands to the validate and publish stages
(`<run folder>/manifest.json`), typed and checked when it is read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from jobs.stages.run import PipelineError


class ModelInfo(BaseModel):
    """The model the run scored with (or, in train mode, the one it trained)."""

    model_config = ConfigDict(extra="forbid")

    number: int
    als: dict[str, Any]
    ranker: str
    train_cutoff: str | None = None
    ranker_train_rows: int
    evaluation: dict[str, Any]
    # The model's folder; absent in train mode's manifest.
    path: str | None = None


class RunCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modelled_users: int
    items: int
    in_stock_items: int
    interactions: int
    # Lists written; absent in train mode.
    user_lists: int | None = None
    segment_lists: int | None = None


class ScoringFigures(BaseModel):
    """How long scoring the shoppers took on how many cores (`jobs.ranking.spark_lists`): from the
    shoppers' feature frames to the lists written, Spark's time included."""

    model_config = ConfigDict(extra="forbid")

    shoppers: int
    seconds: float
    cores: int

    @property
    def shoppers_per_core_s(self) -> float:
        return self.shoppers / max(self.seconds, 1e-9) / max(self.cores, 1)


class RunManifest(BaseModel):
    """One run's compute result: its mode, interval, the model and the counts."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    mode: str
    version: str
    interval_start: str
    interval_end: str
    as_of: str
    model: ModelInfo
    counts: RunCounts
    # Absent in train mode.
    scoring: ScoringFigures | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON data, without the fields a train run does not have."""
        return self.model_dump(mode="json", exclude_none=True)

    def write(self, folder: Path) -> RunManifest:
        (folder / "manifest.json").write_text(json.dumps(self.to_json(), indent=2))
        return self

    @classmethod
    def read(cls, folder: Path, run_id: str) -> RunManifest:
        """The manifest of a run that wrote lists; `PipelineError` when it has none or is damaged."""
        path = folder / "manifest.json"
        if not path.exists():
            raise PipelineError(
                f"run {run_id} has no computed lists ({path} missing): run the compute stage first"
            )
        try:
            manifest = cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise PipelineError(f"run {run_id}'s manifest {path} is damaged: {exc}") from None
        if manifest.mode == "train":
            raise PipelineError(f"run {run_id} trained model {manifest.model.number} and wrote no lists")
        return manifest

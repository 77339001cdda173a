"""Numbered model versions on disk: what the nightly retrain writes and the 15-minute refresh reads.

A model is a folder ``<models_dir>/<NNNN>/`` holding everything an incremental run needs to score
shoppers without training anything:

    model.json        number, data interval, training windows, parameters, evaluation figures
    als_items.npz     ALS item factors and the item ids of their rows (the refresh keeps them fixed and
                      folds active shoppers in)
    covis.npz         the item-item co-visitation matrix and its item ids
    item_rebuy.parquet  per-item re-buy rates and the overall rate the ranker's features use
    ranker.txt        the LightGBM booster (absent when the window had no purchases to learn from)
    explore.txt       the explore model's booster (present only when the guard serves a band with it or its
                      blend)

A model is written to a temporary folder and renamed into place (`carousel.models` reads the folders).
`model.json` records the SHA-256 of the booster files (`digests`), checked before LightGBM reads them:
LightGBM aborts the whole process on a model file it cannot parse, where a mismatch is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from carousel.models import MODEL_FILE, ModelCatalog, ModelStoreError
from jobs.ranking.candidate_features import FEATURES

# The LightGBM model files of a model folder.
BOOSTER_FILES = ("ranker.txt", "explore.txt")


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_digests(folder: Path, digests: dict[str, str]) -> None:
    """Refuse booster files that differ from what the model recorded (models from before the digests
    record none, and load as they are)."""
    for name, digest in digests.items():
        if not (folder / name).exists():
            raise ModelStoreError(f"{name} is missing from {folder}, though model.json lists it")
        if _digest(folder / name) != digest:
            raise ModelStoreError(
                f"{folder / name} differs from the file the model was saved with (its SHA-256 is not the "
                "one model.json records): it was edited or damaged; retrain, or roll back to another model"
            )


@dataclass
class StoredModel:
    """A loaded model version."""

    number: int
    meta: dict[str, Any]
    item_ids: np.ndarray
    item_factors: np.ndarray
    covis_item_ids: np.ndarray
    covis: sp.csr_matrix
    item_rebuy: pd.DataFrame
    overall_rebuy: float
    booster: lgb.Booster | None
    explore_booster: lgb.Booster | None = None


class ModelStore(ModelCatalog):
    """The model folders, written and loaded whole."""

    def save(
        self,
        *,
        meta: dict[str, Any],
        item_ids: np.ndarray,
        item_factors: np.ndarray,
        covis_item_ids: np.ndarray,
        covis: sp.csr_matrix,
        item_rebuy: pd.DataFrame,
        overall_rebuy: float,
        booster: lgb.Booster | None,
        explore_booster: lgb.Booster | None = None,
        keep: int = 5,
    ) -> int:
        """Write the next numbered model atomically and drop the oldest beyond `keep`; returns its number."""
        self.root.mkdir(parents=True, exist_ok=True)
        number = (self.latest() or 0) + 1
        staging = self.root / f".tmp-{number:04d}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        np.savez(
            staging / "als_items.npz",
            item_ids=np.asarray(item_ids, dtype=str),
            item_factors=np.asarray(item_factors, dtype=np.float32),
        )
        sp.save_npz(staging / "covis.npz", sp.csr_matrix(covis))
        np.save(staging / "covis_items.npy", np.asarray(covis_item_ids, dtype=str))
        item_rebuy.to_parquet(staging / "item_rebuy.parquet", index=False)
        if booster is not None:
            booster.save_model(str(staging / "ranker.txt"))
        if explore_booster is not None:
            explore_booster.save_model(str(staging / "explore.txt"))
        full_meta = {
            **meta,
            "number": number,
            "overall_rebuy": overall_rebuy,
            "ranker": booster is not None,
            "explore": explore_booster is not None,
            "digests": {name: _digest(staging / name) for name in BOOSTER_FILES if (staging / name).exists()},
        }
        (staging / MODEL_FILE).write_text(json.dumps(full_meta, indent=2, default=str))
        staging.rename(self.path(number))
        for old in self.numbers()[:-keep]:
            shutil.rmtree(self.path(old), ignore_errors=True)
        return number

    def load(self, number: int | None = None) -> StoredModel:
        number = self.latest() if number is None else number
        if number is None:
            raise ModelStoreError(
                f"no trained model under {self.root}: run the nightly retrain "
                "(`carousel retrain` or the carousel_retrain DAG) first"
            )
        folder = self.path(number)
        try:
            meta = self.describe(number)
            als = np.load(folder / "als_items.npz")
            _check_digests(folder, meta.get("digests", {}))
            ranker, explore = folder / "ranker.txt", folder / "explore.txt"
            stored = StoredModel(
                number=number,
                meta=meta,
                item_ids=als["item_ids"].astype(object),
                item_factors=als["item_factors"],
                covis_item_ids=np.load(folder / "covis_items.npy").astype(object),
                covis=sp.load_npz(folder / "covis.npz").tocsr(),
                item_rebuy=pd.read_parquet(folder / "item_rebuy.parquet"),
                overall_rebuy=float(meta["overall_rebuy"]),
                booster=lgb.Booster(model_file=str(ranker)) if ranker.exists() else None,
                explore_booster=lgb.Booster(model_file=str(explore)) if explore.exists() else None,
            )
        except (OSError, KeyError, ValueError) as exc:
            raise ModelStoreError(f"model {number} at {folder} cannot be read: {exc}") from exc
        for name, booster in (("ranker.txt", stored.booster), ("explore.txt", stored.explore_booster)):
            change = None if booster is None else feature_change(booster.feature_name())
            if change is not None:
                raise ModelStoreError(
                    f"{folder / name} was trained on other features than this version of carousel scores "
                    f"({change}): run the nightly retrain (`carousel retrain` or the carousel_retrain DAG)"
                )
        return stored

    def features_differ(self, number: int) -> str | None:
        """How the features model `number` was trained on differ from those this code computes (read
        from its boosters' headers, without loading their trees); None when they are the same, or the
        model has no booster."""
        for name in BOOSTER_FILES:
            path = self.path(number) / name
            if not path.exists():
                continue
            with path.open() as handle:
                names = next((line for line in handle if line.startswith("feature_names=")), None)
            change = feature_change(names.strip().removeprefix("feature_names=").split() if names else [])
            if change is not None:
                return f"{name}: {change}"
        return None


def feature_change(trained: list[str]) -> str | None:
    """What differs between a booster's features and `FEATURES`, or None. Scoring reads the feature
    matrix by position, so a booster trained on other features (a model from before an upgrade that
    changed them) would score every candidate on the wrong columns without an error."""
    current = list(FEATURES)
    if trained == current:
        return None
    dropped = [f for f in trained if f not in current]
    added = [f for f in current if f not in trained]
    return f"not computed now: {dropped}; new: {added}" if dropped or added else "the same, in another order"

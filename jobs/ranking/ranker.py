"""The LightGBM lambdarank ranker: training on labelled candidates, its native compiled form for
scoring, and the scores of candidates (with a transparent fallback when no ranker could be trained)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import lleaves
import numpy as np
import pandas as pd

from jobs.ranking.candidate_features import FEATURES
from jobs.ranking.threads import native_threads


@dataclass
class RankerParams:
    num_boost_round: int = 200
    learning_rate: float = 0.05
    # Small, well-populated trees: positives are few (a few hundred buying shoppers per label window on
    # a small store) and 31-leaf / 20-row trees overfit them. On the validation protocol (test month
    # dropped) 7 / 100 beat 31 / 20 on the synthetic store and on Online Retail (and 15 / 50 on synthetic).
    num_leaves: int = 7
    min_data_in_leaf: int = 100
    seed: int = 7
    max_train_users: int = 50_000


def train_ranker(labelled: pd.DataFrame, params: RankerParams) -> lgb.Booster | None:
    """LightGBM lambdarank on shoppers with at least one bought candidate; None when there are none."""
    positives = labelled.groupby("user_id")["label"].transform("max") > 0
    # Copies are made only when rows go or move: the pipeline's windows hold buying shoppers alone,
    # sorted by shopper, and on a large store each copy of them is gigabytes.
    train = labelled if positives.all() else labelled[positives]
    if train.empty:
        return None
    users = train["user_id"].drop_duplicates()
    if len(users) > params.max_train_users:
        keep = users.sample(params.max_train_users, random_state=params.seed)
        train = train[train["user_id"].isin(keep)]
    if not train["user_id"].is_monotonic_increasing:
        train = train.sort_values("user_id", kind="stable")
    groups = train.groupby("user_id", sort=False).size().to_numpy()
    dataset = lgb.Dataset(
        feature_matrix(train),
        label=train["label"].to_numpy(),
        group=groups,
        feature_name=list(FEATURES),
        free_raw_data=True,
    )
    booster_params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": 0.9,
        "lambdarank_truncation_level": 20,
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
    }
    return lgb.train(booster_params, dataset, num_boost_round=params.num_boost_round)


def explore_rows(labelled: pd.DataFrame) -> pd.DataFrame:
    """The rows an explore model learns from: candidates the shopper never bought, whose labels are the
    shopper's first purchases of an item."""
    return labelled[labelled["ui_purchases"].to_numpy() == 0]


def feature_matrix(frame: pd.DataFrame, order: Literal["C", "F"] = "F") -> np.ndarray:
    """`FEATURES` of `frame` as one float64 matrix, filled column by column: in column order LightGBM
    trains on it without a copy, in row order the compiled ranker scores it fastest. Selecting the
    columns as a frame and converting that would make two copies of the block's features."""
    matrix = np.empty((len(frame), len(FEATURES)), dtype=np.float64, order=order)
    for j, column in enumerate(FEATURES):
        matrix[:, j] = frame[column].to_numpy(dtype=np.float64)
    return matrix


class CompiledRanker:
    """A trained LightGBM ranker compiled to native code by lleaves (LLVM): the same trees, scored
    several times faster than `Booster.predict` (docs/performance.md). Scores agree with LightGBM's to
    floating-point rounding, and the compiled code gives the same scores on every run. Compiling takes
    a moment, once per model and process.

    Parameters
    ----------
    booster
        A trained ranker (`train_ranker`, or a stored model's).
    """

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        with tempfile.TemporaryDirectory(prefix="carousel-ranker-") as folder:
            path = Path(folder) / "ranker.txt"
            booster.save_model(str(path))
            self._compiled = lleaves.Model(model_file=str(path))
            self._compiled.compile()

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of the rows of a `feature_matrix` (row order is the fast one)."""
        return np.asarray(self._compiled.predict(matrix, n_jobs=native_threads()), dtype=np.float64)


# Candidates scored at once: scores do not depend on the rows beside them, so a block's candidates are
# scored a slice at a time and only a slice's matrix (about 60 MB) is held.
PREDICT_ROWS = 262_144


def score_candidates(featured: pd.DataFrame, ranker: CompiledRanker | None) -> np.ndarray:
    """Ranker scores, or a transparent fallback (history, then ALS, then popularity) without a ranker."""
    if ranker is not None:
        scores = np.empty(len(featured), dtype=np.float64)
        for start in range(0, len(featured), PREDICT_ROWS):
            rows = featured.iloc[start : start + PREDICT_ROWS]
            scores[start : start + len(rows)] = ranker.predict(feature_matrix(rows, order="C"))
        return scores
    fallback = (
        3.0 * np.log1p(featured["ui_purchases"].to_numpy())
        + np.nan_to_num(featured["als_score"].to_numpy(), nan=0.0)
        + 1.0 / featured["pop_rank"].fillna(1e6).to_numpy()
    )
    return np.asarray(fallback, dtype="float64")

"""A trained model in memory: its parameters and its parts (ALS item factors, item-item similarity, item
re-buy rates, the ranker), fitted on a feature set or loaded from a numbered model folder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from configs.settings import Settings
from jobs.features.frames import FeatureSet
from jobs.features.signals import CoocParams
from jobs.ranking.als import AlsParams, fit_als
from jobs.ranking.candidate_features import overall_rebuy_rate, rebuy_rates
from jobs.ranking.covisitation import basket_similarity
from jobs.ranking.guard import ScorerGuard
from jobs.ranking.ranker import CompiledRanker, RankerParams
from jobs.ranking.store import ModelStore, StoredModel


@dataclass(frozen=True)
class ModelParams:
    """Everything that shapes the model, from settings (production) or the evaluation's tuning."""

    als: AlsParams
    ranker: RankerParams
    label_days: int
    candidates_per_user: int
    new_item_days: int = 14
    train_windows: int = 2
    cooc: CoocParams = field(default_factory=CoocParams)
    # Shoppers training learns from at most (`jobs.ranking.training.fit_sample`).
    fit_max_shoppers: int = 150_000
    # Who fits the ALS item factors: implicit on the driver, or Spark MLlib on the executors
    # (`jobs.ranking.spark_als`).
    als_engine: str = "implicit"

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelParams:
        return cls(
            als=AlsParams(
                factors=settings.als_factors,
                iterations=settings.als_iterations,
                regularization=settings.als_regularization,
                alpha=settings.als_alpha,
            ),
            ranker=RankerParams(),
            label_days=settings.label_days,
            candidates_per_user=settings.candidates_per_user,
            new_item_days=settings.new_item_days,
            train_windows=settings.ranker_train_windows,
            fit_max_shoppers=settings.fit_max_shoppers,
            als_engine=settings.als_engine,
        )


@dataclass
class TrainedModel:
    """What scoring needs besides the features: ALS item factors, item-item similarity, item re-buy
    rates and the ranker. Fitted on a feature set (a training window, or everything up to `as_of`), kept
    in memory by the full run and stored as a numbered model (`jobs.ranking.store`) for the 15-minute
    incremental runs."""

    als_params: AlsParams
    item_ids: np.ndarray
    item_factors: np.ndarray
    similarity: tuple[sp.csr_matrix, pd.Index] | None
    item_rebuy: tuple[pd.DataFrame, float]
    booster: lgb.Booster | None = None
    train_rows: int = 0
    train_cutoff: datetime | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    # (shoppers learnt from, shoppers in the store) when training sampled them (`fit_sample`).
    fit_shoppers: tuple[int, int] | None = None
    # Which scorer serves each activity band (`jobs.ranking.guard`); None: the ranker serves everyone.
    guard: ScorerGuard | None = None
    # The explore model: a ranker that learnt from never-bought candidates alone, kept only when the guard
    # serves some band's never-bought places with it or with its blend with the ranker.
    explore_booster: lgb.Booster | None = None
    _compiled: CompiledRanker | None = field(default=None, repr=False, compare=False)
    _compiled_explore: CompiledRanker | None = field(default=None, repr=False, compare=False)

    @property
    def ranker(self) -> CompiledRanker | None:
        """The booster compiled for scoring, once per model (compiling takes about half a second)."""
        self._compiled = _compiled(self.booster, self._compiled)
        return self._compiled

    @property
    def explore(self) -> CompiledRanker | None:
        """The explore model compiled for scoring, once per model; None when the model has none."""
        self._compiled_explore = _compiled(self.explore_booster, self._compiled_explore)
        return self._compiled_explore

    def uncompiled(self) -> TrainedModel:
        """This model without its compiled rankers (native code that cannot be shipped to another
        process: each process compiles its own)."""
        return replace(self, _compiled=None, _compiled_explore=None)

    @classmethod
    def from_stored(cls, stored: StoredModel, params: ModelParams) -> TrainedModel:
        return cls(
            als_params=params.als,
            item_ids=stored.item_ids,
            item_factors=stored.item_factors,
            similarity=(stored.covis, pd.Index(stored.covis_item_ids))
            if len(stored.covis_item_ids)
            else None,
            item_rebuy=(stored.item_rebuy, stored.overall_rebuy),
            booster=stored.booster,
            train_rows=int(stored.meta.get("train_rows", 0)),
            train_cutoff=datetime.fromisoformat(stored.meta["train_cutoff"]),
            windows=list(stored.meta.get("windows", [])),
            evaluation=dict(stored.meta.get("evaluation", {})),
            guard=ScorerGuard.from_json(stored.meta.get("guard")) if stored.booster is not None else None,
            explore_booster=stored.explore_booster,
        )


def _compiled(booster: lgb.Booster | None, compiled: CompiledRanker | None) -> CompiledRanker | None:
    """`compiled` if it is `booster`'s, else `booster` compiled (None without a booster)."""
    if booster is None:
        return None
    return compiled if compiled is not None and compiled.booster is booster else CompiledRanker(booster)


# The shopper-level frames `fit_parts` reads (and `save_model` counts).
FIT_FRAMES = frozenset({"interactions", "user_item", "users"})


def fit_parts(
    fs: FeatureSet, params: ModelParams, item_factors: tuple[np.ndarray, np.ndarray] | None = None
) -> TrainedModel:
    """ALS item factors, basket similarity and re-buy rates of one feature set (no ranker yet). With
    `item_factors` (item ids and their factors, fitted elsewhere: `jobs.ranking.spark_als`), ALS is not
    fitted here."""
    # The basket similarity (SciPy's sparse product and sorts, one core) is computed beside ALS (implicit's
    # solver on every core, and between its iterations one core).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="similarity") as beside:
        pending = (
            beside.submit(basket_similarity, fs.baskets, params.cooc.shrink, params.cooc.neighbours)
            if not fs.baskets.empty
            else None
        )
        item_ids, factors = item_factors if item_factors is not None else _implicit_factors(fs, params)
        _, item_rebuy = rebuy_rates(fs.user_item)
        similarity = pending.result() if pending is not None else None
    return TrainedModel(
        als_params=params.als,
        item_ids=item_ids,
        item_factors=factors,
        similarity=similarity,
        item_rebuy=(item_rebuy, overall_rebuy_rate(fs.user_item)),
    )


def _implicit_factors(fs: FeatureSet, params: ModelParams) -> tuple[np.ndarray, np.ndarray]:
    als = fit_als(fs.interactions, params.als)
    return als.item_ids, als.item_factors


def save_model(
    store: ModelStore,
    trained: TrainedModel,
    *,
    run_id: str,
    interval_end: datetime,
    as_of: datetime,
    fs: FeatureSet,
) -> int:
    """Store `trained` as the next numbered model (with what it was trained on); returns its number."""
    similarity, ids = (
        trained.similarity if trained.similarity is not None else (sp.csr_matrix((0, 0)), pd.Index([]))
    )
    return store.save(
        meta={
            "run_id": run_id,
            "interval_end": interval_end.isoformat(),
            "as_of": as_of.isoformat(),
            "train_cutoff": trained.train_cutoff.isoformat() if trained.train_cutoff else as_of.isoformat(),
            "windows": trained.windows,
            "train_rows": trained.train_rows,
            "als": trained.als_params.__dict__,
            "evaluation": trained.evaluation,
            "guard": trained.guard.to_json() if trained.guard is not None else None,
            "shoppers": int(len(fs.users)) if trained.fit_shoppers is None else trained.fit_shoppers[1],
            "fit_shoppers": int(len(fs.users)) if trained.fit_shoppers is None else trained.fit_shoppers[0],
            "items": int(len(fs.items)),
        },
        item_ids=trained.item_ids,
        item_factors=trained.item_factors,
        covis_item_ids=np.asarray(ids, dtype=object),
        covis=similarity,
        item_rebuy=trained.item_rebuy[0],
        overall_rebuy=trained.item_rebuy[1],
        booster=trained.booster,
        explore_booster=trained.explore_booster,
    )

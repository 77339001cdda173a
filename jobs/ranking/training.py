"""Training: the ranker learns from label windows before `as_of` (features up to a cutoff, the next
`label_days` of purchases as labels), ALS and co-visitation are fitted on everything before `as_of`, and
the model's out-of-sample figures come from a ranker trained on the older windows and measured on the
newest. The Spark side (the windows' feature sets and labels) runs on the cluster; fitting runs here on
the driver, on the windows' buying shoppers (at most `RankerParams.max_train_users` of them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.features import transforms
from jobs.features.collect import collect_feature_set, shopper_pairs
from jobs.features.frames import FeatureSet
from jobs.ranking.candidate_features import FEATURES, label_candidates
from jobs.ranking.covisitation import CoVisitation
from jobs.ranking.guard import ScorerGuard, choose_scorers
from jobs.ranking.metrics import candidate_ndcg
from jobs.ranking.model import FIT_FRAMES, ModelParams, TrainedModel, fit_parts
from jobs.ranking.ranker import CompiledRanker, explore_rows, score_candidates, train_ranker
from jobs.ranking.scoring import SCORE_BLOCK_USERS, by_shopper, score_shoppers, shoppers_block
from jobs.ranking.spark_als import fit_item_factors

Progress = Callable[[str], None]


def fit_sample(events: DataFrame, max_shoppers: int) -> tuple[DataFrame | None, int, int]:
    """The shoppers training learns from: None (all of them) when `events` have at most `max_shoppers`,
    else a fixed sample of about that many, by a hash of the shopper's id (the same shoppers in every
    window and every rerun). Returns the sample, its size and the number of shoppers.

    Training runs on the driver, so this is what bounds its memory: ALS, the item re-buy rates and the
    ranker's windows hold the sampled shoppers' rows, whatever the store's size (item statistics still
    count every event, and scoring covers every shopper on the executors)."""
    shoppers = events.select("user_id").distinct()
    total = shoppers.count()
    if total <= max_shoppers:
        return None, total, total
    per_million = int(max_shoppers / total * 1_000_000)
    bucket = F.pmod(F.xxhash64("user_id"), F.lit(1_000_000))
    sample = shoppers.where(bucket < per_million).cache()
    return sample, sample.count(), total


def engine_item_factors(
    events: DataFrame, as_of: datetime, params: ModelParams
) -> tuple[np.ndarray, np.ndarray] | None:
    """With `als_engine` "spark", the ALS item factors of every shopper's `events` before `as_of`, fitted by
    Spark MLlib on the executors; None for implicit, which `fit_parts` fits on the driver's sample."""
    if params.als_engine != "spark":
        return None
    interactions = transforms.als_interactions(shopper_pairs(events, as_of, params.cooc))
    return fit_item_factors(interactions, params.als)


def training_window(
    events: DataFrame,
    items: DataFrame,
    cutoff: datetime,
    label_end: datetime,
    params: ModelParams,
    shoppers: DataFrame | None = None,
) -> tuple[pd.DataFrame, int] | None:
    """Candidates with features as of `cutoff`, labelled by the purchases in [cutoff, label_end), of
    the shoppers with at least one bought candidate, and how many shoppers bought in the window.

    Only those shoppers teach the ranker or measure it (`train_ranker` and `window_evaluation` drop
    the others), so the others' candidates are dropped block by block as they are scored: memory
    follows the buying shoppers of one block, not every buyer's candidates at once. With `shoppers`
    (`fit_sample`), the window learns from them alone."""
    future = (
        events.where(
            (F.col("ts") >= F.lit(cutoff))
            & (F.col("ts") < F.lit(label_end))
            & (F.col("event_type") == "purchase")
        )
        .select("user_id", "item_id")
        .distinct()
        .toPandas()
    )
    fs = collect_feature_set(
        events.where(F.col("ts") < F.lit(cutoff)), items, cutoff, params.cooc, shoppers=shoppers
    )
    train_users = np.sort(fs.users["user_id"][fs.users["user_id"].isin(future["user_id"])].to_numpy())
    if not len(train_users) or fs.interactions.empty:
        return None
    parts = fit_parts(
        fs, params, engine_item_factors(events.where(F.col("ts") < F.lit(cutoff)), cutoff, params)
    )
    fs = by_shopper(fs)
    frames = []
    for start in range(0, len(train_users), SCORE_BLOCK_USERS):
        block = train_users[start : start + SCORE_BLOCK_USERS]
        featured, _, _ = score_shoppers(shoppers_block(fs, block), parts, block, params)
        labelled = label_candidates(featured, future)
        # Only what the ranker and its evaluation read: the shopper (its group), features and label,
        # sorted by shopper as the ranker groups them (the blocks are in shopper order, so the window
        # comes out sorted and the ranker need not copy it to sort it).
        bought = labelled.groupby("user_id")["label"].transform("max") > 0
        kept = labelled.loc[bought, ["user_id", *FEATURES, "label"]]
        frames.append(kept.sort_values("user_id", kind="stable"))
    return pd.concat(frames, ignore_index=True), len(train_users)


def train_model(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    params: ModelParams,
    progress: Progress | None = None,
    *,
    scoring_frames: bool = True,
) -> tuple[TrainedModel, FeatureSet]:
    """Fit ALS, the co-visitation similarity and the LightGBM ranker as of `as_of`.

    `events` are modelling events (known, consenting shoppers) strictly before `as_of`. The ranker learns
    from `train_windows` windows: features computed up to `as_of - w * label_days` with the purchases of
    the following `label_days` as labels (more windows, more examples of sparse shoppers). Its figures
    (`evaluation`) come from a ranker trained on the older windows alone and measured on the newest one,
    so they are out of sample. Returns the model and the feature set as of `as_of`; without
    `scoring_frames` only the frames the fit reads (`FIT_FRAMES`) are collected, for a caller that
    scores shoppers elsewhere (the pipeline scores on Spark's executors).
    """
    frames: list[pd.DataFrame] = []
    windows: list[dict[str, Any]] = []
    sample, sampled, total = fit_sample(events, params.fit_max_shoppers)
    if progress and sample is not None:
        progress(f"training on a sample of {sampled:,} of {total:,} shoppers")
    for window in range(1, params.train_windows + 1):
        cutoff = as_of - timedelta(days=params.label_days * window)
        label_end = cutoff + timedelta(days=params.label_days)
        window_result = training_window(events, items, cutoff, label_end, params, sample)
        if window_result is None:
            continue
        labelled, shoppers = window_result
        del window_result
        # A shopper of one window is a ranker group of its own: the window's number above the shopper's
        # position. Integers, not "w1:<id>" strings (millions of new Python strings on a large store), and set
        # in place (`assign` would copy every column); the windows stay in order, so the ranker sorts none.
        positions = pd.factorize(labelled["user_id"], sort=True)[0].astype(np.int64)
        labelled["user_id"] = (window << 32) + positions
        frames.append(labelled)
        del labelled
        windows.append(
            {
                "features_until": cutoff.isoformat(),
                "labels_until": label_end.isoformat(),
                "shoppers": shoppers,
            }
        )
        if progress:
            progress(f"training window {window}: {shoppers} shoppers from {cutoff:%Y-%m-%d}")
    # The ranker is trained, and its training rows dropped, before the full feature set is collected:
    # the windows' candidates, a window's feature set and the full one are never held at once (on a large
    # store each is gigabytes).
    evaluation, guard = window_evaluation(frames, params)
    train = pd.concat(frames, ignore_index=True) if frames else None
    del frames
    booster = train_ranker(train, params.ranker) if train is not None else None
    # The explore model is trained for good only where the window showed it (or its blend with the
    # ranker) serving some shoppers better.
    explore = (
        train_ranker(explore_rows(train), params.ranker)
        if train is not None and booster is not None and guard is not None and guard.needs_explore
        else None
    )
    train_rows = 0 if train is None else len(train)
    del train
    # A caller that scores from this feature set (the evaluation) needs every shopper's frames.
    fs_full = collect_feature_set(
        events,
        items,
        as_of,
        params.cooc,
        shoppers=None if scoring_frames else sample,
        only=None if scoring_frames else FIT_FRAMES,
    )
    if sample is not None:
        sample.unpersist()
    trained = fit_parts(fs_full, params, engine_item_factors(events, as_of, params))
    trained.fit_shoppers = (sampled, total)
    trained.booster = booster
    trained.train_rows = train_rows
    trained.train_cutoff = as_of - timedelta(days=params.label_days)
    trained.windows = windows
    trained.evaluation = evaluation
    trained.guard = guard if booster is not None else None
    trained.explore_booster = explore
    if progress and guard is not None and guard.active:
        progress(f"guard: baselines serve some bands {guard.serve}")
    return trained, fs_full


def window_evaluation(
    frames: list[pd.DataFrame], params: ModelParams
) -> tuple[dict[str, Any], ScorerGuard | None]:
    """NDCG@10 on the newest label window of a ranker trained on the older windows only, against the
    candidates ordered by ALS score: out-of-sample figures kept with every model. With them, the
    scorer each activity band is served by (`jobs.ranking.guard.choose_scorers`): the ranker, unless a
    baseline beat it clearly on this window; None (the ranker for everyone) without such a window."""
    if len(frames) < 2:
        return {"note": "fewer than two label windows with purchases: no out-of-sample figures"}, None
    # With the default two windows the older one is used as it is (a concat would copy it whole).
    newest, older = frames[0], (frames[1] if len(frames) == 2 else pd.concat(frames[1:], ignore_index=True))
    booster = train_ranker(older, params.ranker)
    bought = newest.groupby("user_id")["label"].transform("max") > 0
    buyers = newest if bought.all() else newest[bought]  # the pipeline's windows hold buyers only
    if booster is None or buyers.empty:
        return {"note": "no buyers to measure on"}, None
    ranker_scores = score_candidates(buyers, CompiledRanker(booster))
    explore = train_ranker(explore_rows(older), params.ranker)
    explore_scores = score_candidates(buyers, CompiledRanker(explore)) if explore is not None else None
    als_scores = np.nan_to_num(buyers["als_score"].to_numpy(dtype="float64"), nan=-1e9)
    evaluation = {
        "window": "newest label window; ranker trained on the older windows",
        "shoppers": int(buyers["user_id"].nunique()),
        "ndcg@10": {
            "ranker": round(float(candidate_ndcg(buyers, ranker_scores).mean()), 4),
            "als": round(float(candidate_ndcg(buyers, als_scores).mean()), 4),
        },
    }
    return evaluation, choose_scorers(buyers, ranker_scores, explore_scores)


@dataclass
class RankedCandidates:
    """Candidates of every scored shopper with their features and ranker scores, as of one moment."""

    features: FeatureSet
    featured: pd.DataFrame
    scores: np.ndarray
    covis: CoVisitation
    trained: TrainedModel

    @property
    def booster(self) -> lgb.Booster | None:
        return self.trained.booster


def rank_candidates(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    params: ModelParams,
    *,
    users: np.ndarray | None = None,
    progress: Progress | None = None,
) -> RankedCandidates:
    """Train (`train_model`) and score every shopper's candidates at `as_of`: the full run and the
    offline evaluation. `users` limits scoring to those of them with events (the evaluation's test
    shoppers); default: every shopper with events."""
    trained, fs_full = train_model(events, items, as_of, params, progress)
    known = fs_full.users["user_id"]
    if users is not None:
        known = known[known.isin(pd.Index(np.asarray(users, dtype=object)))]
    score_users = known.to_numpy()
    if progress:
        progress(f"scoring {len(score_users)} shoppers")
    featured, scores, covis = score_shoppers(fs_full, trained, score_users, params)
    return RankedCandidates(fs_full, featured, scores, covis, trained)

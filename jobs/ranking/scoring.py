"""Scoring shoppers: candidates, their features and ranker scores, and the lists they make.

`score_block` is the unit of work: the model's parts and one block of shoppers' feature rows in, list
rows out, with no Spark, Redis or file access inside, so a block can be scored wherever its rows are.
Shoppers' ALS factors are always folded in against the model's fixed item factors, so a shopper scored in
a 15-minute run is scored exactly as in a full one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from jobs.features.frames import FeatureSet, sorted_frame
from jobs.ranking.als import fold_in
from jobs.ranking.candidate_features import add_features
from jobs.ranking.candidates import build_candidates
from jobs.ranking.covisitation import CoVisitation, co_visitation
from jobs.ranking.guard import guarded_scores
from jobs.ranking.lists import explain_goes_with, top_lists
from jobs.ranking.model import ModelParams, TrainedModel
from jobs.ranking.ranker import score_candidates


def score_shoppers(
    fs: FeatureSet, trained: TrainedModel, users: np.ndarray, params: ModelParams
) -> tuple[pd.DataFrame, np.ndarray, CoVisitation]:
    """Every candidate of `users` with its features and score: the one path shared by training windows,
    the full run and the incremental run. Shoppers' ALS factors are always folded in against the fixed
    item factors, so a shopper scored in a 15-minute run is scored exactly as in a full one.

    The score is the ranker's, except for shoppers of an activity band the model's guard serves with a
    baseline (`jobs.ranking.guard.guarded_scores`): their candidates, in the baseline's order, get the
    shopper's ranker scores, and a `placed_by` column names the scorer behind each candidate."""
    fs = replace(fs, item_rebuy=trained.item_rebuy)
    wanted = pd.Index(users)
    own = fs.interactions[fs.interactions["user_id"].isin(wanted)]
    als = fold_in(own, trained.item_ids, trained.item_factors, params.als)
    covis = co_visitation(fs, users, params=params.cooc, similarity=trained.similarity)
    cands = build_candidates(
        fs, als, users, covis, als_k=params.candidates_per_user, new_item_days=params.new_item_days
    )
    featured = add_features(cands, fs, als)
    scores, placed_by = guarded_scores(
        featured, score_candidates(featured, trained.ranker), trained.guard, explore_scores(featured, trained)
    )
    if placed_by is not None:
        featured["placed_by"] = placed_by
    return featured, scores, covis


def explore_scores(featured: pd.DataFrame, trained: TrainedModel) -> np.ndarray | None:
    """The explore model's scores of the never-bought candidates of the bands it (or its blend with the
    ranker) serves; NaN elsewhere: nothing reads them. None without one."""
    if trained.guard is None or trained.explore is None:
        return None
    new = np.flatnonzero((featured["ui_purchases"].to_numpy() == 0) & trained.guard.explore_rows(featured))
    scores = np.full(len(featured), np.nan)
    if len(new):
        scores[new] = score_candidates(featured.iloc[new], trained.explore)
    return scores


# Shoppers scored at once when lists are built: candidates with their features take about 0.4 KB
# each and a shopper has up to ~300, so a block of 10,000 shoppers holds about 1 GB whatever the store's
# size, where scoring everyone at once would grow with the shoppers.
SCORE_BLOCK_USERS = 10_000


def shopper_frames(fs: FeatureSet, change: Callable[[pd.DataFrame], pd.DataFrame]) -> FeatureSet:
    """`fs` with `change` applied to each of its shopper-level frames; item-level frames are shared."""
    return replace(
        fs,
        interactions=change(fs.interactions),
        user_item=change(fs.user_item),
        users=change(fs.users),
        affinity=change(fs.affinity),
        interest=change(fs.interest),
    )


def by_shopper(fs: FeatureSet) -> FeatureSet:
    """`fs` with every shopper-level frame sorted by user_id (`sorted_frame` already does; a frame that is
    not is sorted here), checked once so that `shoppers_block` can slice each block."""
    return shopper_frames(
        fs,
        lambda frame: frame if frame["user_id"].is_monotonic_increasing else sorted_frame(frame, ["user_id"]),
    )


def shoppers_block(fs: FeatureSet, users: np.ndarray) -> FeatureSet:
    """`fs` (sorted by `by_shopper`) with its shopper-level frames cut down to `users` (sorted ids):
    each is a slice found by binary search."""
    lo, hi = users[0], users[-1]

    def rows_of(frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["user_id"].to_numpy()
        start = int(np.searchsorted(ids, lo, side="left"))
        end = int(np.searchsorted(ids, hi, side="right"))
        return frame.iloc[start:end]

    return shopper_frames(fs, rows_of)


def score_block(
    fs: FeatureSet,
    trained: TrainedModel,
    users: np.ndarray,
    params: ModelParams,
    *,
    length: int,
    titles: pd.Series,
) -> pd.DataFrame:
    """The lists of one block of shoppers (`top_lists` rows, with the "goes with" reasons named by the
    item titles), not yet topped up: short lists are filled once every block's lowest score is known.

    Parameters
    ----------
    fs
        The item-level frames and the block's shopper-level frames (`shoppers_block`).
    trained
        The model's parts; its ranker compiled beforehand (`TrainedModel.ranker`).
    users
        The block's shoppers.
    params
        The model's parameters.
    length
        Items per list.
    titles
        Item titles by item id.
    """
    featured, scores, covis = score_shoppers(fs, trained, users, params)
    no_fill = pd.DataFrame({"item_id": pd.Series(dtype=object)})
    return explain_goes_with(top_lists(featured, scores, length, fill=no_fill), covis, titles)

"""implicit ALS: fitting the model, folding shoppers in against fixed item factors, top-k and pair scores."""

from __future__ import annotations

from dataclasses import dataclass

import implicit
import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.topk import topk

from jobs.ranking.threads import native_threads, single_threaded_blas


@dataclass
class AlsParams:
    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 20.0
    seed: int = 7


# Pairs scored at once by `AlsModel.score_pairs`.
PAIR_CHUNK = 65_536


@dataclass
class AlsModel:
    """A fitted implicit ALS model with the id maps of its matrix."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    matrix: sp.csr_matrix

    def recommend(self, k: int) -> pd.DataFrame:
        """Top-k items for every shopper in the matrix (already-bought items included: re-buys matter)."""
        n_users = len(self.user_ids)
        if n_users == 0 or len(self.item_ids) == 0:
            return pd.DataFrame(columns=["user_id", "item_id", "als_score", "als_rank"])
        k = min(k, len(self.item_ids))
        # implicit's top-k scores the items in blocks of shoppers on every core and keeps a heap per
        # shopper: the same items and order as a dense product with argpartition, several times faster.
        top, top_scores = topk(
            np.ascontiguousarray(self.item_factors, dtype=np.float32),
            np.ascontiguousarray(self.user_factors, dtype=np.float32),
            k,
            num_threads=native_threads(),
        )
        return pd.DataFrame(
            {
                "user_id": np.repeat(self.user_ids, k),
                "item_id": self.item_ids[top.ravel()],
                "als_score": top_scores.ravel().astype("float64"),
                "als_rank": np.tile(np.arange(1, k + 1, dtype="float64"), n_users),
            }
        )

    def score_pairs(self, user_ids: pd.Series, item_ids: pd.Series) -> np.ndarray:
        """Dot products for arbitrary pairs; NaN where the shopper or the item is not in the model."""
        u = pd.Index(self.user_ids).get_indexer(pd.Index(user_ids))
        i = pd.Index(self.item_ids).get_indexer(pd.Index(item_ids))
        ok = np.flatnonzero((u >= 0) & (i >= 0))
        out = np.full(len(u), np.nan)
        # In chunks whose gathered factors stay in the CPU's cache: gathering every pair's two factor
        # rows at once (a block of shoppers has over a million pairs) spills out of it.
        for start in range(0, len(ok), PAIR_CHUNK):
            at = ok[start : start + PAIR_CHUNK]
            out[at] = np.einsum("ij,ij->i", self.user_factors[u[at]], self.item_factors[i[at]])
        return out


def fold_in(
    interactions: pd.DataFrame, item_ids: np.ndarray, item_factors: np.ndarray, params: AlsParams
) -> AlsModel:
    """Factors for the shoppers in `interactions` with the item factors held fixed (one least-squares
    solve per shopper, as ALS's own user step): how the 15-minute refresh brings active and brand-new
    shoppers up to date without refitting the model. Items unknown to the model are ignored."""
    item_index = pd.Index(item_ids)
    cols = item_index.get_indexer(pd.Index(interactions["item_id"]))
    known = interactions[cols >= 0]
    users = pd.Categorical(known["user_id"])
    matrix = sp.csr_matrix(
        (
            known["weight"].to_numpy(dtype=np.float32),
            (users.codes.astype(np.int64), cols[cols >= 0].astype(np.int64)),
        ),
        shape=(len(users.categories), len(item_index)),
    )
    with single_threaded_blas():
        solver = implicit.cpu.als.AlternatingLeastSquares(
            factors=item_factors.shape[1],
            regularization=params.regularization,
            alpha=params.alpha,
            random_state=params.seed,
            num_threads=native_threads(),
        )
        solver.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        user_factors = (
            np.asarray(solver.recalculate_user(np.arange(matrix.shape[0]), matrix))
            if matrix.shape[0]
            else np.zeros((0, item_factors.shape[1]), dtype=np.float32)
        )
    return AlsModel(
        user_ids=np.asarray(users.categories, dtype=object),
        item_ids=np.asarray(item_ids, dtype=object),
        user_factors=user_factors.reshape(matrix.shape[0], item_factors.shape[1]),
        item_factors=np.asarray(item_factors),
        matrix=matrix,
    )


def fit_als(interactions: pd.DataFrame, params: AlsParams) -> AlsModel:
    """Fit implicit's ALS on the (user_id, item_id, weight) triples the Spark job produced."""
    users = pd.Categorical(interactions["user_id"])
    items = pd.Categorical(interactions["item_id"])
    matrix = sp.csr_matrix(
        (
            interactions["weight"].to_numpy(dtype=np.float32),
            (users.codes.astype(np.int64), items.codes.astype(np.int64)),
        ),
        shape=(len(users.categories), len(items.categories)),
    )
    with single_threaded_blas():
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
        )
        if matrix.nnz:
            model.fit(matrix, show_progress=False)
    if matrix.nnz:
        user_factors = np.asarray(model.user_factors)
        item_factors = np.asarray(model.item_factors)
    else:
        user_factors = np.zeros((0, params.factors), dtype=np.float32)
        item_factors = np.zeros((0, params.factors), dtype=np.float32)
    return AlsModel(
        user_ids=np.asarray(users.categories, dtype=object),
        item_ids=np.asarray(items.categories, dtype=object),
        user_factors=user_factors,
        item_factors=item_factors,
        matrix=matrix,
    )

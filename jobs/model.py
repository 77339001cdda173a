"""Candidates, ranking features, the ALS model and the LightGBM lambdarank ranker.

The inputs are a `FeatureSet`: pandas frames that the Spark job (`jobs/pipeline.py`) computed from the
lake as of one moment. From it this module builds candidates per shopper (ALS top-K, the shopper's own
history, popular items), joins their features, trains the ranker on an earlier window with the next
window's purchases as labels, and turns ranker scores into lists with a reason per item.
The same functions serve the production pipeline and the offline evaluation.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import implicit
import lightgbm as lgb
import lleaves
import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.topk import topk
from pandas.api.extensions import ExtensionDtype, take
from threadpoolctl import threadpool_limits

from serving import keyspace

FEATURES: tuple[str, ...] = (
    "als_score",
    "als_rank",
    "src_als",
    "src_history",
    "src_pop",
    "pop_rank",
    "ui_purchases",
    "ui_units",
    "ui_views",
    "ui_carts",
    "ui_days_since_purchase",
    "ui_days_since_touch",
    "pop_7d",
    "pop_30d",
    "pop_90d",
    "pop_trend",
    "item_age_days",
    "price_ratio",
    "cat_affinity",
    "cooc_score",
    "cooc_rank",
    "src_cooc",
    "u_rebuy_rate",
    "i_rebuy_rate",
    "src_new",
    "u_orders",
    "u_items",
    "u_days_since_active",
    "u_events",
)
POP_WINDOWS = (7, 30, 90)

# The standard text of each reason code (the stored lists name a text only where it differs).
REASONS = keyspace.REASON_TEXTS


@dataclass
class FeatureSet:
    """Everything the model needs, computed from events strictly before `as_of`."""

    as_of: pd.Timestamp
    interactions: pd.DataFrame  # user_id, item_id, weight
    user_item: pd.DataFrame  # user_id, item_id, ui_* columns
    items: pd.DataFrame  # item_id, category, item_price, in_stock, pop_*, pop_trend, item_age_days
    users: pd.DataFrame  # user_id, u_* columns
    affinity: pd.DataFrame  # user_id, category, cat_affinity
    baskets: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["session_id", "item_id", "weight"])
    )  # weighted session baskets (features.session_baskets)
    interest: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["user_id", "item_id", "interest"])
    )  # decayed shopper interest (features.shopper_interest)
    # Item re-buy rates and the overall rate, when they come from a stored model rather than from
    # `user_item` (an incremental run only holds the active shoppers' history).
    item_rebuy: tuple[pd.DataFrame, float] | None = None

    def in_stock_items(self) -> np.ndarray:
        return self.items.loc[self.items["in_stock"], "item_id"].to_numpy()

    def popular_items(self, n: int) -> pd.DataFrame:
        """The `n` most bought in-stock items (recent first, then all time) with their popularity rank."""
        ranked = self.items[self.items["in_stock"]].sort_values(
            ["pop_30d", "pop_90d", "pop_all", "item_id"], ascending=[False, False, False, True]
        )
        top = ranked.head(n)[["item_id"]].copy()
        top["pop_rank"] = np.arange(1, len(top) + 1, dtype="float64")
        return top


@dataclass
class CoocParams:
    """Co-visitation settings (the evaluation tunes them on its validation window)."""

    shrink: float = 3.0
    neighbours: int = 200
    basket_half_life: float | None = 30.0
    half_life_days: float | None = 14.0
    cart_weight: float = 0.5
    view_weight: float = 0.1


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
        # shopper: the same items and order as a dense product with argpartition, about 5x faster.
        top, top_scores = topk(
            np.ascontiguousarray(self.item_factors, dtype=np.float32),
            np.ascontiguousarray(self.user_factors, dtype=np.float32),
            k,
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
        # rows at once (a block of shoppers has over a million pairs) was 6x slower.
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
    with threadpool_limits(1, "blas"):
        solver = implicit.cpu.als.AlternatingLeastSquares(
            factors=item_factors.shape[1],
            regularization=params.regularization,
            alpha=params.alpha,
            random_state=params.seed,
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
    # implicit parallelises over users itself; a threaded BLAS underneath only oversubscribes the cores
    # (and implicit warns about it when the model is built).
    with threadpool_limits(1, "blas"):
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


@dataclass
class CoVisitation:
    """Item-to-item neighbours from shared sessions (bought or looked at together) and per-shopper scores.

    `scores` is the (shoppers x items) sparse matrix of the shopper's recency-weighted items times the
    pruned, cosine-normalised item-item matrix: high where an item goes with what the shopper has.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    scores: sp.csr_matrix
    shopper_items: sp.csr_matrix | None = None
    item_item: sp.csc_matrix | None = None

    def anchors(self, user_ids: pd.Series, item_ids: pd.Series) -> np.ndarray:
        """For each (shopper, item) pair, the shopper's own item that contributes most to its score
        (the "X" of "goes with X"); None where there is none."""
        out = np.full(len(user_ids), None, dtype=object)
        if self.shopper_items is None or self.item_item is None:
            return out
        u = pd.Index(self.user_ids).get_indexer(pd.Index(user_ids))
        i = pd.Index(self.item_ids).get_indexer(pd.Index(item_ids))
        rows = np.flatnonzero((u >= 0) & (i >= 0))
        if not len(rows):
            return out
        # All pairs at once (a loop of sparse row x column products took 10% of a 3M-event run): every
        # pair's own items j with their interest a_j, times the item-item score b_j of j and the pair's
        # item; the best nonzero a_j * b_j wins, the lowest j on a tie.
        own = (
            self.shopper_items
            if self.shopper_items.has_sorted_indices
            else self.shopper_items.sorted_indices()
        )
        starts = own.indptr[u[rows]]
        lengths = own.indptr[u[rows] + 1] - starts
        pair = np.repeat(np.arange(len(rows)), lengths)
        position = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
        own_items = own.indices[position]
        value = own.data[position] * np.asarray(self.item_item[own_items, i[rows][pair]]).ravel()
        keep = value != 0
        pair, own_items, value = pair[keep], own_items[keep], value[keep]
        if not len(pair):
            return out
        order = np.lexsort((own_items, -value, pair))
        first = order[np.r_[True, pair[order][1:] != pair[order][:-1]]]
        out[rows[pair[first]]] = self.item_ids[own_items[first]]
        return out

    def top(self, k: int) -> pd.DataFrame:
        """Each shopper's k best co-visited items (user_id, item_id, cooc_score, cooc_rank)."""
        users, items, values, ranks = _csr_top_k(self.scores, k)
        return pd.DataFrame(
            {
                "user_id": self.user_ids[users],
                "item_id": self.item_ids[items],
                "cooc_score": values,
                "cooc_rank": ranks.astype("float64"),
            }
        )

    def lookup(self, user_ids: pd.Series, item_ids: pd.Series) -> np.ndarray:
        """Scores for arbitrary pairs; 0 where the pair has none, NaN where either side is unknown."""
        u = pd.Index(self.user_ids).get_indexer(pd.Index(user_ids))
        i = pd.Index(self.item_ids).get_indexer(pd.Index(item_ids))
        out = np.full(len(u), np.nan)
        ok = (u >= 0) & (i >= 0)
        if ok.any():
            out[ok] = _csr_at(self.scores, u[ok], i[ok])
        return out


def _csr_at(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`matrix[rows, cols]` as a flat array (0 where nothing is stored), by binary search of every pair
    in the stored entries' sorted (row, column) keys: 1.7x faster than SciPy's fancy indexing on a
    block's shopper x item product (10M stored values, 1.5M pairs), which took 36 s of a 20M-event run."""
    ordered = matrix if matrix.has_sorted_indices else matrix.sorted_indices()
    width = np.int64(max(1, ordered.shape[1]))
    stored = np.repeat(np.arange(ordered.shape[0], dtype=np.int64), np.diff(ordered.indptr)) * width
    stored += ordered.indices
    wanted = rows.astype(np.int64) * width + cols
    out = np.zeros(len(wanted), dtype=np.float64)
    if not len(stored):
        return out
    at = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
    hit = stored[at] == wanted
    out[hit] = ordered.data[at[hit]]
    return out


def _csr_top_k(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row, column, value and 1-based rank of the k largest stored values of every row."""
    rows, cols, vals, ranks = [], [], [], []
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    for row in range(matrix.shape[0]):
        start, end = indptr[row], indptr[row + 1]
        if start == end:
            continue
        row_vals = data[start:end]
        take = min(k, end - start)
        top = np.argpartition(-row_vals, take - 1)[:take] if take < end - start else np.arange(end - start)
        top = top[np.argsort(-row_vals[top], kind="stable")]
        rows.append(np.full(take, row))
        cols.append(indices[start:end][top])
        vals.append(row_vals[top])
        ranks.append(np.arange(1, take + 1))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), np.concatenate(ranks)


def _prune_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the `keep` largest values per row: bounds the shopper x item product on big catalogs."""
    rows, cols, vals, _ = _csr_top_k(matrix, keep)
    return sp.csr_matrix((vals, (rows, cols)), shape=matrix.shape)


def basket_similarity(
    baskets: pd.DataFrame, shrink: float, neighbours: int
) -> tuple[sp.csr_matrix, pd.Index]:
    """Item-item cosine over weighted baskets with shrinkage, each row pruned to its best neighbours.

    ``S_ij = C_ij / (sqrt(C_ii C_jj) + shrink)`` with ``C = B^T B`` for the session x item matrix of
    basket weights: one sparse product, no loop over pairs; the shrinkage damps pairs seen in few
    baskets, and pruning bounds the cost of scoring shoppers.
    """
    sessions, _ = pd.factorize(baskets["session_id"])
    items, item_ids = pd.factorize(baskets["item_id"])
    matrix = sp.csr_matrix(
        (baskets["weight"].to_numpy(dtype=np.float64), (sessions, items)),
        shape=(int(sessions.max(initial=-1)) + 1, len(item_ids)),
    )
    together = (matrix.T @ matrix).tocsr()
    diag = together.diagonal()
    together.setdiag(0.0)
    together.eliminate_zeros()
    coo = together.tocoo()
    coo.data = coo.data / (np.sqrt(diag[coo.row] * diag[coo.col]) + shrink)
    return _prune_rows(coo.tocsr(), neighbours), pd.Index(item_ids)


def co_visitation(
    fs: FeatureSet,
    users: np.ndarray,
    *,
    params: CoocParams | None = None,
    similarity: tuple[sp.csr_matrix, pd.Index] | None = None,
) -> CoVisitation:
    """Co-visitation scores of `users`: their decayed interests (`fs.interest`) times the basket
    similarity of `fs.baskets` (or a stored `similarity`: item-item matrix and its item ids)."""
    params = params or CoocParams()
    interest = fs.interest[fs.interest["user_id"].isin(pd.Index(users))]
    user_index = pd.Index(pd.unique(interest["user_id"]))
    if similarity is None and not fs.baskets.empty:
        similarity = basket_similarity(fs.baskets, params.shrink, params.neighbours)
    if similarity is None or interest.empty or not len(similarity[1]):
        return CoVisitation(
            np.asarray(user_index, dtype=object),
            np.zeros(0, dtype=object),
            sp.csr_matrix((len(user_index), 0)),
        )
    item_item, item_index = similarity
    cols = item_index.get_indexer(pd.Index(interest["item_id"]))
    known = cols >= 0
    shopper_items = sp.csr_matrix(
        (
            interest["interest"].to_numpy(dtype=np.float64)[known],
            (user_index.get_indexer(pd.Index(interest["user_id"]))[known], cols[known]),
        ),
        shape=(len(user_index), len(item_index)),
    )
    return CoVisitation(
        np.asarray(user_index, dtype=object),
        np.asarray(item_index, dtype=object),
        (shopper_items @ item_item).tocsr(),
        shopper_items,
        item_item.tocsc(),
    )


def new_in_favourite_categories(
    fs: FeatureSet, users: pd.Index, max_age_days: float, per_user: int, top_categories: int = 3
) -> pd.DataFrame:
    """(user_id, item_id): new arrivals in each shopper's favourite categories, so items without a
    history can reach personal lists (the ranker sees `src_new` and `item_age_days` and decides).
    """
    fresh = fs.items[fs.items["in_stock"] & (fs.items["item_age_days"] <= max_age_days)]
    if fresh.empty or fs.affinity.empty:
        return pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object)})
    fresh = fresh.sort_values(["pop_7d", "item_age_days"], ascending=[False, True])
    fresh = fresh.groupby("category", sort=False).head(per_user)[["category", "item_id"]]
    favourite = fs.affinity[fs.affinity["user_id"].isin(users)].sort_values(
        ["user_id", "cat_affinity"], ascending=[True, False]
    )
    favourite = favourite.groupby("user_id", sort=False).head(top_categories)[["user_id", "category"]]
    pairs = favourite.merge(fresh, on="category")[["user_id", "item_id"]]
    return pairs.groupby("user_id", sort=False).head(per_user).reset_index(drop=True)


def build_candidates(
    fs: FeatureSet,
    als: AlsModel,
    users: np.ndarray,
    covis: CoVisitation,
    *,
    als_k: int,
    history_k: int = 50,
    popular_k: int = 50,
    cooc_k: int = 100,
    new_item_days: float = 14.0,
    new_k: int = 20,
) -> pd.DataFrame:
    """The union of ALS top-k, the shopper's own history, items co-visited with theirs and popular items,
    one row per (user, item).

    Each row keeps its sources (`src_*` flags) and ranks; only in-stock catalog items are kept.
    """
    wanted = pd.Index(users)
    als_top = als.recommend(als_k)
    als_top = als_top[als_top["user_id"].isin(wanted)]
    als_top = als_top.assign(src_als=1.0)

    history = fs.user_item[fs.user_item["user_id"].isin(wanted)].sort_values(
        ["user_id", "ui_purchases", "ui_days_since_touch"], ascending=[True, False, True]
    )
    history = history.groupby("user_id", sort=False).head(history_k)[["user_id", "item_id"]]
    history = history.assign(src_history=1.0)

    cooc = covis.top(cooc_k).assign(src_cooc=1.0)
    fresh = new_in_favourite_categories(fs, wanted, new_item_days, new_k).assign(src_new=1.0)

    popular = fs.popular_items(popular_k)
    pop_pairs = pd.DataFrame(
        {
            "user_id": np.repeat(wanted.to_numpy(), len(popular)),
            "item_id": np.tile(popular["item_id"].to_numpy(), len(wanted)),
            "src_pop": 1.0,
        }
    )
    sources = [als_top, history, cooc, fresh, pop_pairs]
    # The union and the per-source flags are joined on integer (user, item) keys: the same rows and
    # values as a drop_duplicates and five left merges on the string ids, at a fraction of the cost.
    user_codes, user_ids = pd.factorize(np.concatenate([f["user_id"].to_numpy(object) for f in sources]))
    item_codes, item_ids = pd.factorize(np.concatenate([f["item_id"].to_numpy(object) for f in sources]))
    keys = user_codes.astype(np.int64) * max(1, len(item_ids)) + item_codes
    # First occurrences of in-stock catalog items: the rows and order of drop_duplicates, then the filter.
    in_stock = pd.Index(item_ids).isin(fs.in_stock_items())[item_codes]
    first = ~pd.Series(keys).duplicated().to_numpy() & in_stock
    cand_keys = pd.Index(keys[first])
    columns: list[Columns] = [
        {
            "user_id": np.asarray(user_ids, dtype=object)[user_codes[first]],
            "item_id": np.asarray(item_ids, dtype=object)[item_codes[first]],
        }
    ]
    offsets = np.cumsum([0, *(len(f) for f in sources)])
    for source, start, end in zip(sources, offsets[:-1], offsets[1:], strict=True):
        at = pd.Index(keys[start:end]).get_indexer(cand_keys)
        columns.append(_columns_at(source, at, skip=("user_id", "item_id")))
    item_of_candidate = item_codes[first]
    popular_at = pd.Index(popular["item_id"]).get_indexer(item_ids)[item_of_candidate]
    columns.append(_columns_at(popular, popular_at, skip=("item_id",)))
    cands = _frame(*columns)
    for col in ("src_als", "src_history", "src_pop", "src_cooc", "src_new"):
        cands[col] = cands[col].fillna(0.0)
    missing = cands["cooc_score"].isna()
    if missing.any():
        cands.loc[missing, "cooc_score"] = covis.lookup(
            cands.loc[missing, "user_id"], cands.loc[missing, "item_id"]
        )
    return cands


# A frame's columns by name: NumPy arrays, or pandas' extension arrays.
Columns = dict[str, Any]


def _columns_at(right: pd.DataFrame, positions: np.ndarray | None, skip: tuple[str, ...] = ()) -> Columns:
    """The columns of `right` but `skip`, at `positions` (-1: missing; None: every row as it is), as a
    left merge on a key unique in `right` gives them, dtypes included (an integer column with a missing
    row becomes float, a boolean one object). Column by column into one frame (`_frame`): the frames of
    a reindex, then a concat, copied every column two or three times (the 5M-event compute job took
    277 s with them, 245 s without)."""
    columns: Columns = {}
    for name in right.columns:
        if name in skip:
            continue
        column = right[name]
        values = column.array if isinstance(column.dtype, ExtensionDtype) else column.to_numpy()
        columns[name] = values if positions is None else take(values, positions, allow_fill=True)
    return columns


def _frame(*parts: Columns) -> pd.DataFrame:
    """One frame of the parts' columns, in order; a column name in two parts is an error (a concat
    would have kept both)."""
    data: Columns = {}
    for part in parts:
        repeated = data.keys() & part.keys()
        if repeated:
            raise ValueError(f"columns joined twice: {sorted(repeated)}")
        data.update(part)
    return pd.DataFrame(data, copy=False)


def _positions(keys: pd.Index, wanted: np.ndarray | pd.Series) -> np.ndarray:
    """Position in `keys` of every value of `wanted`, -1 where absent; `keys` must be unique."""
    return np.asarray(keys.get_indexer(pd.Index(wanted)))


def _pair_positions(
    first: tuple[pd.Index, pd.Series, np.ndarray], second: tuple[pd.Index, pd.Series, np.ndarray]
) -> np.ndarray:
    """For every candidate, the row of a frame holding the same pair of values, -1 where none.

    Each side is (the candidates' distinct values, the frame's column, the candidates' codes into those
    values); the frame's pairs must be unique. Pairs become one integer key, so the frame is matched
    with one integer hash lookup per candidate."""
    (first_values, first_column, first_codes), (second_values, second_column, second_codes) = first, second
    frame_first = _positions(first_values, first_column)
    frame_second = _positions(second_values, second_column)
    known = np.flatnonzero((frame_first >= 0) & (frame_second >= 0))
    width = max(1, len(second_values))
    frame_keys = pd.Index(frame_first[known].astype(np.int64) * width + frame_second[known])
    at = frame_keys.get_indexer(pd.Index(first_codes.astype(np.int64) * width + second_codes))
    at[(first_codes < 0) | (second_codes < 0)] = -1
    return np.where(at >= 0, known[np.maximum(at, 0)], -1)


def rebuy_rates(
    user_item: pd.DataFrame,
    prior_weight: float = 5.0,
    *,
    stored: tuple[pd.DataFrame, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How often shoppers buy an item again: per shopper (share of their items bought in 2+ sessions)
    and per item (share of its buyers who came back), both shrunk toward the overall rate so a
    shopper or item with one purchase does not look certain. This is what lets the ranker learn when
    to show re-buys and when to show discovery.

    With `stored` (item rates and the overall rate of a stored model), the item side and the prior come
    from it and only the shoppers' own rates are computed: an incremental run's `user_item` holds the
    active shoppers alone, too few to say how often an item is bought again.
    """
    bought = user_item[user_item["ui_purchases"] >= 1]
    again = (bought["ui_purchases"] >= 2).astype("float64")
    overall = stored[1] if stored is not None else (float(again.mean()) if len(again) else 0.0)
    frames = []
    for key, name in (("user_id", "u_rebuy_rate"), ("item_id", "i_rebuy_rate")):
        if stored is not None and key == "item_id":
            frames.append(stored[0][["item_id", "i_rebuy_rate"]])
            continue
        grouped = again.groupby(bought[key], observed=True).agg(["sum", "count"])
        rate = (grouped["sum"] + overall * prior_weight) / (grouped["count"] + prior_weight)
        frames.append(rate.rename(name).reset_index())
    return frames[0], frames[1]


def overall_rebuy_rate(user_item: pd.DataFrame) -> float:
    """The share of bought (shopper, item) pairs bought in two or more sessions: the rates' prior."""
    bought = user_item.loc[user_item["ui_purchases"] >= 1, "ui_purchases"]
    return float((bought >= 2).mean()) if len(bought) else 0.0


def add_features(cands: pd.DataFrame, fs: FeatureSet, als: AlsModel) -> pd.DataFrame:
    """Join every ranking feature onto the candidates; missing history stays NaN (LightGBM handles it).

    The joins are left joins on keys unique in each feature frame, done on integer codes: each string
    id is hashed once per distinct value rather than once per candidate and frame."""
    user_codes, user_ids = pd.factorize(cands["user_id"].to_numpy(object))
    item_codes, item_ids = pd.factorize(cands["item_id"].to_numpy(object))
    user_index, item_index = pd.Index(user_ids), pd.Index(item_ids)

    def per_user(frame: pd.DataFrame) -> Columns:
        at = _positions(pd.Index(frame["user_id"]), user_ids)[user_codes]
        return _columns_at(frame, at, skip=("user_id",))

    def per_item(frame: pd.DataFrame) -> Columns:
        at = _positions(pd.Index(frame["item_id"]), item_ids)[item_codes]
        return _columns_at(frame, at, skip=("item_id",))

    parts = [
        _columns_at(cands, None),
        _columns_at(
            fs.user_item,
            _pair_positions(
                (user_index, fs.user_item["user_id"], user_codes),
                (item_index, fs.user_item["item_id"], item_codes),
            ),
            skip=("user_id", "item_id"),
        ),
    ]
    user_rebuy, item_rebuy = rebuy_rates(fs.user_item, stored=fs.item_rebuy)
    parts += [per_user(user_rebuy), per_item(item_rebuy)]
    item_cols = ["item_id", "category", "item_price", *[f"pop_{w}d" for w in POP_WINDOWS], "pop_all"]
    item_part = per_item(fs.items[[*item_cols, "pop_trend", "item_age_days"]])
    parts += [item_part, per_user(fs.users)]
    category_codes, categories = pd.factorize(np.asarray(item_part["category"], dtype=object))
    affinity_at = _pair_positions(
        (user_index, fs.affinity["user_id"], user_codes),
        (pd.Index(categories), fs.affinity["category"], category_codes),
    )
    parts.append(_columns_at(fs.affinity, affinity_at, skip=("user_id", "category")))
    out = _frame(*parts)
    missing_als = out["als_score"].isna()
    if missing_als.any():
        out.loc[missing_als, "als_score"] = als.score_pairs(
            out.loc[missing_als, "user_id"], out.loc[missing_als, "item_id"]
        )
    out["price_ratio"] = out["item_price"] / out["u_median_price"].where(out["u_median_price"] > 0)
    for col in ("ui_purchases", "ui_units", "ui_views", "ui_carts", "cat_affinity"):
        out[col] = out[col].fillna(0.0)
    for col in FEATURES:
        # Only what is not float64 yet: a column set again is a copy, and most are float64 already.
        if out[col].dtype != np.float64:
            out[col] = out[col].astype("float64")
    return out


def label_candidates(cands: pd.DataFrame, future_purchases: pd.DataFrame) -> pd.DataFrame:
    """Mark candidates bought in the label window (`future_purchases`: user_id, item_id)."""
    bought = future_purchases[["user_id", "item_id"]].drop_duplicates().assign(label=1)
    out = cands.merge(bought, on=["user_id", "item_id"], how="left")
    out["label"] = out["label"].fillna(0).astype("int32")
    return out


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
    # sorted by shopper, and at 20M events each copy of them is over a gigabyte.
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


def feature_matrix(frame: pd.DataFrame, order: Literal["C", "F"] = "F") -> np.ndarray:
    """`FEATURES` of `frame` as one float64 matrix, filled column by column: in column order LightGBM
    trains on it without a copy, in row order the compiled ranker scores it fastest. Selecting the
    columns as a frame and converting that made two copies (memray: 1.0 GB for a scoring block of
    10,000 shoppers at 5M events, where the matrix is 0.55 GB)."""
    matrix = np.empty((len(frame), len(FEATURES)), dtype=np.float64, order=order)
    for j, column in enumerate(FEATURES):
        matrix[:, j] = frame[column].to_numpy(dtype=np.float64)
    return matrix


class CompiledRanker:
    """A trained LightGBM ranker compiled to native code by lleaves (LLVM): the same trees, scored
    about 9x faster than `Booster.predict` on this 2-core machine (2M rows of 29 features, 200 trees:
    0.34 s vs 3.0 s). Scores agree with LightGBM's to floating-point rounding (about 1e-15), and the
    compiled code gives the same scores on every run. Compiling takes about half a second, once per
    model and process.

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
        return np.asarray(self._compiled.predict(matrix), dtype=np.float64)


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


def explain_goes_with(lists: pd.DataFrame, covis: CoVisitation, titles: pd.Series) -> pd.DataFrame:
    """Name the shopper's own item behind every `goes_with_yours` reason: "Goes with <title>"."""
    rows = lists["reason_code"] == "goes_with_yours"
    if not rows.any():
        return lists
    anchors = pd.Series(
        covis.anchors(lists.loc[rows, "user_id"], lists.loc[rows, "item_id"]), index=lists.index[rows]
    )
    named = anchors.map(titles).fillna(anchors)
    lists = lists.copy()
    has = named.notna()
    lists.loc[named.index[has], "reason_text"] = "Goes with " + named[has].astype(str).str.strip().str.title()
    return lists


def reason_codes(featured: pd.DataFrame) -> np.ndarray:
    """The signal that put each item in the list: own purchases, own views, similar shoppers, popularity."""
    conditions = [
        featured["ui_purchases"].to_numpy() > 0,
        (featured["ui_views"].to_numpy() + featured["ui_carts"].to_numpy()) > 0,
        featured["src_cooc"].to_numpy() > 0,
        featured["src_new"].to_numpy() > 0,
        featured["src_als"].to_numpy() > 0,
    ]
    choices = ["buy_again", "viewed", "goes_with_yours", "new_for_you", "similar_shoppers"]
    return np.select(conditions, choices, default="popular")


def top_lists(featured: pd.DataFrame, scores: np.ndarray, n: int, fill: pd.DataFrame) -> pd.DataFrame:
    """Per shopper the n best items by score, refilled from `fill` (popular items) when short.

    Returns user_id, rank, item_id, score, reason_code, reason_text.
    """
    ranked = featured[["user_id", "item_id"]].assign(score=scores, reason_code=reason_codes(featured))
    ranked = ranked.iloc[_list_order(ranked)]
    ranked = ranked.groupby("user_id", sort=False).head(n).reset_index(drop=True)
    ranked["rank"] = ranked.groupby("user_id").cumcount() + 1
    ranked["reason_text"] = ranked["reason_code"].map(REASONS)
    return fill_short_lists(ranked[LIST_COLUMNS], n, fill)


LIST_COLUMNS = ["user_id", "rank", "item_id", "score", "reason_code", "reason_text"]


def _list_order(ranked: pd.DataFrame) -> np.ndarray:
    """Row order by shopper, best score first, then item id: the order of a stable `sort_values` on
    those keys, sorted on integer codes (ids factorized in sorted order) instead of strings."""
    user_codes, _ = pd.factorize(ranked["user_id"], sort=True)
    item_codes, _ = pd.factorize(ranked["item_id"], sort=True)
    return np.lexsort((item_codes, -ranked["score"].to_numpy(dtype=np.float64), user_codes))


def fill_short_lists(
    lists: pd.DataFrame, n: int, fill: pd.DataFrame, *, floor: float | None = None
) -> pd.DataFrame:
    """Lists (`LIST_COLUMNS`, as `top_lists` returns them) with every list shorter than n topped up from
    `fill` (item_id, best first) with items it does not hold, scored below `floor`: by default the lowest
    score of all `lists`.

    Separate from `top_lists` so that lists built shopper by shopper are filled exactly as if they had
    been built at once: blocks filled one by one, each with the lowest score of all blocks as its
    floor, come out as the whole filled at once.
    """
    counts = lists.groupby("user_id").size()
    short = counts[counts < n].index
    if not len(short) or fill.empty:
        return lists
    if floor is None:
        floor = lists["score"].min() if len(lists) else 0.0
    extra = pd.DataFrame(
        {
            "user_id": np.repeat(short.to_numpy(), len(fill)),
            "item_id": np.tile(fill["item_id"].to_numpy(), len(short)),
            "score": np.tile(floor - 1.0 - np.arange(len(fill), dtype="float64") * 1e-3, len(short)),
            "reason_code": "popular",
        }
    )
    extra = extra.merge(lists[["user_id", "item_id"]], how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
    extra["reason_text"] = extra["reason_code"].map(REASONS)
    ranked = pd.concat([lists.drop(columns="rank"), extra])
    ranked = ranked.iloc[_list_order(ranked)]
    ranked = ranked.groupby("user_id", sort=False).head(n).reset_index(drop=True)
    ranked["rank"] = ranked.groupby("user_id").cumcount() + 1
    return ranked[LIST_COLUMNS]


def similar_item_lists(
    similarity: tuple[sp.csr_matrix, pd.Index] | None, items: pd.DataFrame, n: int
) -> pd.DataFrame:
    """Per item, the `n` in-stock items most often bought or viewed in the same sessions (the basket
    cosine of `basket_similarity`): what `GET /v1/items/{id}/similar` serves and the source of the
    overlay's complements. Returns anchor_id, rank, item_id, score, reason_code, reason_text."""
    columns = ["anchor_id", "rank", "item_id", "score", "reason_code", "reason_text"]
    if similarity is None or not len(similarity[1]):
        return pd.DataFrame(columns=columns)
    matrix, index = similarity
    in_stock = pd.Index(items.loc[items["in_stock"], "item_id"])
    keep = np.asarray(index.isin(in_stock), dtype=np.float64)
    # Zero the columns of items that cannot be bought before taking each row's best.
    matrix = (sp.csr_matrix(matrix) @ sp.diags(keep)).tocsr()
    matrix.eliminate_zeros()
    rows, cols, values, ranks = _csr_top_k(matrix, n)
    code = "bought_together"
    frame = pd.DataFrame(
        {
            "anchor_id": np.asarray(index, dtype=object)[rows],
            "rank": ranks.astype("int64"),
            "item_id": np.asarray(index, dtype=object)[cols],
            "score": values.astype("float64"),
            "reason_code": code,
            "reason_text": REASONS[code],
        }
    )
    return frame.sort_values(["anchor_id", "rank"], kind="stable").reset_index(drop=True)[columns]


SEGMENT_REASONS = {
    "global": ("bestseller", "Bestseller right now"),
    "country": ("popular_in_country", "Popular in {value}"),
    "device": ("popular_on_device", "Popular with shoppers on {value}"),
    "referrer": ("popular_with_referrer", "Popular with visitors from {value}"),
    "category": ("popular_in_category", "Popular in {value}"),
}


def new_arrivals(items: pd.DataFrame, max_age_days: float) -> pd.DataFrame:
    """In-stock items first seen in the last `max_age_days`, best early sellers first, then newest:
    the pool an exploration slot draws from, so new products get exposure before they have history.
    """
    fresh = items[items["in_stock"] & (items["item_age_days"] <= max_age_days)].copy()
    fresh["department"] = fresh["category"].astype(str).str.split("/").str[0].str.lower()
    fresh = fresh.sort_values(["pop_7d", "item_age_days", "item_id"], ascending=[False, True, True])
    return fresh[["item_id", "department"]].reset_index(drop=True)


def segment_lists(
    popularity: pd.DataFrame, n: int, *, fresh: pd.DataFrame | None = None, explore_every: int = 5
) -> pd.DataFrame:
    """Top-n lists per segment from (segment, item_id, buyers).

    Thin segments are topped up from the global list, so every list has n items when the catalog allows,
    and every `explore_every`-th slot goes to a new arrival (`fresh`, from `new_arrivals`; for a
    category segment, one of that department) that the list does not already hold.
    """
    pop = popularity.sort_values(["segment", "buyers", "item_id"], ascending=[True, False, True])
    top = pop.groupby("segment", sort=False).head(n)
    global_top = top[top["segment"] == "global"]
    rows = [top]
    sizes = top.groupby("segment").size()
    for segment in sizes[sizes < n].index.difference(["global"]):
        have = set(top.loc[top["segment"] == segment, "item_id"])
        extra = global_top[~global_top["item_id"].isin(have)].assign(segment=segment, buyers=0)
        rows.append(extra)
    out = pd.concat(rows, ignore_index=True)
    # Segment buyers first, then global fill in global order (buyers 0 sorts after real counts).
    out["order"] = np.arange(len(out))
    out = out.sort_values(["segment", "buyers", "order"], ascending=[True, False, True], kind="stable")
    out = out.groupby("segment", sort=False).head(n).reset_index(drop=True)
    dimension = out["segment"].str.split(":", n=1).str[0]
    value = out["segment"].str.split(":", n=1).str[1].fillna("").str.title()
    out["reason_code"] = np.where(
        out["buyers"] == 0, "bestseller", dimension.map(lambda d: SEGMENT_REASONS[d][0])
    )
    templates = dimension.map(lambda d: SEGMENT_REASONS[d][1])
    out["reason_text"] = [t.format(value=v) for t, v in zip(templates, value, strict=True)]
    out.loc[out["buyers"] == 0, "reason_text"] = SEGMENT_REASONS["global"][1]
    out["slot_score"] = out["buyers"].astype("float64")
    if fresh is not None and not fresh.empty and explore_every > 0:
        out = _with_exploration(out, fresh, n, explore_every)
    out = out.reset_index(drop=True)
    out["rank"] = out.groupby("segment").cumcount() + 1
    # Scores fall with rank (the order the list is served in), scaled by the segment's best seller.
    out["score"] = (1.0 / out["rank"]).round(6)
    return out[["segment", "rank", "item_id", "score", "reason_code", "reason_text"]]


def _with_exploration(lists: pd.DataFrame, fresh: pd.DataFrame, n: int, every: int) -> pd.DataFrame:
    """Put one unseen new arrival at every `every`-th position of each list, keeping length n."""
    slots = n // every
    out = []
    for segment, group in lists.groupby("segment", sort=True):
        pool = fresh
        if str(segment).startswith("category:"):
            pool = fresh[fresh["department"] == str(segment).split(":", 1)[1]]
        picks = pool[~pool["item_id"].isin(group["item_id"])].head(slots)
        if picks.empty:
            out.append(group)
            continue
        regular = group.head(n - len(picks)).assign(pos=lambda g: np.arange(len(g), dtype="float64"))
        # The k-th pick sorts after k*(every-1) regular items and k-1 earlier picks: slot k*every.
        explore = picks.assign(
            segment=segment,
            buyers=0,
            reason_code="new_arrival",
            reason_text="New in: just arrived",
            pos=[k * (every - 1) - 0.5 for k in range(1, len(picks) + 1)],
        )
        merged = pd.concat(
            [regular, explore[regular.columns.intersection(explore.columns)]], ignore_index=True
        )
        out.append(merged.sort_values("pos", kind="stable").drop(columns="pos").head(n))
    return pd.concat(out, ignore_index=True)

"""The four baselines of ``carousel evaluate`` as `jobs.evaluation.protocol.Recommender` callables, and their
tuning.

* `popularity`: items by distinct buyers in a recent window before the cutoff.
* `repurchase`: the shopper's own purchases by frequency (distinct purchase sessions), then recency.
* `cooccurrence`: items bought in the same session as the shopper's items (cosine with shrinkage over
  baskets), weighted toward the shopper's recent interactions.
* `als`: implicit ALS (`jobs.ranking.als.fit_als`) on purchases, and carts / views when the data has them.

Every list holds only *available* items (in the items table at the cutoff and in stock; without a
table, any item seen before the cutoff) and is filled up with the popular items, so every shopper gets
``k`` items when the catalog allows. With ``exclude_bought`` (task ``new_items``) nothing the shopper
purchased before the cutoff appears.

`tune_baselines` chooses the hyper-parameters on the validation window with small grids, separately
for each task (the grids are cheap: the expensive part, an ALS fit, is shared by both tasks).
Everything is vectorized: scores are computed for blocks of shoppers with sparse / dense matrix
products, and lists are cut with ``argpartition``; there is no Python loop over shoppers or item pairs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.topk import topk

from jobs.evaluation.protocol import (
    TASKS,
    EvalContext,
    Recommender,
    Split,
    build_targets,
    make_context,
    normalise_events,
    normalise_items,
    score_models,
)
from jobs.features.signals import (
    ALS_CART_WEIGHT,
    ALS_VIEW_WEIGHT,
    als_weight,
    basket_weight,
    interest_type_weights,
    interest_weight,
)
from jobs.ranking.als import AlsModel, AlsParams, fit_als
from jobs.ranking.covisitation import basket_cooccurrence, cosine_neighbours
from jobs.ranking.sparse import csr_top_k
from jobs.ranking.threads import native_threads, single_threaded_blas

__all__ = [
    "ALS_GRID",
    "BASELINES",
    "COOCCURRENCE_GRID",
    "DEFAULTS",
    "POPULARITY_WINDOWS",
    "als",
    "cooccurrence",
    "popularity",
    "repurchase",
    "tune_baselines",
]

#: Recent windows (days) tried for `popularity`; None would be all time.
POPULARITY_WINDOWS: tuple[int, ...] = (7, 14, 30, 90)

#: Parameters used when nothing was tuned (and the starting point of every grid).
DEFAULTS: dict[str, dict[str, Any]] = {
    "popularity": {"window_days": 30},
    "repurchase": {},
    "cooccurrence": {
        "half_life_days": 14.0,
        "shrink": 10.0,
        "basket_half_life": 30.0,
        "neighbours": 200,
        "cart_weight": 0.5,
        "view_weight": 0.1,
    },
    # Exactly the fields of jobs.ranking.als.AlsParams (the seed comes from the context).
    "als": {"factors": 64, "regularization": 0.1, "alpha": 2.0, "iterations": 15},
}

# ALS interaction weights of a cart and a view relative to a purchase session: shared with the ranker's
# ALS (jobs.features.als_interactions) so tuned ALS settings fit both. Not tuned: Online Retail has
# neither, and the grid is kept to eight fits.

#: Co-occurrence candidates: how fast the shopper's past fades (``half_life_days``), how fast old
#: baskets fade (``basket_half_life``, None = never) and how much rare pairs are damped (``shrink``).
COOCCURRENCE_GRID: tuple[dict[str, Any], ...] = (
    {"half_life_days": 14.0, "shrink": 10.0, "basket_half_life": None},
    {"half_life_days": 14.0, "shrink": 10.0, "basket_half_life": 90.0},
    {"half_life_days": 14.0, "shrink": 10.0, "basket_half_life": 30.0},
    {"half_life_days": 14.0, "shrink": 10.0, "basket_half_life": 14.0},
    {"half_life_days": 14.0, "shrink": 3.0, "basket_half_life": 30.0},
    {"half_life_days": 14.0, "shrink": 30.0, "basket_half_life": 14.0},
    {"half_life_days": 7.0, "shrink": 10.0, "basket_half_life": 30.0},
    {"half_life_days": 60.0, "shrink": 10.0, "basket_half_life": 30.0},
)

#: ALS candidates, eight fits at most (the whole Online Retail evaluation must stay well under 5 min).
#: Interaction weights are log-damped counts, so small confidence scales (alpha) are the useful range.
ALS_GRID: tuple[dict[str, Any], ...] = (
    {"factors": 64, "regularization": 0.1, "alpha": 2.0},
    {"factors": 64, "regularization": 1.0, "alpha": 2.0},
    {"factors": 64, "regularization": 0.1, "alpha": 5.0},
    {"factors": 64, "regularization": 0.1, "alpha": 20.0},
    {"factors": 128, "regularization": 0.1, "alpha": 2.0},
    {"factors": 128, "regularization": 1.0, "alpha": 2.0},
    {"factors": 128, "regularization": 0.1, "alpha": 5.0},
    {"factors": 32, "regularization": 0.1, "alpha": 2.0},
)

# Grid points scored at once while tuning (`tune_baselines`).
TUNING_THREADS = 2

# Dense score blocks are bounded to this many cells (8 bytes each) to keep memory flat on big catalogs.
_BLOCK_CELLS = 8_000_000


# --------------------------------------------------------------------------------------------------
# Shared pieces: what is available, what was bought, what is popular, filling lists up
# --------------------------------------------------------------------------------------------------


def _cached(ctx: EvalContext, key: str, build: Callable[[], Any]) -> Any:
    """`ctx.cache[key]`, built once: tuning scores grid points on two threads (`tune_baselines`) and
    several of them need the same matrices, so a second thread waits for the first one's build."""
    if key in ctx.cache:
        return ctx.cache[key]
    with _BUILDING:
        lock = ctx.cache.setdefault(_BUILD_LOCKS, {}).setdefault(key, threading.Lock())
    with lock:
        if key not in ctx.cache:
            ctx.cache[key] = build()
    return ctx.cache[key]


_BUILDING = threading.Lock()
_BUILD_LOCKS = "baselines:build-locks"


def _params(ctx: EvalContext, model: str, exclude_bought: bool) -> dict[str, Any]:
    return {**DEFAULTS[model], **ctx.params(model, exclude_bought)}


def _available(ctx: EvalContext) -> pd.Index:
    """Items a list may show: in the catalog at the cutoff and in stock; else every item seen."""

    def build() -> pd.Index:
        if ctx.items is None:
            return pd.Index(ctx.history["item_id"].unique())
        items = ctx.items
        if "in_stock" in items.columns:
            items = items.loc[items["in_stock"].fillna(True).astype(bool)]
        return pd.Index(items["item_id"].unique())

    index: pd.Index = _cached(ctx, "available", build)
    return index


def _bought(ctx: EvalContext) -> pd.DataFrame:
    """Distinct (user_id, item_id) purchased by known shoppers before the cutoff."""

    def build() -> pd.DataFrame:
        h = ctx.history
        mask = (h["event_type"] == "purchase") & h["user_id"].notna()
        return h.loc[mask, ["user_id", "item_id"]].drop_duplicates().reset_index(drop=True)

    frame: pd.DataFrame = _cached(ctx, "bought", build)
    return frame


class _ItemBuyers(NamedTuple):
    """Each (item, buyer) pair of the history's purchases once, with its latest purchase (a buyer is a
    known shopper, or ``"~" + session`` for an anonymous one), and every item's events of any type:
    built once per context, so that each of `_popular_order`'s windows only counts."""

    items: pd.Index
    pair_items: np.ndarray
    pair_last: pd.Series
    interest: pd.Series

    def since(self, start: pd.Timestamp | None) -> pd.Series:
        """Distinct buyers per item with a purchase at or after `start` (all time for None)."""
        pairs = self.pair_items if start is None else self.pair_items[(self.pair_last >= start).to_numpy()]
        return pd.Series(np.bincount(pairs, minlength=len(self.items)), index=self.items)


def _item_buyers(ctx: EvalContext) -> _ItemBuyers:
    def build() -> _ItemBuyers:
        h = ctx.history
        purchases = h.loc[h["event_type"] == "purchase", ["user_id", "session_id", "item_id", "ts"]]
        buyer = purchases["user_id"].where(purchases["user_id"].notna(), "~" + purchases["session_id"])
        item_codes, items = pd.factorize(purchases["item_id"])
        buyer_codes, buyers = pd.factorize(buyer)
        ok = (item_codes >= 0) & (buyer_codes >= 0)  # no item or no buyer: counted nowhere
        width = max(1, len(buyers))
        pair = item_codes[ok].astype(np.int64) * width + buyer_codes[ok]
        last = purchases["ts"][ok].groupby(pair).max()
        interest = h.groupby("item_id").size()
        return _ItemBuyers(pd.Index(items), last.index.to_numpy() // width, last, interest)

    result: _ItemBuyers = _cached(ctx, "popularity:buyers", build)
    return result


def _popular_order(ctx: EvalContext, window_days: int | None) -> np.ndarray:
    """Available items, most popular first.

    Popularity is the number of distinct buyers (a known shopper, or the session of an anonymous one)
    in the last ``window_days`` before the cutoff; ties go to all-time buyers, then to all-time
    interest (events of any type, so never-bought items still come in a sensible order), then item id.
    """

    def build() -> np.ndarray:
        buyers = _item_buyers(ctx)
        all_time = buyers.since(None)
        recent = (
            all_time if window_days is None else buyers.since(ctx.cutoff - pd.Timedelta(days=window_days))
        )
        available = _available(ctx)
        table = pd.DataFrame(
            {
                "item_id": available.to_numpy(dtype=object),
                "recent": recent.reindex(available, fill_value=0).to_numpy(),
                "all_time": all_time.reindex(available, fill_value=0).to_numpy(),
                "interest": buyers.interest.reindex(available, fill_value=0).to_numpy(),
            }
        )
        table = table.sort_values(
            ["recent", "all_time", "interest", "item_id"],
            ascending=[False, False, False, True],
            kind="stable",
        )
        return table["item_id"].to_numpy(dtype=object)

    order: np.ndarray = _cached(ctx, f"popularity:order:{window_days}", build)
    return order


def _fill_order(ctx: EvalContext, exclude_bought: bool) -> np.ndarray:
    """The popular items used to fill lists up (the tuned popularity window of the task)."""
    return _popular_order(ctx, _params(ctx, "popularity", exclude_bought)["window_days"])


def _anti_join(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    if left.empty or right.empty:
        return left
    merged = left.merge(right[["user_id", "item_id"]], on=["user_id", "item_id"], how="left", indicator=True)
    return merged.loc[merged["_merge"] == "left_only", list(left.columns)]


def _complete(
    lists: pd.DataFrame,
    users: np.ndarray,
    fill: np.ndarray,
    k: int,
    exclude: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Cut ``lists`` to ``k`` per shopper and fill short lists from ``fill`` (in its order).

    ``lists`` must already be in rank order per shopper. Fill items already in the list, or in
    ``exclude`` (user_id, item_id pairs), are skipped. Shoppers are handled all at once: each round
    crosses the still-short shoppers with the first ``depth`` fill items, and the few whose exclusions
    swallow that prefix go round again with a deeper one.
    """
    wanted = pd.Index(pd.unique(np.asarray(users, dtype=object)))
    head = lists.loc[lists["user_id"].isin(wanted), ["user_id", "item_id"]].drop_duplicates()
    head = head.groupby("user_id", sort=False).head(k)
    head = head.assign(order=head.groupby("user_id", sort=False).cumcount().to_numpy())
    need = k - head.groupby("user_id").size().reindex(wanted, fill_value=0)
    pending = need[need > 0]
    parts = [head]
    taken = head[["user_id", "item_id"]]
    if exclude is not None and not exclude.empty:
        taken = pd.concat(
            [taken, exclude.loc[exclude["user_id"].isin(pending.index), ["user_id", "item_id"]]]
        )
    depth = min(len(fill), 2 * k)
    while len(pending) and depth > 0:
        top = fill[:depth]
        cand = pd.DataFrame(
            {
                "user_id": np.repeat(pending.index.to_numpy(dtype=object), len(top)),
                "item_id": np.tile(top, len(pending)),
                "order": np.tile(np.arange(k, k + len(top)), len(pending)),
            }
        )
        cand = _anti_join(cand, taken.loc[taken["user_id"].isin(pending.index)])
        cand = cand.loc[
            cand.groupby("user_id", sort=False).cumcount().to_numpy() < cand["user_id"].map(pending)
        ]
        got = cand.groupby("user_id").size().reindex(pending.index, fill_value=0)
        done = (got >= pending) | (depth >= len(fill))
        parts.append(cand.loc[cand["user_id"].isin(done.index[done.to_numpy()])])
        pending = pending[~done.to_numpy()]
        depth = min(len(fill), depth * 4)
    out = pd.concat(parts, ignore_index=True).sort_values(["user_id", "order"], kind="stable")
    out["rank"] = out.groupby("user_id", sort=False).cumcount() + 1
    return out[["user_id", "item_id", "rank"]].reset_index(drop=True)


def _empty_lists() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object)})


def _blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    size = max(1, _BLOCK_CELLS // max(1, n_cols))
    for start in range(0, n_rows, size):
        yield slice(start, min(n_rows, start + size))


def _rank_rows(
    row_users: np.ndarray,
    item_ids: np.ndarray,
    score_block: Callable[[slice], sp.spmatrix],
    k: int,
    *,
    blocked: Sequence[sp.csr_matrix | None],
    allowed: np.ndarray,
) -> list[pd.DataFrame]:
    """Top-k items per row of a sparse score matrix computed block by block (rows are shoppers), once per
    entry of ``blocked``: each block's scores are computed once for all of them (a co-occurrence grid
    point's two tasks share its shopper x item product, the larger part of its time).

    ``allowed`` masks the columns that may be shown; each ``blocked`` (rows x columns, nonzero = banned,
    or None) holds the items each shopper must not see. Masked scores are no candidates. Zeros are no
    evidence (co-occurrence), so only a block's stored positive scores rank and the block is never made
    dense (on a 60,000-item grocery catalog, densifying and partitioning every row was a fifth of the
    evaluation's tuning).
    """
    if not len(item_ids) or k < 1:
        return [_empty_lists() for _ in blocked]
    users_out: list[list[np.ndarray]] = [[] for _ in blocked]
    items_out: list[list[np.ndarray]] = [[] for _ in blocked]
    for rows in _blocks(len(row_users), len(item_ids)):
        scores = sp.csr_matrix(score_block(rows))
        for users, items, banned in zip(users_out, items_out, blocked, strict=True):
            at, columns = _stored_top_k(scores, k, None if banned is None else banned[rows], allowed)
            users.append(row_users[rows][at])
            items.append(item_ids[columns])
    return [
        pd.DataFrame({"user_id": np.concatenate(users), "item_id": np.concatenate(items)})
        if users
        else _empty_lists()
        for users, items in zip(users_out, items_out, strict=True)
    ]


def _stored_top_k(
    scores: sp.csr_matrix, k: int, banned: sp.csr_matrix | None, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of each row's k best stored positive scores, best first, masked ones left out
    (ties in the product's stored order). The masks select stored entries by their positions: SciPy's
    products with a column diagonal and a banned-pair matrix cost as much as the block's own product."""
    n_rows, n_cols = scores.shape
    row_of = np.repeat(np.arange(n_rows), np.diff(scores.indptr))
    keep = (scores.data > 0) & allowed[scores.indices]
    if banned is not None and banned.nnz:
        # A block is at most _BLOCK_CELLS cells: its banned pairs fit a dense 0/1 mask.
        pairs = banned.tocoo()
        shown = np.ones((n_rows, n_cols), dtype=bool)
        shown[pairs.row[pairs.data > 0], pairs.col[pairs.data > 0]] = False
        keep &= shown[row_of, scores.indices]
    indptr = np.r_[0, np.cumsum(np.bincount(row_of[keep], minlength=n_rows))]
    kept = sp.csr_matrix((scores.data[keep], scores.indices[keep], indptr), shape=scores.shape)
    at, columns, _, _ = csr_top_k(kept, k)
    return at, columns


def _factor_top_k(
    row_users: np.ndarray,
    item_ids: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    *,
    blocked: sp.csr_matrix | None,
    allowed: np.ndarray,
) -> pd.DataFrame:
    """Top-k items per shopper by the dot product of their factors, masked as `_rank_rows` masks (every
    score ranks, negative ones too). implicit's top-k kernel scores blocks of shoppers on every core and
    keeps a heap per shopper: the dense products and partitions it replaces were a third of each ALS
    grid point on a 60,000-item catalog."""
    k = min(k, len(item_ids))
    if not len(row_users) or k < 1:
        return _empty_lists()
    top, values = topk(
        np.ascontiguousarray(item_factors, dtype=np.float32),
        np.ascontiguousarray(user_factors, dtype=np.float32),
        k,
        filter_query_items=None if blocked is None else sp.csr_matrix(blocked, dtype=np.float32),
        filter_items=np.flatnonzero(~allowed).astype(np.int32),
        num_threads=native_threads(),
    )
    keep = values > _FILTERED  # a masked item is scored float32's lowest; no product reaches it
    at = np.broadcast_to(np.arange(len(row_users))[:, None], top.shape)[keep]
    return pd.DataFrame({"user_id": row_users[at], "item_id": item_ids[top[keep]]})


_FILTERED = np.finfo(np.float32).min


def _pair_matrix(pairs: pd.DataFrame, rows: pd.Index, cols: pd.Index) -> sp.csr_matrix:
    """A 0/1 sparse matrix of the (user_id, item_id) pairs over the given row and column ids."""
    r = rows.get_indexer(pd.Index(pairs["user_id"]))
    c = cols.get_indexer(pd.Index(pairs["item_id"]))
    ok = (r >= 0) & (c >= 0)
    return sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (r[ok], c[ok])), shape=(len(rows), len(cols))
    )


# --------------------------------------------------------------------------------------------------
# The baselines
# --------------------------------------------------------------------------------------------------


def popularity(ctx: EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    """The most popular available items of the tuned recent window, the same list for everyone.

    Parameters
    ----------
    ctx:
        The evaluation context (``ctx.params("popularity", ...)["window_days"]``, default 30).
    users:
        Shoppers to recommend to.
    k:
        List length.
    exclude_bought:
        Leave out each shopper's past purchases (then lists differ per shopper).

    Returns
    -------
    pandas.DataFrame
        ``user_id, item_id, rank``.
    """
    exclude = _bought(ctx) if exclude_bought else None
    return _complete(_empty_lists(), users, _fill_order(ctx, exclude_bought), k, exclude)


def _own_purchases(ctx: EvalContext) -> pd.DataFrame:
    """Per known shopper and item: distinct purchase sessions and the last purchase, best first."""

    def build() -> pd.DataFrame:
        h = ctx.history
        p = h.loc[
            (h["event_type"] == "purchase") & h["user_id"].notna(), ["user_id", "item_id", "session_id", "ts"]
        ]
        g = p.groupby(["user_id", "item_id"], sort=False)
        stats = pd.DataFrame({"sessions": g["session_id"].nunique(), "last": g["ts"].max()}).reset_index()
        return stats.sort_values(
            ["user_id", "sessions", "last", "item_id"], ascending=[True, False, False, True], kind="stable"
        ).reset_index(drop=True)

    frame: pd.DataFrame = _cached(ctx, "repurchase:stats", build)
    return frame


def repurchase(ctx: EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    """ "Buy again": the shopper's purchases by frequency (distinct sessions), then recency, then popular.

    With ``exclude_bought`` nothing of the shopper's own history may be shown, so the list is the
    popular items minus the shopper's purchases.

    Parameters
    ----------
    ctx, users, k, exclude_bought:
        As in `jobs.evaluation.protocol.Recommender`.

    Returns
    -------
    pandas.DataFrame
        ``user_id, item_id, rank``.
    """
    fill = _fill_order(ctx, exclude_bought)
    if exclude_bought:
        return _complete(_empty_lists(), users, fill, k, _bought(ctx))
    stats = _own_purchases(ctx)
    mine = stats.loc[stats["user_id"].isin(pd.Index(users)) & stats["item_id"].isin(_available(ctx))]
    return _complete(mine, users, fill, k)


def _basket_counts(
    ctx: EvalContext, basket_half_life: float | None
) -> tuple[sp.csr_matrix, np.ndarray, pd.Index]:
    """Weighted item-item co-occurrence counts over baskets (zero diagonal), the diagonal, the item ids
    (`jobs.ranking.covisitation.basket_cooccurrence`, as the ranker's co-visitation).

    A basket is a session's purchased items (plus its carted items when the data has carts: putting two
    things in one cart says they go together, and purchases alone are sparse on most stores), weighed by
    `jobs.features.signals.basket_weight`. Unlike the pipeline's baskets (`session_baskets`), a
    single-item basket stays in (it counts toward its item's diagonal) and a basket's age is its
    earliest-added line's latest time: changing either changes this baseline's figures.
    """

    def build() -> tuple[sp.csr_matrix, np.ndarray, pd.Index]:
        h = ctx.history
        rows = h.loc[h["event_type"].isin(("purchase", "add_to_cart")), ["session_id", "item_id", "ts"]]
        rows = rows.drop_duplicates(["session_id", "item_id"])
        sessions, session_ids = pd.factorize(rows["session_id"])
        items, item_ids = pd.factorize(rows["item_id"])
        size = np.bincount(sessions).astype(np.float64)
        age = np.zeros_like(size)
        if basket_half_life:
            # A basket's age is that of its last line.
            line_age = (ctx.cutoff - rows["ts"]).dt.total_seconds().to_numpy() / 86_400.0
            age = pd.Series(line_age, dtype="float64").groupby(sessions).min().to_numpy()
        weight = basket_weight(size, age, basket_half_life, log2=np.log2)
        baskets = pd.DataFrame(
            {"session_id": rows["session_id"], "item_id": rows["item_id"], "weight": weight[sessions]}
        )
        return basket_cooccurrence(baskets)

    result: tuple[sp.csr_matrix, np.ndarray, pd.Index] = _cached(
        ctx, f"cooccurrence:counts:{basket_half_life}", build
    )
    return result


def _basket_similarity(
    ctx: EvalContext, shrink: float, neighbours: int, basket_half_life: float | None
) -> tuple[sp.csr_matrix, pd.Index]:
    """Item-item cosine similarity over the baskets of `_basket_counts` with shrinkage, pruned to each
    item's best neighbours (`jobs.ranking.covisitation.cosine_neighbours`, as the ranker's)."""

    def build() -> tuple[sp.csr_matrix, pd.Index]:
        return cosine_neighbours(*_basket_counts(ctx, basket_half_life), shrink, neighbours)

    result: tuple[sp.csr_matrix, pd.Index] = _cached(
        ctx, f"cooccurrence:sim:{shrink}:{neighbours}:{basket_half_life}", build
    )
    return result


class _Interactions(NamedTuple):
    """Each (shopper, session, item, event type) once, as codes into the three id lists, with the age in
    days of its latest time, in the order of the history's first occurrence."""

    users: pd.Index
    user_codes: np.ndarray
    items: pd.Index
    item_codes: np.ndarray
    types: pd.Index
    type_codes: np.ndarray
    age_days: np.ndarray


def _interactions(ctx: EvalContext) -> _Interactions:
    """What every interest matrix weighs, grouped and coded once per context: a grid point only maps
    codes to its rows, columns and type weights (grouping and hashing the ids per call was a third of
    each co-occurrence grid point on a grocery chain's year)."""

    def build() -> _Interactions:
        h = ctx.history
        g = (
            h.groupby(["user_id", "session_id", "item_id", "event_type"], sort=False)["ts"]
            .max()
            .reset_index()
        )
        user_codes, users = pd.factorize(g["user_id"])
        item_codes, items = pd.factorize(g["item_id"])
        type_codes, types = pd.factorize(g["event_type"])
        age = (ctx.cutoff - g["ts"]).dt.total_seconds().to_numpy() / 86_400.0
        return _Interactions(
            pd.Index(users), user_codes, pd.Index(items), item_codes, pd.Index(types), type_codes, age
        )

    result: _Interactions = _cached(ctx, "cooccurrence:interactions", build)
    return result


def _interest_matrix(
    ctx: EvalContext,
    users: pd.Index,
    items: pd.Index,
    *,
    half_life_days: float | None,
    cart_weight: float,
    view_weight: float,
) -> sp.csr_matrix:
    """Shopper x item interest: each (session, item, event type) interaction once, weighed by
    `jobs.features.signals.interest_weight` (its type's weight, decayed by its age), summed per pair:
    the ranker's co-visitation interest (`shopper_interest`)."""
    g = _interactions(ctx)
    type_weight = interest_type_weights(cart_weight, view_weight)
    by_type = np.array([type_weight.get(t, 0.0) for t in g.types], dtype=np.float64)[g.type_codes]
    r = users.get_indexer(g.users)[g.user_codes]
    c = items.get_indexer(g.items)[g.item_codes]
    ok = (r >= 0) & (c >= 0) & (by_type > 0)
    weight = interest_weight(by_type[ok], g.age_days[ok], half_life_days)
    return sp.csr_matrix((weight, (r[ok], c[ok])), shape=(len(users), len(items)))


def cooccurrence(ctx: EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    """Items bought together with the shopper's items, recent interests first, then popular.

    ``score(u, j) = sum_i interest(u, i) * S_ij`` with the (recency-weighted) basket similarity ``S``
    of `_basket_similarity` and the decayed interest of `_interest_matrix`. In task ``all`` the shopper's
    own items may come back (they are often bought together with the shopper's other items).

    Parameters
    ----------
    ctx:
        The evaluation context (``ctx.params("cooccurrence", ...)``: ``half_life_days``, ``shrink``,
        ``basket_half_life``, ``neighbours``, ``cart_weight``, ``view_weight``).
    users, k, exclude_bought:
        As in `jobs.evaluation.protocol.Recommender`.

    Returns
    -------
    pandas.DataFrame
        ``user_id, item_id, rank``.
    """
    p = _params(ctx, "cooccurrence", exclude_bought)
    wanted = pd.Index(pd.unique(np.asarray(users, dtype=object)))
    exclude = _bought(ctx) if exclude_bought else None
    # The other task's lists, made by the last call with the same parameters (see below).
    # Keyed by the parameters: grid points scored side by side (`tune_baselines`) keep theirs apart.
    shared_key = "cooccurrence:other-task:" + repr(sorted(p.items()))
    shared: _SharedLists | None = ctx.cache.pop(shared_key, None)
    if (
        shared is not None
        and shared.exclude_bought == exclude_bought
        and shared.params == p
        and wanted.isin(shared.users).all()
    ):
        return _complete(shared.lists, users, _fill_order(ctx, exclude_bought), k, exclude)
    sim, item_index = _basket_similarity(ctx, float(p["shrink"]), int(p["neighbours"]), p["basket_half_life"])
    interest = _interest_matrix(
        ctx,
        wanted,
        item_index,
        half_life_days=p["half_life_days"],
        cart_weight=float(p["cart_weight"]),
        view_weight=float(p["view_weight"]),
    )
    # When both tasks use the same parameters (every tuning grid point), one product serves both: the
    # other task's lists are kept for its call, which follows (`score_models` asks task after task).
    both = _params(ctx, "cooccurrence", not exclude_bought) == p
    bought = _pair_matrix(_bought(ctx), wanted, item_index) if exclude_bought or both else None
    mine, other = (bought, None) if exclude_bought else (None, bought)
    masks = [mine, other] if both else [mine]
    lists = _rank_rows(
        wanted.to_numpy(dtype=object),
        item_index.to_numpy(dtype=object),
        lambda rows: interest[rows] @ sim,
        k,
        blocked=masks,
        allowed=item_index.isin(_available(ctx)),
    )
    if both:
        ctx.cache[shared_key] = _SharedLists(p, not exclude_bought, wanted, lists[1])
    return _complete(lists[0], users, _fill_order(ctx, exclude_bought), k, exclude)


class _SharedLists(NamedTuple):
    """Co-occurrence lists made for the other task in the same pass (`cooccurrence`)."""

    params: dict[str, Any]
    exclude_bought: bool
    users: pd.Index
    lists: pd.DataFrame


def _als_params(p: dict[str, Any], seed: int) -> AlsParams:
    return AlsParams(
        factors=int(p["factors"]),
        iterations=int(p["iterations"]),
        regularization=float(p["regularization"]),
        alpha=float(p["alpha"]),
        seed=seed,
    )


def _als_interactions(ctx: EvalContext, cart_weight: float, view_weight: float) -> pd.DataFrame:
    """(user_id, item_id, weight): `jobs.features.signals.als_weight` of the pair's distinct purchase,
    cart and view sessions, as the ranker's ALS weighs them (`als_interactions`)."""

    def build() -> pd.DataFrame:
        h = ctx.history
        h = h.loc[h["user_id"].notna() & h["event_type"].isin(("purchase", "add_to_cart", "view"))]
        counts = (
            h.groupby(["user_id", "item_id", "event_type"], sort=False)["session_id"]
            .nunique()
            .unstack("event_type", fill_value=0)
        )
        weight = als_weight(
            counts.get("purchase", 0),
            counts.get("add_to_cart", 0),
            counts.get("view", 0),
            log1p=np.log1p,
            cart_weight=cart_weight,
            view_weight=view_weight,
        )
        out = pd.DataFrame({"weight": np.asarray(weight, dtype=np.float64)}, index=counts.index)
        return out.loc[out["weight"] > 0].reset_index()

    frame: pd.DataFrame = _cached(ctx, f"als:interactions:{cart_weight}:{view_weight}", build)
    return frame


def _als_model_key(p: dict[str, Any]) -> str:
    return "als:model:" + ",".join(f"{name}={p[name]}" for name in sorted(p))


def _als_model(ctx: EvalContext, p: dict[str, Any]) -> AlsModel:
    key = _als_model_key(p)
    interactions = _als_interactions(ctx, ALS_CART_WEIGHT, ALS_VIEW_WEIGHT)
    model: AlsModel = _cached(ctx, key, lambda: fit_als(interactions, _als_params(p, ctx.seed)))
    return model


def als(ctx: EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    """Implicit ALS (`jobs.ranking.als.fit_als`) on the history, then popular items for unknown shoppers.

    Already-bought items stay in task ``all`` (re-buys are real purchases) and are removed with
    ``exclude_bought``. One model is fitted per distinct parameter set and shared by both tasks.

    Parameters
    ----------
    ctx:
        The evaluation context (``ctx.params("als", ...)``: ``factors``, ``regularization``,
        ``alpha``, ``iterations``).
    users, k, exclude_bought:
        As in `jobs.evaluation.protocol.Recommender`.

    Returns
    -------
    pandas.DataFrame
        ``user_id, item_id, rank``.
    """
    p = _params(ctx, "als", exclude_bought)
    model = _als_model(ctx, p)
    wanted = pd.Index(pd.unique(np.asarray(users, dtype=object)))
    known = wanted[wanted.isin(pd.Index(model.user_ids))]
    item_index = pd.Index(model.item_ids)
    lists = _empty_lists()
    if len(known) and len(item_index):
        rows = pd.Index(model.user_ids).get_indexer(known)
        lists = _factor_top_k(
            known.to_numpy(dtype=object),
            item_index.to_numpy(dtype=object),
            model.user_factors[rows],
            model.item_factors,
            k,
            blocked=_pair_matrix(_bought(ctx), known, item_index) if exclude_bought else None,
            allowed=item_index.isin(_available(ctx)),
        )
    exclude = _bought(ctx) if exclude_bought else None
    return _complete(lists, users, _fill_order(ctx, exclude_bought), k, exclude)


#: The baselines under their report names.
BASELINES: dict[str, Recommender] = {
    "popularity": popularity,
    "repurchase": repurchase,
    "cooccurrence": cooccurrence,
    "als": als,
}


# --------------------------------------------------------------------------------------------------
# Tuning on the validation window
# --------------------------------------------------------------------------------------------------


def _has_events(events: pd.DataFrame, kind: str) -> bool:
    return bool((events["event_type"] == kind).any())


def tune_baselines(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    split: Split,
    *,
    k: int = 12,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Choose the baselines' hyper-parameters on the validation window, per task, by NDCG@10.

    Models see the events before ``split.val_start`` and are scored on the purchases of
    ``[split.val_start, split.test_start)``, exactly like the test protocol one window earlier. Events
    at or after ``split.test_start`` are ignored even if passed. Popularity is tuned first because the
    other baselines fill their lists with it. Grids: `POPULARITY_WINDOWS`, `COOCCURRENCE_GRID`
    (view / cart weights added only when the data has views or carts) and `ALS_GRID` (at most eight
    fits, each shared by both tasks), scored `TUNING_THREADS` points at a time with the scores of one
    at a time. Ties keep the earlier grid entry.

    Parameters
    ----------
    events:
        Canonical events (only those before ``split.test_start`` are read).
    items:
        Canonical items or None.
    split:
        The split of the evaluation.
    k:
        List length.
    seed:
        Seed of the models.
    progress:
        Called with one line per grid point.

    Returns
    -------
    dict
        The layout of `jobs.evaluation.protocol.EvalContext.tuned`: ``{model: params}`` chosen for task
        ``all`` (popularity, cooccurrence, als; ``params["als"]`` are `jobs.ranking.als.AlsParams` fields),
        ``"new_items": {model: params}`` chosen for that task, and ``"validation"``:
        ``{model: [{"params", "all", "new_items"}]}`` with the validation NDCG@10 of every grid point
        (`jobs.evaluation.protocol.run_evaluation` moves it to the report).
    """
    say = progress or (lambda _message: None)
    events = normalise_events(events.loc[events["ts"] < split.test_start])
    ctx = make_context(events, normalise_items(items), split.val_start, seed=seed)
    targets = build_targets(events, split.val_start, split.test_start)
    if not targets["stats"]["all"]["users"]:
        # Nothing to choose by: every grid point would score 0 and the first would win silently.
        say("validation window has no purchases of known shoppers; using the default parameters")
        defaults = {m: dict(DEFAULTS[m]) for m in ("popularity", "cooccurrence", "als")}
        return {**defaults, "new_items": {m: dict(p) for m, p in defaults.items()}, "validation": {}}
    chosen: dict[str, dict[str, Any]] = {task: {} for task in TASKS}
    validation: dict[str, list[dict[str, Any]]] = {}

    cooc_grid = [dict(g) for g in COOCCURRENCE_GRID]
    if _has_events(events, "view") or _has_events(events, "add_to_cart"):
        # Browsing data: also try a profile of purchases only, and one that trusts browsing more.
        cooc_grid += [
            {"cart_weight": 0.0, "view_weight": 0.0},
            {"cart_weight": 1.0, "view_weight": 0.3},
        ]
    grids: dict[str, list[dict[str, Any]]] = {
        "popularity": [{"window_days": w} for w in POPULARITY_WINDOWS],
        "cooccurrence": cooc_grid,
        "als": [dict(g) for g in ALS_GRID],
    }

    def run_point(model: str, point: dict[str, Any]) -> tuple[dict[str, Any], float]:
        params = {**DEFAULTS[model], **point}
        # A context of its own (its own parameters; the history and the cache are shared).
        point_ctx = replace(
            ctx, tuned={**chosen["all"], model: params, "new_items": {**chosen["new_items"], model: params}}
        )
        started = time.perf_counter()
        scored = score_models(point_ctx, targets, {model: BASELINES[model]}, k=k)
        # A fitted ALS model is only needed while its grid point is scored; keep memory flat.
        if model == "als":
            ctx.cache.pop(_als_model_key(params), None)
        row = {
            "params": params,
            **{task: round(float(scored[task][model][0]["ndcg@10"]), 5) for task in TASKS},
        }
        return row, time.perf_counter() - started

    for model, grid in grids.items():
        scores: list[dict[str, Any]] = []
        # Two grid points at a time: most of a point's work is single-threaded (pandas, SciPy's sparse
        # products, sorts), and those release the GIL for most of it. The rows come back in grid order.
        with (
            single_threaded_blas(),
            ThreadPoolExecutor(max_workers=TUNING_THREADS, thread_name_prefix="tuning") as pool,
        ):
            for point, (row, spent) in zip(
                grid, pool.map(lambda g, m=model: run_point(m, g), grid), strict=True
            ):
                scores.append(row)
                say(
                    f"validation {model} {point}: "
                    + ", ".join(f"{task} {row[task]:.4f}" for task in TASKS)
                    + f" ({spent:.1f}s)"
                )
        validation[model] = scores
        for task in TASKS:
            best = int(np.argmax([float(row[task]) for row in scores]))  # the first of equals
            chosen[task][model] = scores[best]["params"]
    return {**chosen["all"], "new_items": chosen["new_items"], "validation": validation}

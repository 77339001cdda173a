"""Co-visitation: items that go together (bought or carted in the same sessions) and how much each goes
with a shopper's own items.

The item-item similarity is a cosine over weighted session baskets (`jobs.features.signals`) with
shrinkage, each item keeping its best neighbours; a shopper's score for an item is their decayed interest
in their own items times that similarity. The evaluation's co-occurrence baseline uses the same
similarity (`basket_cooccurrence`, `cosine_neighbours`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobs.features.frames import FeatureSet
from jobs.features.signals import CoocParams
from jobs.ranking.sparse import csr_at, csr_top_k, prune_rows


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
        # All pairs at once (a loop of sparse row x column products per pair is far too slow): every
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
        users, items, values, ranks = csr_top_k(self.scores, k)
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
            out[ok] = csr_at(self.scores, u[ok], i[ok])
        return out


def basket_cooccurrence(baskets: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray, pd.Index]:
    """``C = B^T B`` for the session x item matrix ``B`` of basket weights (session_id, item_id, weight
    rows, as `jobs.features.signals.basket_weight` weighs them) with its diagonal set to zero, the
    diagonal, and the item ids of the rows and columns. One sparse product, no loop over pairs."""
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
    return together, diag, pd.Index(item_ids)


def cosine_neighbours(
    together: sp.csr_matrix, diag: np.ndarray, item_ids: pd.Index, shrink: float, neighbours: int
) -> tuple[sp.csr_matrix, pd.Index]:
    """Item-item cosine with shrinkage, ``S_ij = C_ij / (sqrt(C_ii C_jj) + shrink)``, each row pruned to
    its `neighbours` best: the shrinkage damps pairs seen in few baskets, and pruning bounds the cost of
    scoring shoppers."""
    coo = together.tocoo()
    coo.data = coo.data / (np.sqrt(diag[coo.row] * diag[coo.col]) + shrink)
    return prune_rows(coo.tocsr(), neighbours), item_ids


def basket_similarity(
    baskets: pd.DataFrame, shrink: float, neighbours: int
) -> tuple[sp.csr_matrix, pd.Index]:
    """The pruned item-item cosine of weighted baskets (`basket_cooccurrence`, `cosine_neighbours`)."""
    return cosine_neighbours(*basket_cooccurrence(baskets), shrink, neighbours)


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

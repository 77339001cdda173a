"""Sparse-matrix helpers of the ranking: a row's k largest values, and many (row, column) lookups at once."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def csr_at(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`matrix[rows, cols]` as a flat array (0 where nothing is stored), by binary search of every pair
    in the stored entries' sorted (row, column) keys: faster than SciPy's fancy indexing on a block's
    shopper x item product, which holds millions of stored values (docs/performance.md).

    Sorts `matrix`'s indices in place when they are not (the same matrix; SciPy's products come
    unsorted): a sorted copy would cost as much again. The pairs are searched in key order, each search
    starting where the previous one ended, which on tens of millions of keys is several times faster
    than searching them in the callers' order."""
    if not matrix.has_sorted_indices:
        matrix.sort_indices()
    width = np.int64(max(1, matrix.shape[1]))
    stored = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * width
    stored += matrix.indices
    wanted = rows.astype(np.int64) * width + cols
    out = np.zeros(len(wanted), dtype=np.float64)
    if not len(stored):
        return out
    order = np.argsort(wanted, kind="stable")
    at = np.empty(len(wanted), dtype=np.int64)
    at[order] = np.minimum(np.searchsorted(stored, wanted[order]), len(stored) - 1)
    hit = stored[at] == wanted
    out[hit] = matrix.data[at[hit]]
    return out


def csr_top_k(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row, column, value and 1-based rank of the k largest stored values of every row, row by row,
    each row's by value (ties: stored order for a row of at most k values, else `argpartition`'s).

    The rows of at most k values (most of an item x item matrix's: rare items co-occur with few) are
    ordered by one stable sort of all of them; only the longer rows are partitioned one at a time."""
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    lengths = np.diff(indptr).astype(np.int64)
    takes = np.minimum(lengths, k)
    # Where each row's top goes in the output, rows in order.
    offsets = np.r_[0, np.cumsum(takes)]
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), takes)
    cols = np.empty(offsets[-1], dtype=indices.dtype)
    vals = np.empty(offsets[-1], dtype=data.dtype)
    ranks = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], takes) + 1
    short = np.flatnonzero((lengths > 0) & (lengths <= k))
    # The short rows' entries, row after row: each row's start repeated over its entries, plus 0, 1, ...
    count = lengths[short]
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    at = np.repeat(indptr[short].astype(np.int64), count) + within
    # Sorted by row first, the short rows' entries fill their rows' places in row order.
    at = at[np.lexsort((-data[at], np.repeat(short, count)))]  # stable: equal values keep the stored order
    out = np.repeat(offsets[short], count) + within
    cols[out], vals[out] = indices[at], data[at]
    for row in np.flatnonzero(lengths > k).tolist():
        start, end = indptr[row], indptr[row + 1]
        row_vals = data[start:end]
        top = np.argpartition(-row_vals, k - 1)[:k]
        top = top[np.argsort(-row_vals[top], kind="stable")]
        cols[offsets[row] : offsets[row + 1]] = indices[start:end][top]
        vals[offsets[row] : offsets[row + 1]] = row_vals[top]
    return rows, cols, vals, ranks


def prune_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the `keep` largest values per row: bounds the shopper x item product on big catalogs."""
    rows, cols, vals, _ = csr_top_k(matrix, keep)
    return sp.csr_matrix((vals, (rows, cols)), shape=matrix.shape)

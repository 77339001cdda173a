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
    laid out side by side and sorted along the rows, a block at a time; only the longer rows are
    partitioned one at a time."""
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
    step = max(1, _SORT_CELLS // max(1, int(lengths[short].max(initial=1))))
    for first in range(0, len(short), step):
        _sort_short_rows(matrix, short[first : first + step], offsets, cols, vals)
    for row in np.flatnonzero(lengths > k).tolist():
        start, end = indptr[row], indptr[row + 1]
        row_vals = data[start:end]
        top = np.argpartition(-row_vals, k - 1)[:k]
        top = top[np.argsort(-row_vals[top], kind="stable")]
        cols[offsets[row] : offsets[row + 1]] = indices[start:end][top]
        vals[offsets[row] : offsets[row + 1]] = row_vals[top]
    return rows, cols, vals, ranks


# Cells of one block of short rows laid out side by side (8 bytes each).
_SORT_CELLS = 4_000_000


def _sort_short_rows(
    matrix: sp.csr_matrix, short: np.ndarray, offsets: np.ndarray, cols: np.ndarray, vals: np.ndarray
) -> None:
    """Write the entries of `short` (rows of at most k values) into their output places, each row's by
    value, equal values in stored order. The rows go into a dense block as wide as the longest, padded
    with NaN, which a sort puts after every value (a stored NaN too, since the pads come after it): one
    stable sort along the block's rows. A lexsort of (row, value) over all the short rows' entries made
    `csr_top_k` twice as slow on a grocery store's item x item matrix (docs/performance.md)."""
    count = np.diff(matrix.indptr)[short].astype(np.int64)
    # Each entry's row in the block and its place in that row: 0, 1, ... per row.
    line = np.repeat(np.arange(len(short)), count)
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    start = np.repeat(matrix.indptr[short].astype(np.int64), count)
    block = np.full((len(short), int(count.max(initial=0))), np.nan)
    block[line, within] = -matrix.data[start + within]
    order = np.argsort(block, axis=1, kind="stable")
    at = start + order[line, within]
    out = np.repeat(offsets[short], count) + within
    cols[out], vals[out] = matrix.indices[at], matrix.data[at]


def prune_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the `keep` largest values per row: bounds the shopper x item product on big catalogs."""
    rows, cols, vals, _ = csr_top_k(matrix, keep)
    return sp.csr_matrix((vals, (rows, cols)), shape=matrix.shape)

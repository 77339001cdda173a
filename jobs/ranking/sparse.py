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


def prune_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the `keep` largest values per row: bounds the shopper x item product on big catalogs."""
    rows, cols, vals, _ = csr_top_k(matrix, keep)
    return sp.csr_matrix((vals, (rows, cols)), shape=matrix.shape)

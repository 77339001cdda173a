"""`jobs.ranking.sparse.csr_top_k` against its rule written plainly, row by row."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jobs.ranking.sparse import csr_top_k


def _row_by_row(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, ...]:
    """Each row's k largest values by value: a row of at most k values keeps them all, ties in stored
    order; a longer row keeps `argpartition`'s k, ties in its order."""
    rows, cols, vals, ranks = [], [], [], []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if start == end:
            continue
        row_vals = matrix.data[start:end]
        take = min(k, end - start)
        top = np.argpartition(-row_vals, take - 1)[:take] if take < end - start else np.arange(end - start)
        top = top[np.argsort(-row_vals[top], kind="stable")]
        rows.append(np.full(take, row))
        cols.append(matrix.indices[start:end][top])
        vals.append(row_vals[top])
        ranks.append(np.arange(1, take + 1))
    if not rows:
        return (np.zeros(0, dtype=np.int64),) * 4
    return tuple(np.concatenate(part) for part in (rows, cols, vals, ranks))


def test_top_k_is_the_row_by_row_rule_on_random_matrices_with_ties() -> None:
    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(300):
        n_rows, n_cols = int(rng.integers(0, 40)), int(rng.integers(1, 60))
        matrix = sp.random(n_rows, n_cols, density=float(rng.random()), format="csr", random_state=trial)
        if trial % 2:
            matrix.data = np.round(matrix.data * 3) / 3 + 0.5  # few distinct values: many ties
        k = int(rng.integers(1, 20))
        expected, found = _row_by_row(matrix, k), csr_top_k(matrix, k)
        for want, got in zip(expected, found, strict=True):
            np.testing.assert_array_equal(got, want)
            assert len(want) == 0 or got.dtype == want.dtype
        lengths = np.diff(matrix.indptr)
        cases += bool(((lengths > 0) & (lengths <= k)).any() and (lengths > k).any())
    assert cases > 50  # short and long rows in the same matrix, often

"""Column-wise left joins of feature frames onto candidates, on integer keys.

A left merge on a key unique in the right frame, done as positions into that frame: each string id is
hashed once per distinct value rather than once per candidate and frame, and the columns go into one
frame without the copies a reindex and a concat would make.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionDtype, take

# A frame's columns by name: NumPy arrays, or pandas' extension arrays.
Columns = dict[str, Any]


def columns_at(right: pd.DataFrame, at: np.ndarray | None, skip: tuple[str, ...] = ()) -> Columns:
    """The columns of `right` but `skip`, at the rows `at` (-1: missing; None: every row as it is), as a
    left merge on a key unique in `right` gives them, dtypes included (an integer column with a missing
    row becomes float, a boolean one object). Column by column into one frame (`frame_of`): the frames of
    a reindex, then a concat, would copy every column two or three times."""
    columns: Columns = {}
    for name in right.columns:
        if name in skip:
            continue
        column = right[name]
        values = column.array if isinstance(column.dtype, ExtensionDtype) else column.to_numpy()
        columns[name] = values if at is None else take(values, at, allow_fill=True)
    return columns


def frame_of(*parts: Columns) -> pd.DataFrame:
    """One frame of the parts' columns, in order; a column name in two parts is an error (a concat
    would have kept both)."""
    data: Columns = {}
    for part in parts:
        repeated = data.keys() & part.keys()
        if repeated:
            raise ValueError(f"columns joined twice: {sorted(repeated)}")
        data.update(part)
    return pd.DataFrame(data, copy=False)


def positions(keys: pd.Index, wanted: np.ndarray | pd.Series) -> np.ndarray:
    """Position in `keys` of every value of `wanted`, -1 where absent; `keys` must be unique."""
    return np.asarray(keys.get_indexer(pd.Index(wanted)))


def pair_positions(
    first: tuple[pd.Index, pd.Series, np.ndarray], second: tuple[pd.Index, pd.Series, np.ndarray]
) -> np.ndarray:
    """For every candidate, the row of a frame holding the same pair of values, -1 where none.

    Each side is (the candidates' distinct values, the frame's column, the candidates' codes into those
    values); the frame's pairs must be unique. Pairs become one integer key, so the frame is matched
    with one integer hash lookup per candidate."""
    (first_values, first_column, first_codes), (second_values, second_column, second_codes) = first, second
    frame_first = positions(first_values, first_column)
    frame_second = positions(second_values, second_column)
    known = np.flatnonzero((frame_first >= 0) & (frame_second >= 0))
    width = max(1, len(second_values))
    frame_keys = pd.Index(frame_first[known].astype(np.int64) * width + frame_second[known])
    at = frame_keys.get_indexer(pd.Index(first_codes.astype(np.int64) * width + second_codes))
    at[(first_codes < 0) | (second_codes < 0)] = -1
    return np.where(at >= 0, known[np.maximum(at, 0)], -1)

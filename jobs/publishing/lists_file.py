"""A run's lists as Parquet sorted by owner (what the compute stage writes: a folder of parts, each
sorted, every part's owners before the next part's; or one file), read in blocks of whole lists so the
loader holds one block and never the run's tens of millions of rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from carousel.rules.erasure import Erasures
from jobs.publishing import PublishError

# Rows of a sorted lists file encoded and written at a time (whole lists: about 20k shoppers of 30).
BLOCK_ROWS = 600_000


@dataclass(frozen=True)
class SortedListsFile:
    """A run's lists in a Parquet file sorted by owner (as the compute stage writes them), read in blocks
    of whole lists, so the loader holds one block and never the run's tens of millions of rows."""

    path: Path
    key_column: str = "user_id"
    block_rows: int = BLOCK_ROWS
    # Erased shoppers, whose lists are left out as the blocks are read.
    erased: Erasures | None = None
    # The columns read (None: all of them).
    columns: tuple[str, ...] | None = None

    def parts(self) -> list[Path]:
        """The Parquet files in owner order: a folder's parts by name (Spark numbers them by partition),
        or the one file."""
        return sorted(self.path.glob("*.parquet")) if self.path.is_dir() else [self.path]

    def rows(self) -> int:
        return sum(int(pq.ParquetFile(part).metadata.num_rows) for part in self.parts())

    def owners(self) -> pd.Series:
        """Every owner once, in file order (one Arrow column per part, not the rows)."""
        parts = [pc.unique(pq.read_table(part, columns=[self.key_column]).column(0)) for part in self.parts()]
        owners = pd.concat([part.to_pandas() for part in parts], ignore_index=True) if parts else None
        return pd.Series(dtype=object) if owners is None else owners.drop_duplicates(ignore_index=True)

    def is_sorted(self) -> bool:
        """Whether the owners are in ascending order across the parts (read one Arrow column per part,
        not Python strings)."""
        last = None
        for part in self.parts():
            owners = pq.read_table(part, columns=[self.key_column]).column(0).combine_chunks()
            if not len(owners):
                continue
            if last is not None and pc.less(owners[0], last).as_py():
                return False
            if (
                len(owners) > 1
                and not pc.all(pc.less_equal(owners.slice(0, len(owners) - 1), owners.slice(1))).as_py()
            ):
                return False
            last = owners[len(owners) - 1]
        return True

    def _batches(self) -> Iterator[Any]:
        for part in self.parts():
            yield from pq.ParquetFile(part).iter_batches(
                batch_size=self.block_rows, columns=list(self.columns) if self.columns else None
            )

    def blocks(self) -> Iterator[pd.DataFrame]:
        """Frames of whole lists, in owner order; raises `PublishError` on rows out of owner order."""
        carry: pd.DataFrame | None = None
        last: Any = None
        for batch in self._batches():
            frame = batch.to_pandas()
            if carry is not None:
                frame = pd.concat([carry, frame], ignore_index=True)
            if frame.empty:
                continue
            if frame[self.key_column].isna().any():
                raise PublishError(f"{self.path} has rows without a {self.key_column}: nothing switched")
            owners = frame[self.key_column].to_numpy()
            if (last is not None and owners[0] <= last) or bool((owners[1:] < owners[:-1]).any()):
                raise PublishError(f"{self.path} is not sorted by {self.key_column}: nothing switched")
            # The last owner's list may go on in the next batch: it waits for it.
            tail = int(np.searchsorted(owners, owners[-1], side="left"))
            if tail > 0:
                last = owners[tail - 1]
                yield self._kept(frame.iloc[:tail])
            carry = frame.iloc[tail:]
        if carry is not None and len(carry):
            yield self._kept(carry)

    def _kept(self, block: pd.DataFrame) -> pd.DataFrame:
        return drop_erased(block, self.erased) if self.erased else block


Lists = pd.DataFrame | SortedListsFile


def open_lists(path: Path, columns: tuple[str, ...] | None = None) -> Lists:
    """A run's shoppers' lists, streamed block by block when they are sorted by shopper (every run
    since the loader streams); an older run's unsorted file is read whole."""
    lists = SortedListsFile(path, columns=columns)
    return lists if lists.is_sorted() else pd.read_parquet(path, columns=list(columns) if columns else None)


def blocks(lists: Lists) -> Iterator[pd.DataFrame]:
    return lists.blocks() if isinstance(lists, SortedListsFile) else iter([lists])


def drop_erased(frame: pd.DataFrame, erasures: Erasures) -> pd.DataFrame:
    """`frame` without the lists of erased shoppers."""
    if frame.empty or not erasures:
        return frame
    erased = erasures.erased(frame["user_id"].unique())
    return frame[~frame["user_id"].isin(erased)] if erased else frame

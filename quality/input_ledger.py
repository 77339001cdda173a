"""What the input gate already knows about the lake's event parts, so a run scans only the new ones.

Lake parts are append-only files that never change once written (``carousel.lake``). The gate's
metrics over all of a run's events (``quality.input_metrics.input_metrics``) are therefore the merge of
per-part summaries: additive counts, the newest timestamp, and the sets of row fingerprints, shoppers
and items (sorted unique 64-bit hashes, so duplicates and distinct counts span parts). A
:class:`LakeSummary` is such a merge; the gate keeps one for the parts it has scanned and merges the
new parts' summaries into it. A 15-minute run of a 20M-event lake then reads minutes of events, not
every event again, and reports the same metrics as a full scan (a test checks that they agree).

A summary is valid for a run only while every part it covers is unchanged (same size and modification
time) and all its rows are before the run's interval end; otherwise the gate starts from nothing and
scans every part. Only parts whose rows are all before the run's interval end are kept (a part drained
after the interval ended is scanned again by the next run, until it is complete).

Stored as one ``.npz`` file written atomically (temporary file, then rename), so a run that fails
halfway leaves the previous summary whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

# Counts that add up over parts (the row fingerprints, shoppers and items are sets; rows_in_last_day
# depends on the interval end and comes from `recent_ts`).
ADDITIVE_COUNTS: Final = (
    "rows",
    "null_session_id",
    "null_item_id",
    "null_event_type",
    "null_ts",
    "null_quantity",
    "null_price",
    "unknown_event_types",
    "future_rows",
    "negative_or_bad_price_rows",
    "bad_quantity_rows",
)
DAY_US: Final = 86_400 * 1_000_000
_KEYS: Final = ("fingerprints", "users", "items", "recent_ts")
_EMPTY: Final = np.empty(0, dtype=np.int64)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """`np.unique` of an int64 array by a sort and a comparison of neighbours: NumPy 2.4's `np.unique`
    is an order of magnitude slower on millions of fingerprints (docs/performance.md)."""
    ordered = np.sort(values)
    if not len(ordered):
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def _sorted_union(kept: np.ndarray, added: np.ndarray) -> np.ndarray:
    """Sorted unique values of both; `kept` is sorted unique already. Inserting the few new values
    into the long kept array is one copy, where a union would sort the whole array again."""
    added = sorted_unique(added)
    if not len(kept):
        return added
    at = np.searchsorted(kept, added)
    known = kept[np.minimum(at, len(kept) - 1)] == added
    return np.insert(kept, at[~known], added[~known])


@dataclass
class LakeSummary:
    """Mergeable input metrics of a set of lake parts.

    Attributes
    ----------
    parts
        Part file name -> ``[size in bytes, modification time in ns]`` when it was scanned.
    counts
        The :data:`ADDITIVE_COUNTS` over every row of those parts before the scanning run's end.
    max_ts
        Newest event time (microseconds since the epoch), None without rows.
    fingerprints, users, items
        Sorted unique int64 hashes: ``_row_fingerprint`` of each row, and of each non-null shopper
        and item id.
    recent_ts
        Sorted event times (microseconds) of the rows at most a day older than ``max_ts``: the rows
        any run after ``max_ts`` can count in its last day.
    """

    parts: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ADDITIVE_COUNTS, 0))
    max_ts: int | None = None
    fingerprints: np.ndarray = field(default_factory=lambda: _EMPTY)
    users: np.ndarray = field(default_factory=lambda: _EMPTY)
    items: np.ndarray = field(default_factory=lambda: _EMPTY)
    recent_ts: np.ndarray = field(default_factory=lambda: _EMPTY)

    def merge(self, other: LakeSummary) -> LakeSummary:
        """The summary of both sets of parts (which must not overlap)."""
        overlap = self.parts.keys() & other.parts.keys()
        if overlap:
            raise ValueError(f"parts summarised twice: {sorted(overlap)[:3]}")
        newest = max((t for t in (self.max_ts, other.max_ts) if t is not None), default=None)
        recent = np.sort(np.concatenate([self.recent_ts, other.recent_ts]), kind="stable")
        if newest is not None:
            recent = recent[np.searchsorted(recent, newest - DAY_US) :]
        return LakeSummary(
            parts={**self.parts, **other.parts},
            counts={k: self.counts[k] + other.counts[k] for k in ADDITIVE_COUNTS},
            max_ts=newest,
            fingerprints=_sorted_union(self.fingerprints, other.fingerprints),
            users=_sorted_union(self.users, other.users),
            items=_sorted_union(self.items, other.items),
            recent_ts=recent,
        )

    def valid_for(self, signatures: dict[str, list[int]], interval_end_us: int) -> bool:
        """True when every part summarised is still in the lake unchanged and all its rows are before
        the run's interval end (so the run counts every one of them, as a full scan would)."""
        unchanged = all(signatures.get(name) == sig for name, sig in self.parts.items())
        return unchanged and (self.max_ts is None or self.max_ts < interval_end_us)

    def metrics(self, interval_end_us: int) -> dict[str, int | None]:
        """The metrics row of ``input_metrics`` for a run ending at `interval_end_us` (after `max_ts`)."""
        return {
            **self.counts,
            "rows_in_last_day": len(self.recent_ts)
            - int(np.searchsorted(self.recent_ts, interval_end_us - DAY_US)),
            "duplicate_rows": self.counts["rows"] - len(self.fingerprints),
            "max_ts": self.max_ts,
            "distinct_users": len(self.users),
            "distinct_items": len(self.items),
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"parts": self.parts, "counts": self.counts, "max_ts": self.max_ts}
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as out:
            np.savez(out, meta=np.array(json.dumps(meta)), **{k: getattr(self, k) for k in _KEYS})
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> LakeSummary | None:
        """The stored summary, or None when there is none or it cannot be read (then all is rescanned)."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
                arrays = {k: stored[k].astype(np.int64, copy=False) for k in _KEYS}
        except (OSError, ValueError, KeyError):
            return None
        if set(meta.get("counts", {})) != set(ADDITIVE_COUNTS):
            return None
        return cls(parts=meta["parts"], counts=meta["counts"], max_ts=meta["max_ts"], **arrays)

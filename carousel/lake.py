"""The event lake: canonical Parquet files under `CAROUSEL_LAKE_DIR`.

Layout::

    <lake>/events/part-<imported_at>-<digest>.parquet   append-only, one file per import
    <lake>/events/part-stream-<first>-<last>.parquet    events drained from the Redis stream, named by
                                                        the stream ids of their first and last entry
    <lake>/items/items.parquet                          one row per item, replaced atomically on upsert
    <lake>/users/users.parquet                          one row per user, replaced atomically on upsert
    <lake>/session_links/part-stream-<first>-<last>.parquet   sign-ins (session_id, user_id, linked_at)
                                                        drained from `carousel:links`; first link wins
    <lake>/_imports.json                                digests of imported inputs (re-imports are no-ops)

Every write validates first and only then writes to a temporary file that is renamed into place, so a
refused or interrupted import leaves what the lake already held untouched. A stream part's name is its
identity: the newest one tells the drain (`jobs.ingest.drain`) how far the stream is in the lake, and a
retried write of the same entries replaces the file with the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from carousel.schema import (
    EVENTS,
    ITEMS,
    SESSION_LINKS,
    USERS,
    Table,
    to_arrow,
    validate_events,
    validate_items,
    validate_session_links,
    validate_users,
)


@dataclass(frozen=True)
class WriteResult:
    """What one lake write did."""

    table: str
    rows: int
    path: Path | None
    skipped_reason: str | None = None


class Lake:
    """Reads and writes the canonical tables under one lake directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def items_path(self) -> Path:
        return self.root / "items" / "items.parquet"

    @property
    def users_path(self) -> Path:
        return self.root / "users" / "users.parquet"

    @property
    def session_links_dir(self) -> Path:
        return self.root / "session_links"

    def session_link_files(self) -> list[Path]:
        return (
            sorted(self.session_links_dir.glob("part-*.parquet")) if self.session_links_dir.exists() else []
        )

    @property
    def _imports_path(self) -> Path:
        return self.root / "_imports.json"

    def event_files(self) -> list[Path]:
        return sorted(self.events_dir.glob("part-*.parquet")) if self.events_dir.exists() else []

    def has_data(self) -> bool:
        return bool(self.event_files()) and self.items_path.exists()

    def drained_through(self) -> str | None:
        """The newest Redis stream id whose event is in the lake (from the stream parts' names)."""
        newest: tuple[int, int] | None = None
        for path in self.events_dir.glob("part-stream-*.parquet") if self.events_dir.exists() else []:
            match = _STREAM_PART.match(path.name)
            if match:
                last = _stream_id(match.group(2))
                newest = last if newest is None or last > newest else newest
        return None if newest is None else f"{newest[0]}-{newest[1]}"

    # -- writes --------------------------------------------------------------------------------------
    def append_events(
        self,
        events: pd.DataFrame,
        *,
        now: pd.Timestamp,
        source: str,
        digest: str | None = None,
        part: str | None = None,
    ) -> WriteResult:
        """Validate `events` and add them as one new part file; a digest seen before is skipped.

        `part` names the file (see `stream_part`) instead of the import time and digest.
        """
        clean = validate_events(events, now=now, source=source)
        digest = digest or _frame_digest(clean)
        if digest in self._imported_digests():
            return WriteResult("events", 0, None, f"{source} was already imported (digest {digest[:12]})")
        if clean.empty:
            return WriteResult("events", 0, None, f"{source} holds no events")
        clean = clean.sort_values("ts", kind="stable")
        stamp = now.strftime("%Y%m%dT%H%M%S")
        path = self.events_dir / (part or f"part-{stamp}-{digest[:16]}.parquet")
        _atomic_write(to_arrow(clean, EVENTS), path)
        self._remember(digest, source, "events", len(clean))
        return WriteResult("events", len(clean), path)

    def upsert_items(self, items: pd.DataFrame, *, source: str) -> WriteResult:
        """Validate `items` and merge them into the catalog (a new row replaces the old one)."""
        clean = validate_items(items, source=source)
        merged = _merge_on_key(self.read_items(), clean, ITEMS)
        _atomic_write(to_arrow(merged, ITEMS), self.items_path)
        return WriteResult("items", len(clean), self.items_path)

    def upsert_users(self, users: pd.DataFrame, *, source: str) -> WriteResult:
        """Validate `users` and merge them into the users table (a new row replaces the old one)."""
        clean = validate_users(users, source=source)
        merged = _merge_on_key(self.read_users(), clean, USERS)
        _atomic_write(to_arrow(merged, USERS), self.users_path)
        return WriteResult("users", len(clean), self.users_path)

    def append_session_links(self, links: pd.DataFrame, *, part: str) -> Path:
        """Validate sign-in links and write them as the part named `part` (a stream range, see
        `stream_part`: a retried drain rewrites the same part). A session linked twice keeps its first
        link when read (`carousel.lake` readers and `jobs.features.transforms.attribute_sessions`)."""
        clean = validate_session_links(links, source=f"session links {part}")
        path = self.session_links_dir / part
        _atomic_write(to_arrow(clean, SESSION_LINKS), path)
        return path

    # -- reads ---------------------------------------------------------------------------------------
    def read_items(self) -> pd.DataFrame | None:
        return pq.read_table(self.items_path).to_pandas() if self.items_path.exists() else None

    def read_users(self) -> pd.DataFrame | None:
        return pq.read_table(self.users_path).to_pandas() if self.users_path.exists() else None

    def opted_out(self, purpose: Literal["personalization", "marketing"]) -> list[str]:
        """The users table's shoppers who did not consent to `purpose` (a filtered column read)."""
        if not self.users_path.exists():
            return []
        column = f"consent_{purpose}"
        table = pq.read_table(self.users_path, columns=["user_id", column], filters=[(column, "==", False)])
        return [str(user) for user in table.column("user_id").to_pylist()]

    def _imported_digests(self) -> dict[str, dict[str, object]]:
        if not self._imports_path.exists():
            return {}
        loaded: dict[str, dict[str, object]] = json.loads(self._imports_path.read_text())
        return loaded

    def _remember(self, digest: str, source: str, table: str, rows: int) -> None:
        seen = self._imported_digests()
        seen[digest] = {"source": source, "table": table, "rows": rows}
        tmp = self._imports_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(seen, indent=1, sort_keys=True))
        os.replace(tmp, self._imports_path)


_STREAM_PART = re.compile(r"^part-stream-(\d+-\d+)-(\d+-\d+)\.parquet$")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What `newest_event_us` says of a part without time statistics: newer than any run.
UNKNOWN_NEWEST = int(np.iinfo(np.int64).max)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def newest_event_us(part: Path) -> int:
    """An events part's newest event time (microseconds) from its Parquet footer, without reading its
    rows; `UNKNOWN_NEWEST` for a part without statistics, so callers read such a part."""
    metadata = pq.ParquetFile(part).metadata
    column = metadata.schema.names.index("ts")
    newest = -1
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            return UNKNOWN_NEWEST
        newest = max(newest, micros(statistics.max))
    return newest


def stream_part(first_id: str, last_id: str) -> str:
    """The part name of the stream entries `first_id`..`last_id` (Redis stream ids "<ms>-<seq>")."""
    if not _STREAM_PART.match(f"part-stream-{first_id}-{last_id}.parquet"):
        raise ValueError(f"not a stream id range: {first_id!r}..{last_id!r}")
    return f"part-stream-{first_id}-{last_id}.parquet"


def _stream_id(text: str) -> tuple[int, int]:
    ms, seq = text.split("-")
    return int(ms), int(seq)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: the identity of an import input."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _frame_digest(df: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(df.astype("string"), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _merge_on_key(old: pd.DataFrame | None, new: pd.DataFrame, table: Table) -> pd.DataFrame:
    if old is None or old.empty:
        return new.sort_values(table.key).reset_index(drop=True)
    keep = old[~old[table.key].isin(new[table.key])]
    return pd.concat([keep, new], ignore_index=True).sort_values(table.key).reset_index(drop=True)


def _atomic_write(table: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")  # type: ignore[arg-type]
    os.replace(tmp, path)

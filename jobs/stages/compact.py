"""Stage `compact_erased` (first of the nightly `carousel_retrain`, or `carousel erase --compact`): erased
shoppers are taken out of every file that still holds them.

`DELETE /v1/users/{id}` clears Redis at once and the batch leaves erased shoppers out of every run from
then on, but their rows stay in the files written before: the lake's event parts, users table and
session links, each run's lists, the audience files, the demo store. This stage rewrites, under the data
folders (`CAROUSEL_VAR_DIR`, `CAROUSEL_LAKE_DIR`), every Parquet file with a `user_id` or `session_id`
column and every CSV with a `user_id` column that holds a row of an erased shopper, or of an anonymous
session linked to one when they signed in (`<lake>/session_links/`). Each file is rewritten to a temporary
file and renamed into place (a Spark part's `.crc` checksum goes with it), so a file is either the old or
the compacted one, and a run killed halfway is finished by the next. Rows are streamed a record batch at a
time: a large lake part is never held whole.

Rewritten lake parts change size and modification time, so the input gate's ledger
(`quality.input_ledger`) no longer matches and the next run scans the lake again: the ledger is rebuilt
from the compacted parts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from carousel.cache.client import sync_client
from carousel.cache.shoppers import erased_sessions, erasures
from carousel.lake import Lake
from carousel.rules.erasure import Erasures
from configs.settings import Settings
from jobs.stages.run import StageResult, StageRun


@dataclass
class CompactionResult:
    """What a compaction did: the files rewritten and the rows taken out of them."""

    erased_shoppers: int
    linked_sessions: int = 0
    files: list[str] = field(default_factory=list)
    rows_removed: int = 0


def run(job: StageRun) -> StageResult:
    result = compact_erased(job.settings)
    return StageResult(
        f"{result.rows_removed:,} rows of {result.erased_shoppers:,} erased shoppers (and "
        f"{result.linked_sessions:,} sessions linked to them) taken out of {len(result.files)} files",
        result,
    )


def compact_erased(settings: Settings) -> CompactionResult:
    """Rewrite every data file that holds an erased shopper's rows without them (see the module)."""
    client = sync_client(settings)
    erased = erasures(client, settings)
    result = CompactionResult(erased_shoppers=len(erased.digests))
    if not erased:
        return result
    judge = _Judge(erased)
    # The sessions they signed in on, first (the links naming them are compacted away below); those the
    # API recorded at erasure time, whose links may never have reached the lake, are matched by digest.
    linked = _linked_sessions(Lake(settings.lake_dir), judge)
    session_judge = _Judge(erased_sessions(client, erased.salt))
    sessions_seen: set[str] = set()
    for path in _data_files(settings):
        if path.suffix == ".csv":
            removed = _compact_csv(path, judge)
        else:
            removed = _compact_parquet(path, judge, linked, session_judge, sessions_seen)
        if removed:
            result.files.append(str(path))
            result.rows_removed += removed
    result.linked_sessions = len(sessions_seen)
    return result


class _Judge:
    """Whether a shopper id was erased, each id's digest computed once across all the files."""

    def __init__(self, erased: Erasures) -> None:
        self.erased = erased
        self._seen: dict[str, bool] = {}

    def erased_among(self, ids: pa.Array | pa.ChunkedArray) -> set[str]:
        found = set()
        for user in pc.unique(ids.drop_null()).to_pylist():
            if user not in self._seen:
                self._seen[user] = user in self.erased
            if self._seen[user]:
                found.add(user)
        return found


def _linked_sessions(lake: Lake, judge: _Judge) -> set[str]:
    """The anonymous sessions an erased shopper signed in on."""
    sessions: set[str] = set()
    for part in lake.session_link_files():
        links = pq.read_table(part, columns=["session_id", "user_id"])
        users = judge.erased_among(links.column("user_id"))
        if users:
            mask = pc.is_in(links.column("user_id"), pa.array(sorted(users)))
            sessions |= set(links.filter(mask).column("session_id").to_pylist())
    return sessions


def _data_files(settings: Settings) -> Iterator[Path]:
    """Every Parquet and CSV file under the data folders (Spark's part files included), once each."""
    roots = {settings.var_dir.resolve(), settings.lake_dir.resolve()}
    seen: set[Path] = set()
    for root in sorted(roots):
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".parquet", ".csv") or not path.is_file() or path.name.startswith("."):
                continue
            if path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def _compact_parquet(
    path: Path, judge: _Judge, linked: set[str], session_judge: _Judge, sessions_seen: set[str]
) -> int:
    """Rewrite one Parquet file without the rows of erased shoppers and of their guest sessions (`linked`
    by id, or recorded by digest); rows removed. The sessions found are added to `sessions_seen`."""
    file = pq.ParquetFile(path)
    columns = [c for c in ("user_id", "session_id") if c in file.schema_arrow.names]
    if not columns:
        return 0
    keys = file.read(columns=columns)
    users = judge.erased_among(keys.column("user_id")) if "user_id" in columns else set()
    sessions: set[str] = set()
    if "session_id" in columns:
        ids = keys.column("session_id")
        if linked:
            sessions = set(pc.unique(pc.filter(ids, pc.is_in(ids, pa.array(sorted(linked))))).to_pylist())
        sessions |= session_judge.erased_among(ids)
    sessions_seen |= sessions
    if not users and not sessions:
        return 0
    tmp = path.with_name(f".{path.name}.compacting")
    removed = 0
    with pq.ParquetWriter(tmp, file.schema_arrow, compression="zstd") as writer:
        for batch in file.iter_batches():
            table = pa.Table.from_batches([batch], schema=file.schema_arrow)
            mask = _erased_rows(table, users, sessions)
            removed += int(pc.sum(mask).as_py() or 0)
            writer.write_table(table.filter(pc.invert(mask)))
    os.replace(tmp, path)
    # Spark checks a part against its checksum file when it reads it: a stale one would fail the read.
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
    return removed


def _erased_rows(table: pa.Table, users: set[str], sessions: set[str]) -> pa.ChunkedArray:
    mask = pa.chunked_array([pa.array([False] * table.num_rows)])
    if users:
        mask = pc.or_(mask, pc.fill_null(pc.is_in(table.column("user_id"), pa.array(sorted(users))), False))
    if sessions:
        linked = pc.is_in(table.column("session_id"), pa.array(sorted(sessions)))
        mask = pc.or_(mask, pc.fill_null(linked, False))
    return mask


def _compact_csv(path: Path, judge: _Judge) -> int:
    """Rewrite one CSV file (an audience export) without erased shoppers' rows; rows removed."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return 0
    if "user_id" not in frame.columns:
        return 0
    users = judge.erased_among(pa.array(frame["user_id"].tolist(), type=pa.string()))
    if not users:
        return 0
    kept = frame[~frame["user_id"].isin(users)]
    tmp = path.with_name(f".{path.name}.compacting")
    kept.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return len(frame) - len(kept)

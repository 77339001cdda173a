"""Moving the events the API accepted from the Redis stream into the lake: the work of the stage
`drain_events` (`jobs.stages.drain`), first in every refresh, or by hand with
`carousel drain-events [--interval-end ISO]`.

How. The drain reads `carousel:events` through the consumer group `lake` with one fixed consumer name:
first the entries it was already given but never acknowledged (a run that was killed), then new ones,
always in stream order. It moves the longest run of entries whose events are at or before the interval
end: the first later event stops it, and it and everything after it stay in the stream for the next run
(the lake refuses events from after the interval it is written for). Each batch of entries becomes one
lake part named by the stream ids of its first and last entry (`Lake.append_events(part=stream_part(...))`,
validated by the lake); only after the part is renamed into place are its entries acknowledged and
trimmed from the stream, in one transaction.

Exactly once. Entries are written strictly in stream order, so every entry up to the newest stream id in
the lake (`Lake.drained_through`, read from the part names) is already there, and every later one is not.
A run killed at any point leaves its entries pending; the retry reads them again, acknowledges without
rewriting those up to that id, and writes the others. A part renamed into place is complete (the rename
is atomic), so there is no half-written state to repair. Entries the lake refuses (only possible for
entries that did not come through the API) go to `carousel:events:rejected` with the reason, so one bad
entry cannot stop the drain; entries deleted from the stream before they were moved (an erased
shopper's, or the length cap's) are counted, not written.

Events of shoppers without personalization consent are kept: segment popularity uses them, and the
modelling excludes those shoppers through the users table. The `variant` of each entry is not a lake
column (it follows from the shopper and the holdout salt).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from redis.exceptions import ResponseError

from carousel.cache.client import SyncRedis, sync_client, text
from carousel.cache.keys import DRAIN_GROUP, EVENTS_STREAM, LINKS_STREAM, REJECTED_STREAM
from carousel.cache.stream import STREAM_FIELDS, StreamBacklog, decode_stream_entry, stream_backlog, stream_id
from carousel.lake import Lake, stream_part
from carousel.schema import SchemaError, validate_events
from configs.settings import Settings

# One consumer: a retried drain must find the entries a killed one was given, under the same name.
CONSUMER = "drain"
# Rejected entries are kept for inspection, not forever.
REJECTED_MAXLEN = 100_000

Entry = tuple[str, dict[bytes, bytes]]


class DrainError(RuntimeError):
    """The drain cannot run (another drain holds the lake's drain lock)."""


@dataclass(frozen=True)
class DrainResult:
    """What one drain did.

    Attributes
    ----------
    written : int
        Events written into the lake by this run.
    parts : tuple of Path
        The lake parts this run wrote.
    already_in_lake : int
        Entries a killed run had written but not acknowledged: acknowledged now, not written again.
    rejected : int
        Entries the lake refused, moved to `carousel:events:rejected`.
    deleted : int
        Entries deleted from the stream after a drain read them and before it moved them: events of an
        erased shopper (`DELETE /v1/users/...`) or, when the length cap was reached, lost ones.
    drained_through : str or None
        The newest stream id whose event is in the lake.
    links : int
        Sign-in links moved into the lake's session links (`drain_links`).
    backlog : StreamBacklog
        The stream after the run: what is left for the next one.
    """

    written: int
    parts: tuple[Path, ...]
    already_in_lake: int
    rejected: int
    deleted: int
    drained_through: str | None
    links: int
    backlog: StreamBacklog


@dataclass
class _Tally:
    drained_through: str | None
    written: int = 0
    already_in_lake: int = 0
    rejected: int = 0
    deleted: int = 0
    links: int = 0
    parts: list[Path] = field(default_factory=list)


def drain_events(
    settings: Settings,
    *,
    interval_end: datetime,
    batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> DrainResult:
    """Move the stream's events up to `interval_end` into the lake, each exactly once.

    Parameters
    ----------
    settings : Settings
        Redis, the lake and `drain_batch_size`.
    interval_end : datetime
        The data interval end of the run: the drain stops at the first event after it.
    batch_size : int, optional
        Entries read (and at most written into one part) at a time; default `settings.drain_batch_size`.
    progress : callable, optional
        Called with one line per part written.

    Returns
    -------
    DrainResult
        Counts, the parts written and the backlog left.
    """
    say = progress or (lambda _message: None)
    end = (interval_end if interval_end.tzinfo else interval_end.replace(tzinfo=UTC)).astimezone(UTC)
    count = batch_size or settings.drain_batch_size
    lake = Lake(settings.lake_dir)
    client = sync_client(settings)
    try:
        with _single_drain(lake.root):
            tally = _Tally(drained_through=lake.drained_through())
            tally.links = drain_links(client, lake, count)
            _ensure_group(client)
            cursor = "0"  # this consumer's pending entries first: given to a run that did not finish
            while True:
                entries = _read(client, cursor, count)
                if not entries:
                    if cursor == ">":
                        break
                    cursor = ">"
                    continue
                if cursor != ">":
                    cursor = entries[-1][0]
                if _drain_batch(client, lake, entries, end, tally, say):
                    break
        backlog = stream_backlog(client)
    finally:
        client.close()
    return DrainResult(
        written=tally.written,
        parts=tuple(tally.parts),
        already_in_lake=tally.already_in_lake,
        rejected=tally.rejected,
        deleted=tally.deleted,
        drained_through=tally.drained_through,
        links=tally.links,
        backlog=backlog,
    )


@contextmanager
def _single_drain(lake_root: Path) -> Iterator[None]:
    """One drain per lake at a time; the kernel releases the lock when its holder dies (even by SIGKILL)."""
    lake_root.mkdir(parents=True, exist_ok=True)
    path = lake_root / ".drain.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DrainError(f"another drain is running on {lake_root} (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_group(client: SyncRedis) -> None:
    try:
        # From the stream's start: events accepted before the first drain are drained too.
        client.xgroup_create(EVENTS_STREAM, DRAIN_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _read(client: SyncRedis, cursor: str, count: int) -> list[Entry]:
    reply: Any = client.xreadgroup(DRAIN_GROUP, CONSUMER, {EVENTS_STREAM: cursor}, count=count)
    if not reply:
        return []
    # [[stream, [(entry id, fields or None for an entry deleted since it was read), ...]]]
    return [(text(entry_id), fields or {}) for entry_id, fields in reply[0][1]]


def _drain_batch(
    client: SyncRedis,
    lake: Lake,
    entries: list[Entry],
    end: datetime,
    tally: _Tally,
    say: Callable[[str], None],
) -> bool:
    """Move one batch in stream order; True when an event after `end` stopped the drain."""
    handled: list[str] = []  # in the lake, rejected or deleted: acknowledged once the writes are done
    rows: list[dict[str, Any]] = []
    row_ids: list[str] = []
    stopped = False
    done = stream_id(tally.drained_through) if tally.drained_through else (0, 0)
    for entry_id, fields in entries:
        if stream_id(entry_id) <= done:
            tally.already_in_lake += 1
            handled.append(entry_id)
            continue
        if not fields:  # deleted after it was read (an erasure, or the length cap): the event is gone
            tally.deleted += 1
            handled.append(entry_id)
            continue
        row: dict[str, Any] = dict(decode_stream_entry(fields))
        try:
            ts = datetime.fromisoformat(row["ts"] or "")
        except ValueError:
            _reject(client, entry_id, fields, f"column 'ts' is not a timestamp: {row['ts']!r}", tally)
            handled.append(entry_id)
            continue
        row["ts"] = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        # Python's parsers round-trip the API's text exactly (pandas' float parser does not always); a
        # value they cannot read is left as text for the lake's validation to refuse.
        row["quantity"] = _number(row["quantity"], int)
        row["price"] = _number(row["price"], float)
        if row["ts"] > end:
            stopped = True
            break
        rows.append(row)
        row_ids.append(entry_id)
    _write_rows(client, lake, rows, row_ids, end, tally, say, {i: f for i, f in entries})
    handled += row_ids
    if handled:
        _acknowledge(client, sorted(handled, key=stream_id))
    return stopped


def _number(text: str | None, kind: type[int] | type[float]) -> object:
    try:
        return kind(text or "")
    except ValueError:
        return text


def _write_rows(
    client: SyncRedis,
    lake: Lake,
    rows: list[dict[str, Any]],
    ids: list[str],
    end: datetime,
    tally: _Tally,
    say: Callable[[str], None],
    fields_of: dict[str, dict[bytes, bytes]],
) -> None:
    """Write `rows` as one part; rows the lake refuses are rejected and the rows between them written."""
    start = 0
    while start < len(rows):
        frame = pd.DataFrame(rows[start:], columns=list(STREAM_FIELDS))
        try:
            _write_part(lake, frame, ids[start], ids[-1], end, tally, say)
            return
        except SchemaError:
            bad = start + _first_refused(frame, end)
        if bad > start:
            good = pd.DataFrame(rows[start:bad], columns=list(STREAM_FIELDS))
            _write_part(lake, good, ids[start], ids[bad - 1], end, tally, say)
        _reject(client, ids[bad], fields_of[ids[bad]], _refusal(rows[bad], end), tally)
        start = bad + 1


def _write_part(
    lake: Lake,
    frame: pd.DataFrame,
    first_id: str,
    last_id: str,
    end: datetime,
    tally: _Tally,
    say: Callable[[str], None],
) -> None:
    part = stream_part(first_id, last_id)
    result = lake.append_events(
        frame, now=pd.Timestamp(end), source=f"stream {first_id}..{last_id}", digest=part, part=part
    )
    tally.drained_through = last_id
    tally.written += result.rows
    if result.path is not None:
        tally.parts.append(result.path)
    say(f"{result.rows:,} events -> {part}")


def _first_refused(frame: pd.DataFrame, end: datetime) -> int:
    """The position of the first row the lake refuses (bisection: a few validations, not one per row)."""
    now = pd.Timestamp(end)
    lo, hi = 0, len(frame)  # frame[lo:hi] holds a refused row
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            validate_events(frame.iloc[lo:mid], now=now)
            lo = mid
        except SchemaError:
            hi = mid
    return lo


def _refusal(row: dict[str, Any], end: datetime) -> str:
    try:
        validate_events(pd.DataFrame([row], columns=list(STREAM_FIELDS)), now=pd.Timestamp(end))
    except SchemaError as exc:
        return str(exc)
    return "refused with the rows around it"


def _reject(client: SyncRedis, entry_id: str, fields: dict[bytes, bytes], reason: str, tally: _Tally) -> None:
    rejected: dict[Any, Any] = {**fields, b"entry_id": entry_id.encode(), b"error": reason.encode()}
    client.xadd(
        REJECTED_STREAM,
        rejected,
        maxlen=REJECTED_MAXLEN,
        approximate=True,
    )
    tally.rejected += 1


def drain_links(client: SyncRedis, lake: Lake, count: int) -> int:
    """Move the sign-in links (`carousel:links`) into the lake's session links, a part per batch named
    by its stream ids, then delete the batch from the stream. A drain killed between the two rewrites the
    same part on its retry, and a link read twice changes nothing (the first link of a session wins), so
    no consumer group is needed. Returns the links moved."""
    moved = 0
    while True:
        entries: Any = client.xrange(LINKS_STREAM, min="-", max="+", count=count)
        if not entries:
            return moved
        ids = [text(entry_id) for entry_id, _ in entries]
        rows = [
            {
                "session_id": text(fields.get(b"session_id", b"")),
                "user_id": text(fields.get(b"user_id", b"")),
                "linked_at": datetime.fromtimestamp(float(fields.get(b"ts", b"0")), UTC),
            }
            for _, fields in entries
        ]
        lake.append_session_links(pd.DataFrame(rows), part=stream_part(ids[0], ids[-1]))
        client.xdel(LINKS_STREAM, *ids)
        moved += len(ids)


def _acknowledge(client: SyncRedis, ids: list[str]) -> None:
    """Acknowledge handled entries and trim the stream up to the last of them, in one transaction.

    Everything below the last handled id is handled (entries are handled in stream order), so trimming by
    id removes exactly the acknowledged entries and any left by an earlier run's interrupted trim.
    """
    ms, seq = stream_id(ids[-1])
    pipe = client.pipeline(transaction=True)
    pipe.xack(EVENTS_STREAM, DRAIN_GROUP, *ids)
    pipe.xtrim(EVENTS_STREAM, minid=f"{ms}-{seq + 1}", approximate=False)
    pipe.execute()

"""The accepted-events stream: the entry format the API appends (`carousel:events`) and the drain
reads, and how far the drain is behind.

An entry holds the canonical event fields as text (a null field left out) plus the subject's `variant`,
which is not a lake column (it follows from the shopper and the holdout salt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import ResponseError

from carousel.cache.client import SyncRedis
from carousel.cache.keys import DRAIN_GROUP, EVENTS_STREAM

# The canonical event fields in stream order; user_id, country, device and referrer may be absent.
STREAM_FIELDS = (
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "ts",
    "quantity",
    "price",
    "country",
    "device",
    "referrer",
)


_NULLABLE_FIELDS = ("user_id", "country", "device", "referrer")


class EventLike(Protocol):
    """What `record_events` needs of an event (the API's validated model has exactly these fields)."""

    @property
    def user_id(self) -> str | None: ...
    @property
    def session_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def quantity(self) -> int: ...
    @property
    def price(self) -> float: ...
    @property
    def country(self) -> str | None: ...
    @property
    def device(self) -> str | None: ...
    @property
    def referrer(self) -> str | None: ...


def stream_entry(event: EventLike, variant: str) -> dict[str, str]:
    """The stream fields of one accepted event: canonical values as text, a null field left out."""
    entry = {
        "session_id": event.session_id,
        "item_id": event.item_id,
        "event_type": event.event_type,
        "ts": event.ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "quantity": str(event.quantity),
        # repr round-trips a float exactly, so the lake holds the very price the API accepted.
        "price": repr(float(event.price)),
        "variant": variant,
    }
    for name in _NULLABLE_FIELDS:
        value = getattr(event, name)
        if value is not None:
            entry[name] = value
    return entry


def decode_stream_entry(fields: Mapping[bytes, bytes]) -> dict[str, str | None]:
    """A stream entry's canonical fields as text (None when absent); the variant is not a lake column."""
    text = {key.decode(): value.decode() for key, value in fields.items()}
    return {name: text.get(name) for name in STREAM_FIELDS}


# -- the stream's backlog ----------------------------------------------------------------------------
def stream_id(text: str | bytes) -> tuple[int, int]:
    """A stream id ("<ms>-<seq>") as a comparable pair."""
    ms, _, seq = (text.decode() if isinstance(text, bytes) else text).partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class StreamBacklog:
    """How far the drain is behind the API (for metrics and the drain's report).

    Attributes
    ----------
    length : int
        Entries in the stream: accepted events not yet in the lake (the drain trims what it moved).
    pending : int
        Entries the drain has read but not moved: held back for a later interval, or in flight.
    lag : int
        Entries the drain has not read yet.
    lost : bool
        The length cap removed entries the drain never read: accepted events were lost (reported when
        Redis can tell, which it cannot while erased entries are among the unread ones).
    """

    length: int
    pending: int
    lag: int
    lost: bool


def _backlog(stream: dict[str, Any] | None, groups: list[dict[str, Any]]) -> StreamBacklog:
    if stream is None:
        return StreamBacklog(length=0, pending=0, lag=0, lost=False)
    length, added = int(stream["length"]), int(stream["entries-added"])
    group = next((g for g in groups if g["name"] in (DRAIN_GROUP, DRAIN_GROUP.encode())), None)
    # An erasure deletes entries too (XDEL, which Redis records); trimming is what the cap does.
    erased = stream_id(stream.get("max-deleted-entry-id") or "0-0") > (0, 0)
    if group is None:  # no drain has run yet: every entry ever added is here unless trimmed or erased
        return StreamBacklog(length=length, pending=0, lag=length, lost=added > length and not erased)
    pending = int(group["pending"])
    first = stream.get("first-entry")
    # Redis counts the entries added after the group's last read (`lag`, trimmed ones included; unknown
    # while erased entries lie beyond that read). The stream is trimmed from its head, so unread entries
    # can only have been dropped once the head is past what the group has read; then every entry left is
    # unread, and fewer than were added.
    unread_added = group.get("lag")
    head_unread = first is None or stream_id(first[0]) > stream_id(group["last-delivered-id"])
    return StreamBacklog(
        length=length,
        pending=pending,
        lag=max(length - pending, 0),
        lost=unread_added is not None and head_unread and int(unread_added) > length,
    )


def _no_stream(exc: ResponseError) -> StreamBacklog:
    if "no such key" not in str(exc).lower():
        raise exc
    return _backlog(None, [])  # no stream yet: nothing was ever accepted


def stream_backlog(client_sync: SyncRedis) -> StreamBacklog:
    """The stream's backlog through a blocking client (the drain, the CLI)."""
    try:
        return _backlog(client_sync.xinfo_stream(EVENTS_STREAM), client_sync.xinfo_groups(EVENTS_STREAM))
    except ResponseError as exc:
        return _no_stream(exc)

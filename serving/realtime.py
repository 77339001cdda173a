"""Real-time shopper state and the accepted-events stream: the Redis key layout and every operation on it.

`POST /v1/events` calls `record_events`; the real-time overlay of `GET /v1/recommendations` calls
`read_state`; erasure deletes a shopper's keys (`erase_subject_keys`, or `user_keys` / `session_keys`
with an async client); the drain (`jobs/drain.py`) reads the stream through the consumer group named
here, and `stream_backlog` reports how far behind it is.

Keys. A *subject* is a signed-in shopper (`{u:<user_id>}`) or, for an anonymous visitor, their session
(`{s:<session_id>}`). The braces are a Redis hash tag: every key of one subject lives in one hash slot, so
a read is one round trip (one transaction) and the layout works unchanged on Redis Cluster. Identifiers
match the API's ID_PATTERN, which allows no braces, so a tag never ends early::

    carousel:rt:{u:<user_id>}:cart        zset item -> +t while the item is in the cart (added at t, epoch
                                          seconds), -t once removed or bought at t (kept a day, see below)
    carousel:rt:{u:<user_id>}:purchases   zset item -> time of its latest purchase (newest N kept)
    carousel:rt:{u:<user_id>}:views       zset item -> time of its latest view (newest N kept)
    carousel:rt:{u:<user_id>}:interest    hash category -> summed weight (view 1, add to cart 3, purchase 5)
    carousel:rt:{u:<user_id>}:sessions    zset session_id -> last seen: the sessions a signed-in shopper's
                                          events came from, so erasure also finds their anonymous state
    carousel:rt:{s:<session_id>}:...      the same keys (without :sessions) for an anonymous visitor
    carousel:events                       stream of accepted events: the canonical fields (a null field is
                                          left out) plus `variant`; drained into the lake by group `lake`
    carousel:events:rejected              stream of entries the lake refused, kept for inspection

A signed-in shopper's events update their `{u:...}` keys only; a visitor's events before signing in stay
under their session. Each key expires after its TTL (settings `realtime_*_ttl_s`) counted from the
subject's latest write, and entries older than the TTL (measured from the subject's newest event, so a
late-arriving old batch never prunes newer state) are dropped on each write.

The cart is a last-writer-wins register per item: an event only changes an item's entry when it is at
least as recent as the entry, so an add_to_cart that arrives after a later removal or purchase of the
same item (out-of-order delivery from a browser or an app) does not put the item back. Removals are kept
as negative scores for a day for that comparison and are never read as cart content.

Category interest is filled when an item's category can be looked up: `record_events` takes an optional
`category_of` function. The item catalog lives only in the lake today (the API has no catalog in Redis),
so the API passes none and the interest hash stays empty; the overlay reads it as an empty mapping.

All state writes are idempotent except the interest weights (a replayed request adds them again), which
is why `record_events` writes the state first and appends a request's events to the stream last, in one
transaction: a request that fails before that transaction and is retried by the client leaves the state
as one delivery would and the stream with one copy of its events. (A client that retries after a 202
it did not receive sends its events twice: the contract has no idempotency key.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import ResponseError

from configs.settings import Settings
from serving import keyspace

PREFIX = "carousel:rt"
EVENTS_STREAM = "carousel:events"
REJECTED_STREAM = "carousel:events:rejected"
# The consumer group through which jobs/drain.py moves the stream into the lake.
DRAIN_GROUP = "lake"

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

INTEREST_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "add_to_cart": 3.0,
    "remove_from_cart": 0.0,
    "purchase": 5.0,
}
# How long a cart removal is remembered to refuse an older add_to_cart arriving after it: longer than any
# client is expected to hold events back.
CART_TOMBSTONE_S = 86_400


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


@dataclass(frozen=True)
class ShopperState:
    """One subject's real-time state; every time is in epoch seconds (UTC)."""

    cart: dict[str, float]
    purchases: dict[str, float]
    views: dict[str, float]
    interest: dict[str, float] = field(default_factory=dict)


EMPTY_STATE = ShopperState(cart={}, purchases={}, views={})


@dataclass(frozen=True)
class SubjectKeys:
    """The real-time keys of one subject (all in one hash slot)."""

    cart: str
    purchases: str
    views: str
    interest: str
    sessions: str

    @property
    def all(self) -> tuple[str, ...]:
        return (self.cart, self.purchases, self.views, self.interest, self.sessions)


def _keys(tag: str) -> SubjectKeys:
    base = f"{PREFIX}:{tag}"
    return SubjectKeys(
        cart=f"{base}:cart",
        purchases=f"{base}:purchases",
        views=f"{base}:views",
        interest=f"{base}:interest",
        sessions=f"{base}:sessions",
    )


def user_keys(user_id: str) -> SubjectKeys:
    return _keys(keyspace.user_tag(user_id))


def session_keys(session_id: str) -> SubjectKeys:
    return _keys(f"{{s:{session_id}}}")


def subject_keys(*, user_id: str | None, session_id: str | None) -> SubjectKeys | None:
    """The signed-in shopper's keys, else the session's; None when neither is known."""
    if user_id:
        return user_keys(user_id)
    if session_id:
        return session_keys(session_id)
    return None


@dataclass(frozen=True)
class RealtimeConfig:
    """The settings `record_events` applies (see `configs/defaults.toml`)."""

    cart_ttl_s: int
    views_ttl_s: int
    purchases_ttl_s: int
    views_max: int
    purchases_max: int
    stream_maxlen: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RealtimeConfig:
        return cls(
            cart_ttl_s=settings.realtime_cart_ttl_s,
            views_ttl_s=settings.realtime_views_ttl_s,
            purchases_ttl_s=settings.realtime_purchases_ttl_s,
            views_max=settings.realtime_views_max,
            purchases_max=settings.realtime_purchases_max,
            stream_maxlen=settings.events_stream_maxlen,
        )


# Applies one subject's events (in time order) to its keys; one script so the cart's compare-and-set is
# atomic. KEYS: cart, purchases, views, interest, sessions. ARGV: cart_ttl, purchases_ttl, views_ttl,
# views_max, purchases_max, tombstone_s, then per event: event_type, item_id, ts, category or '',
# interest weight, session_id to remember or ''.
RECORD_SCRIPT = """
local cart, purchases, views, interest, sessions = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cart_ttl, purchases_ttl, views_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local views_max, purchases_max, tombstone_s = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function set_cart(item, signed)
  local current = redis.call('ZSCORE', cart, item)
  if current and math.abs(tonumber(current)) > math.abs(signed) then return end
  redis.call('ZADD', cart, signed, item)
end
local latest = nil
local applied = 0
for i = 7, #ARGV, 6 do
  local kind, item, ts = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if latest == nil or ts > latest then latest = ts end
  if kind == 'view' then
    redis.call('ZADD', views, 'GT', ts, item)
  elseif kind == 'add_to_cart' then
    set_cart(item, ts)
  elseif kind == 'remove_from_cart' then
    set_cart(item, -ts)
  elseif kind == 'purchase' then
    redis.call('ZADD', purchases, 'GT', ts, item)
    set_cart(item, -ts)
  end
  if ARGV[i + 3] ~= '' and tonumber(ARGV[i + 4]) > 0 then
    redis.call('HINCRBYFLOAT', interest, ARGV[i + 3], ARGV[i + 4])
  end
  if ARGV[i + 5] ~= '' then redis.call('ZADD', sessions, 'GT', ts, ARGV[i + 5]) end
  applied = applied + 1
end
if latest == nil then return 0 end
local function before(t) return '(' .. string.format('%.6f', t) end
redis.call('ZREMRANGEBYSCORE', cart, '(0', before(latest - cart_ttl))
redis.call('ZREMRANGEBYSCORE', cart, string.format('(%.6f', tombstone_s - latest), '(0')
redis.call('ZREMRANGEBYSCORE', views, '-inf', before(latest - views_ttl))
redis.call('ZREMRANGEBYRANK', views, 0, -views_max - 1)
redis.call('ZREMRANGEBYSCORE', purchases, '-inf', before(latest - purchases_ttl))
redis.call('ZREMRANGEBYRANK', purchases, 0, -purchases_max - 1)
redis.call('ZREMRANGEBYSCORE', sessions, '-inf', before(latest - purchases_ttl))
redis.call('EXPIRE', cart, cart_ttl)
redis.call('EXPIRE', views, views_ttl)
redis.call('EXPIRE', interest, views_ttl)
redis.call('EXPIRE', purchases, purchases_ttl)
redis.call('EXPIRE', sessions, purchases_ttl)
return applied
"""


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


def _by_subject(events: Iterable[EventLike]) -> list[tuple[SubjectKeys, str | None, list[EventLike]]]:
    """Events grouped by subject (first-seen order), each group sorted by time (stable)."""
    groups: dict[SubjectKeys, list[EventLike]] = {}
    for event in events:
        keys = subject_keys(user_id=event.user_id, session_id=event.session_id)
        if keys is not None:
            groups.setdefault(keys, []).append(event)
    return [
        (keys, group[0].user_id, sorted(group, key=lambda e: e.ts.timestamp()))
        for keys, group in groups.items()
    ]


async def record_events(
    client: Any,
    events: Sequence[EventLike],
    *,
    variant_of: Callable[[str], str],
    config: RealtimeConfig,
    category_of: Callable[[str], str | None] | None = None,
) -> int:
    """Apply accepted events to their shoppers' real-time state, then append them to the events stream.

    Parameters
    ----------
    client : redis.asyncio.Redis or RedisCluster
        The API's async client.
    events : sequence of EventLike
        Validated events, in the order they were received.
    variant_of : callable
        The variant (`treatment` / `holdout`) of a subject (user id, else session id), stored with each
        stream entry.
    config : RealtimeConfig
        TTLs, caps and the stream's length cap.
    category_of : callable, optional
        An item's category, or None when unknown; without it category interest is not recorded.

    Returns
    -------
    int
        How many events were recorded (all of them, or an exception and none in the stream).
    """
    if not events:
        return 0
    state = client.pipeline(transaction=False)
    for keys, user_id, group in _by_subject(events):
        args: list[str | int | float] = [
            config.cart_ttl_s,
            config.purchases_ttl_s,
            config.views_ttl_s,
            config.views_max,
            config.purchases_max,
            CART_TOMBSTONE_S,
        ]
        for event in group:
            category = (category_of(event.item_id) if category_of else None) or ""
            args += [
                event.event_type,
                event.item_id,
                repr(event.ts.timestamp()),
                category,
                INTEREST_WEIGHTS.get(event.event_type, 0.0),
                event.session_id if user_id else "",
            ]
        state.eval(RECORD_SCRIPT, len(keys.all), *keys.all, *args)
    await state.execute()
    # One transaction on one key: a request's events enter the stream all together or not at all.
    variants: dict[str, str] = {}
    stream = client.pipeline(transaction=True)
    for event in events:
        subject = event.user_id or event.session_id
        if subject not in variants:
            variants[subject] = variant_of(subject)
        stream.xadd(
            EVENTS_STREAM,
            stream_entry(event, variants[subject]),
            maxlen=config.stream_maxlen,
            approximate=True,
        )
    await stream.execute()
    return len(events)


def _scores(pairs: Iterable[tuple[bytes, float]]) -> dict[str, float]:
    return {member.decode(): float(score) for member, score in pairs}


async def read_state(client: Any, *, user_id: str | None, session_id: str | None) -> ShopperState:
    """The real-time state of a signed-in shopper (else of the session), in one round trip.

    Parameters
    ----------
    client : redis.asyncio.Redis or RedisCluster
        An async client.
    user_id, session_id : str or None
        The shopper; the session is read only for an anonymous visitor.

    Returns
    -------
    ShopperState
        Cart, recent purchases and recent views (item -> epoch seconds) and category interest; empty for
        an unknown subject.
    """
    keys = subject_keys(user_id=user_id, session_id=session_id)
    if keys is None:
        return EMPTY_STATE
    pipe = client.pipeline(transaction=True)
    queue_state_reads(pipe, keys)
    return state_from(await pipe.execute())


STATE_READS = 4


def queue_state_reads(pipe: Any, keys: SubjectKeys) -> None:
    """Queue the `STATE_READS` commands that read one subject's state onto `pipe` (so a caller can read
    it in the same round trip as other keys); `state_from` turns their replies into a state."""
    pipe.zrangebyscore(keys.cart, "(0", "+inf", withscores=True)
    pipe.zrange(keys.purchases, 0, -1, withscores=True)
    pipe.zrange(keys.views, 0, -1, withscores=True)
    pipe.hgetall(keys.interest)


def state_from(replies: list[Any]) -> ShopperState:
    cart, purchases, views, interest = replies
    return ShopperState(
        cart=_scores(cart),
        purchases=_scores(purchases),
        views=_scores(views),
        interest={k.decode(): float(v) for k, v in interest.items()},
    )


def state_from_flat(cart: list[bytes], purchases: list[bytes], interest: list[bytes]) -> ShopperState:
    """The state from a script's flat replies (member, score, member, score, ...; field, value, ...)."""
    if not (cart or purchases or interest):
        return EMPTY_STATE
    return ShopperState(
        cart=_flat_scores(cart),
        purchases=_flat_scores(purchases),
        views={},
        interest=_flat_scores(interest),
    )


def _flat_scores(flat: list[bytes]) -> dict[str, float]:
    return {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}


def erase_subject_keys(client_sync: Any, user_id: str) -> int:
    """Delete every real-time key of a shopper: their own and those of the sessions they used.

    Events of theirs still waiting in the stream are not touched here: the drain moves them into the lake,
    whose erasure covers them.

    Parameters
    ----------
    client_sync : redis.Redis or RedisCluster
        A blocking client.
    user_id : str
        The shopper.

    Returns
    -------
    int
        How many keys were deleted.
    """
    keys = user_keys(user_id)
    sessions = client_sync.zrange(keys.sessions, 0, -1)
    deleted = int(client_sync.delete(*keys.all))
    for session in sessions:  # one DEL per session: each session's keys are in their own slot
        deleted += int(client_sync.delete(*session_keys(session.decode()).all))
    return deleted


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


def stream_backlog(client_sync: Any) -> StreamBacklog:
    """The stream's backlog through a blocking client (the drain, the CLI)."""
    try:
        return _backlog(client_sync.xinfo_stream(EVENTS_STREAM), client_sync.xinfo_groups(EVENTS_STREAM))
    except ResponseError as exc:
        return _no_stream(exc)


async def stream_backlog_async(client: Any) -> StreamBacklog:
    """The stream's backlog through the API's async client (for `/metrics`)."""
    try:
        return _backlog(await client.xinfo_stream(EVENTS_STREAM), await client.xinfo_groups(EVENTS_STREAM))
    except ResponseError as exc:
        return _no_stream(exc)

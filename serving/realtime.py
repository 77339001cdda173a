"""Real-time shopper state: `POST /v1/events` writes it (`record_events`), the overlay of
`GET /v1/recommendations` and the audience promotion read it (`read_state`). Keys:
`carousel.cache.keys.state_keys`; the script that applies events: `carousel.cache.scripts.RECORD_EVENTS`.

A *subject* is a signed-in shopper (`{u:<user_id>}`) or, for an anonymous visitor, their session
(`{s:<session_id>}`); every key of one subject lives in one hash slot, so a read is one round trip::

    carousel:rt:{u:<user_id>}:cart        zset item -> +t while the item is in the cart (added at t, epoch
                                          seconds), -t once removed or bought at t (kept a day, see below);
                                          newest N of each kept
    carousel:rt:{u:<user_id>}:purchases   zset item -> time of its latest purchase (newest N kept)
    carousel:rt:{u:<user_id>}:views       zset item -> time of its latest view (newest N kept)
    carousel:rt:{u:<user_id>}:interest    hash category -> summed weight (view 1, add to cart 3, purchase 5)
    carousel:rt:{u:<user_id>}:sessions    zset session_id -> last seen: the sessions a signed-in shopper's
                                          events came from, so erasure also finds their anonymous state;
                                          the newest N kept, an older one's keys deleted as it goes
    carousel:rt:{s:<session_id>}:...      the same keys (without :sessions) for an anonymous visitor
    carousel:rt:{s:<session_id>}:owner    the shopper who signed in on the session (see below)

A signed-in shopper's events update their `{u:...}` keys only. Sign-in stitching (`stitch_sessions`): the
first time a session id arrives with a user id, the session claims that shopper as its owner (SET NX, so
it happens once, and a second shopper signing in on the same device later does not take the first one's
history), the session's state is applied to the shopper's keys as events would be (cart entries last
writer wins, views and purchases newest kept, interest added) and removed from the session, and a link
(session_id, user_id, ts) goes to the `carousel:links` stream, which the drain moves into the lake so that
the batch attributes the session's earlier anonymous events to the shopper. The two subjects live in
different hash slots, so the move is two steps, not one script: an anonymous event of the same session
arriving between them stays under the session. Each key expires after its TTL (settings `realtime_*_ttl_s`)
counted from the subject's latest write, and entries older than the TTL (measured from the subject's newest
event, so a late-arriving old batch never prunes newer state) are dropped on each write.

The cart is a last-writer-wins register per item: an event only changes an item's entry when it is at
least as recent as the entry, so an add_to_cart that arrives after a later removal or purchase of the
same item (out-of-order delivery from a browser or an app) does not put the item back. Removals are kept
as negative scores for a day for that comparison and are never read as cart content.

Category interest is filled when an item's department can be looked up: `record_events` takes an
optional `category_of` function (the API passes the live version's department map).

All state writes are idempotent except the interest weights (a replayed request adds them again), which
is why `record_events` writes the state first and appends a request's events to the stream last, in one
transaction: a request that fails before that transaction and is retried by the client leaves the state
as one delivery would and the stream with one copy of its events. (A client that retries after a 202
it did not receive sends its events twice: the contract has no idempotency key yet.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carousel.cache.client import AsyncRedis, text
from carousel.cache.keys import (
    EVENTS_STREAM,
    LINKS_STREAM,
    SubjectKeys,
    event_id_key,
    session_state_keys,
    shopper_state_keys,
    state_keys,
)
from carousel.cache.scripts import RECORD_EVENTS
from carousel.cache.stream import EventLike, stream_entry
from carousel.rules.segments import INTEREST_WEIGHTS
from configs.settings import Settings

# How long a cart removal is remembered to refuse an older add_to_cart arriving after it: longer than any
# client is expected to hold events back.
CART_TOMBSTONE_S = 86_400


@dataclass(frozen=True)
class ShopperState:
    """One subject's real-time state; every time is in epoch seconds (UTC)."""

    cart: dict[str, float]
    purchases: dict[str, float]
    views: dict[str, float]
    interest: dict[str, float] = field(default_factory=dict)


EMPTY_STATE = ShopperState(cart={}, purchases={}, views={})


@dataclass(frozen=True)
class RealtimeConfig:
    """The settings `record_events` applies (see `configs/defaults.toml`)."""

    cart_ttl_s: int
    views_ttl_s: int
    purchases_ttl_s: int
    views_max: int
    purchases_max: int
    cart_max: int
    sessions_max: int
    stream_maxlen: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RealtimeConfig:
        return cls(
            cart_ttl_s=settings.realtime_cart_ttl_s,
            views_ttl_s=settings.realtime_views_ttl_s,
            purchases_ttl_s=settings.realtime_purchases_ttl_s,
            views_max=settings.realtime_views_max,
            purchases_max=settings.realtime_purchases_max,
            cart_max=settings.realtime_cart_max,
            sessions_max=settings.realtime_sessions_max,
            stream_maxlen=settings.events_stream_maxlen,
        )


def _by_subject(events: Iterable[EventLike]) -> list[tuple[SubjectKeys, str | None, list[EventLike]]]:
    """Events grouped by subject (first-seen order), each group sorted by time (stable)."""
    groups: dict[SubjectKeys, list[EventLike]] = {}
    for event in events:
        keys = state_keys(user_id=event.user_id, session_id=event.session_id)
        if keys is not None:
            groups.setdefault(keys, []).append(event)
    return [
        (keys, group[0].user_id, sorted(group, key=lambda e: e.ts.timestamp()))
        for keys, group in groups.items()
    ]


async def record_events(
    client: AsyncRedis,
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
        args = _record_args(config)
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
        state.eval(RECORD_EVENTS, len(keys.all), *keys.all, *args)
    await forget_sessions(client, [session for dropped in await state.execute() for session in dropped])
    # One transaction on one key: a request's events enter the stream all together or not at all.
    variants: dict[str, str] = {}
    stream = client.pipeline(transaction=True)
    for event in events:
        subject = event.user_id or event.session_id
        if subject not in variants:
            variants[subject] = variant_of(subject)
        entry: dict[Any, Any] = stream_entry(event, variants[subject])
        stream.xadd(
            EVENTS_STREAM,
            entry,
            maxlen=config.stream_maxlen,
            approximate=True,
        )
    await stream.execute()
    return len(events)


async def claim_event_ids(client: AsyncRedis, event_ids: Sequence[str], *, ttl_s: int) -> set[str]:
    """The ids among `event_ids` never taken before, now taken for `ttl_s` (one SET NX each, pipelined;
    each key has its own slot, so this holds on a cluster). A retried request's events are recorded
    once: what it already delivered is claimed and skipped."""
    if not event_ids:
        return set()
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.set(event_id_key(event_id), "1", nx=True, ex=ttl_s)
    return {event_id for event_id, won in zip(event_ids, await pipe.execute(), strict=True) if won}


async def release_event_ids(client: AsyncRedis, event_ids: Iterable[str]) -> None:
    """Give back ids claimed by a request that then failed, so its retry is taken."""
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.delete(event_id_key(event_id))
    await pipe.execute()


async def stitch_sessions(
    client: AsyncRedis, sign_ins: Iterable[tuple[str, str]], *, config: RealtimeConfig, now: float
) -> int:
    """Join each session's real-time state to its shopper's the first time they are seen together.

    Parameters
    ----------
    client : redis.asyncio.Redis or RedisCluster
        The API's async client.
    sign_ins : iterable of (session_id, user_id)
        The pairs a request carries.
    config : RealtimeConfig
        TTLs and caps (the owner claim lasts as long as purchases are kept).
    now : float
        Epoch seconds of the link.

    Returns
    -------
    int
        How many sessions were joined to a shopper by this call.
    """
    pairs = sorted(set(sign_ins))
    if not pairs:
        return 0
    claim = client.pipeline(transaction=False)
    for session_id, user_id in pairs:
        claim.set(session_state_keys(session_id).owner, user_id, nx=True, ex=config.purchases_ttl_s)
    claimed = [pair for pair, won in zip(pairs, await claim.execute(), strict=True) if won]
    for session_id, user_id in claimed:
        session = session_state_keys(session_id)
        read = client.pipeline(transaction=False)
        read.zrange(session.cart, 0, -1, withscores=True)
        read.zrange(session.purchases, 0, -1, withscores=True)
        read.zrange(session.views, 0, -1, withscores=True)
        read.hgetall(session.interest)
        cart, purchases, views, interest = await read.execute()
        args = _state_as_events(session_id, _scores(cart), _scores(purchases), _scores(views), interest, now)
        user = shopper_state_keys(user_id)
        await forget_sessions(
            client, await client.eval(RECORD_EVENTS, len(user.all), *user.all, *_record_args(config), *args)
        )
        await client.delete(session.cart, session.purchases, session.views, session.interest)
        link: dict[Any, Any] = {"session_id": session_id, "user_id": user_id, "ts": repr(now)}
        await client.xadd(LINKS_STREAM, link, maxlen=config.stream_maxlen, approximate=True)
    return len(claimed)


async def forget_sessions(client: AsyncRedis, sessions: Iterable[bytes | str]) -> int:
    """Delete every key of these sessions, their owner claim included (a shopper's sessions dropped from
    their list by its count, or an erased shopper's): once a session is off the shopper's list, nothing
    else leads an erasure to it. Each session's keys share a hash slot of their own: one DEL each, sent
    together. Returns how many keys went."""
    doomed = [session_state_keys(text(session)).all for session in sessions]
    if not doomed:
        return 0  # the usual case: no pipeline for it
    pipe = client.pipeline(transaction=False)
    for keys in doomed:
        pipe.delete(*keys)
    return sum(int(n) for n in await pipe.execute())


def _state_as_events(
    session_id: str,
    cart: Mapping[str, float],
    purchases: Mapping[str, float],
    views: Mapping[str, float],
    interest: Mapping[bytes, bytes],
    now: float,
) -> list[str | float]:
    """A session's state as `RECORD_EVENTS` arguments: the events that would rebuild it (a removed cart
    item is a removal at its time), then its interest as weight-only entries."""
    args: list[str | float] = []
    rows = [("view", item, ts) for item, ts in views.items()]
    rows += [("add_to_cart" if ts > 0 else "remove_from_cart", item, abs(ts)) for item, ts in cart.items()]
    rows += [("purchase", item, ts) for item, ts in purchases.items()]
    for kind, item, ts in sorted(rows, key=lambda r: r[2]):
        args += [kind, item, repr(ts), "", 0.0, ""]
    for category, weight in interest.items():
        args += ["interest", "", repr(now), text(category), float(weight), ""]
    # The session is remembered with the shopper, so erasing the shopper finds it.
    args += ["link", "", repr(now), "", 0.0, session_id]
    return args


def _record_args(config: RealtimeConfig) -> list[str | int | float]:
    return [
        config.cart_ttl_s,
        config.purchases_ttl_s,
        config.views_ttl_s,
        config.views_max,
        config.purchases_max,
        CART_TOMBSTONE_S,
        config.cart_max,
        config.sessions_max,
    ]


def _scores(pairs: Iterable[tuple[bytes, float]]) -> dict[str, float]:
    return {member.decode(): float(score) for member, score in pairs}


async def read_state(client: AsyncRedis, *, user_id: str | None, session_id: str | None) -> ShopperState:
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
    keys = state_keys(user_id=user_id, session_id=session_id)
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


def state_from_flat(
    cart: list[bytes], purchases: list[bytes], interest: list[bytes], views: list[bytes]
) -> ShopperState:
    """The state from a script's flat replies (member, score, member, score, ...; field, value, ...)."""
    if not (cart or purchases or interest or views):
        return EMPTY_STATE
    return ShopperState(
        cart=_flat_scores(cart),
        purchases=_flat_scores(purchases),
        views=_flat_scores(views),
        interest=_flat_scores(interest),
    )


def _flat_scores(flat: list[bytes]) -> dict[str, float]:
    return {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}

"""`POST /v1/events`: storefront events in; the shopper's real-time state and the events stream updated.

The body is `{"events": [canonical events]}` (see the contract). A request is accepted whole or refused
whole: an unknown field, an identifier outside the API's pattern, an unknown event type, a quantity
below 1, a negative price, a timestamp more than `events_max_clock_skew_s` ahead of the server's clock
(or before 2000) or more than `events_max_per_request` events get 422 naming every bad field; a body over
`events_max_body_bytes` gets 413 before it is read further. Only `item_id`, `event_type` and a
`session_id` or `user_id` are required: `ts` defaults to the server's time, `quantity` to 1 and `price`
to the live catalog's (an item the catalog does not hold needs its price). Accepted events update the
real-time state (`serving/realtime.py`) and are appended to the `carousel:events` stream with the shopper's
variant; the `drain_events` stage of the refresh moves them into the lake. The answer is 202
`{"accepted": N}`.

Without the storefront token (a browser's request) a client address gets `events_browser_requests_per_minute`
requests a minute, a request counting once per session it names (429 past it, `serving.ratelimit`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from redis.exceptions import RedisError

from carousel.cache.client import async_client
from carousel.cache.keys import ERASURES_KEY, consent_key
from carousel.rules.erasure import erasure_digest
from carousel.rules.holdout import assign_variant
from configs.settings import Settings
from serving import audiences, realtime
from serving.auth import SHOPPER_TOKEN_HEADER, Caller, LockedOut, storefront_caller
from serving.catalog import EVENTS_WAIT_S
from serving.deps import SettingsDep
from serving.inputs import CONTEXT_PATTERN, ID_PATTERN
from serving.metrics import RATE_LIMITED
from serving.ratelimit import BrowserLimit, browser_limit
from serving.responses import (
    MAX_PROBLEMS,
    error_response,
    is_json,
    json_response,
    problems_response,
    wrong_content_type_response,
)
from serving.store import StoreUnavailable

# Writes get a longer timeout than the API's reads: a write abandoned after Redis applied it turns into
# a 503, and the client's retry would append the same events to the stream a second time.
WRITE_TIMEOUT_S = 2.0
# An int32 in the lake; far above any real basket line.
MAX_QUANTITY = 1_000_000
# The items table's cap: a larger price is a mistake or an attack (1e308 overflowed the lift report).
MAX_PRICE = 1e9
# No storefront event is older; the real-time state also relies on times being positive epoch seconds.
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# Country, device and referrer take the values the recommendations route accepts as request context.
ContextValue = Annotated[str, StringConstraints(pattern=CONTEXT_PATTERN)]
EventType = Literal["view", "add_to_cart", "remove_from_cart", "purchase"]


class PostedEvent(BaseModel):
    """One storefront event as posted: the canonical format, where a view (or any event) may leave out
    `ts` (the server's time), `quantity` (1), `price` (the live catalog's) and, for a signed-in shopper,
    `session_id` (one per shopper and UTC day). `user_id` is absent or null for anonymous visitors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier | None = Field(
        None, description="the client's id for the event: a retried event with the same id is taken once"
    )
    user_id: Identifier | None = None
    session_id: Identifier | None = None
    item_id: Identifier
    event_type: EventType
    ts: datetime | None = Field(None, description="UTC timestamp (ISO 8601; one without a zone is UTC)")
    quantity: int = Field(1, ge=1, le=MAX_QUANTITY, strict=True)
    price: float | None = Field(None, ge=0, le=MAX_PRICE, allow_inf_nan=False, description="unit price")
    country: ContextValue | None = None
    device: ContextValue | None = None
    referrer: ContextValue | None = None

    @field_validator("ts")
    @classmethod
    def _in_utc(cls, ts: datetime | None) -> datetime | None:
        if ts is None:
            return None
        # As the lake does: a timestamp without a zone is UTC.
        ts = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
        if ts < EARLIEST_TS:
            raise ValueError(f"is before {EARLIEST_TS.date().isoformat()}: not a storefront event time")
        return ts

    @model_validator(mode="after")
    def _has_subject(self) -> PostedEvent:
        if self.session_id is None and self.user_id is None:
            raise ValueError("needs a session_id or a user_id")
        return self


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """A posted event with its defaults filled in: the canonical event the state and the lake get."""

    user_id: str | None
    session_id: str
    item_id: str
    event_type: str
    ts: datetime
    quantity: int
    price: float
    country: str | None
    device: str | None
    referrer: str | None


def _completed(
    events: list[PostedEvent], *, now: datetime, price_of: Callable[[str], float | None]
) -> tuple[list[AcceptedEvent], list[tuple[tuple[str | int, ...], str]]]:
    """The events with their defaults, and a problem for each one whose price cannot be filled."""
    accepted: list[AcceptedEvent] = []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, event in enumerate(events):
        price = event.price if event.price is not None else price_of(event.item_id)
        if price is None:
            problems.append(
                (
                    ("events", i, "price"),
                    f"is required: item {event.item_id!r} is not in the live catalog to take its price from",
                )
            )
            continue
        ts = event.ts or now
        session_id = event.session_id or f"{event.user_id}:{ts:%Y%m%d}"
        accepted.append(
            AcceptedEvent(
                event.user_id,
                session_id,
                event.item_id,
                event.event_type,
                ts,
                event.quantity,
                price,
                event.country,
                event.device,
                event.referrer,
            )
        )
    return accepted, problems


class EventBatch(BaseModel):
    """The request body."""

    model_config = ConfigDict(extra="forbid")

    events: list[PostedEvent]


class _CappedBodyRequest(Request):
    """A request whose body is refused with 413 once it exceeds `events_max_body_bytes`, whether the size
    is declared (Content-Length) or not (chunked), so an oversized body is never held in memory; and with
    408 when it has not fully arrived within `events_body_timeout_s` (a client that sends fewer bytes than
    it declared would otherwise hold its connection and this request open for good)."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            settings = self.app.state.settings
            limit: int = settings.events_max_body_bytes
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise HTTPException(413, f"request body is {declared} bytes; the limit is {limit}")
            chunks, size = [], 0
            try:
                async with asyncio.timeout(settings.events_body_timeout_s):
                    async for chunk in self.stream():
                        size += len(chunk)
                        if size > limit:
                            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
                        chunks.append(chunk)
            except TimeoutError:
                raise HTTPException(
                    408, f"the request body did not arrive within {settings.events_body_timeout_s:g}s"
                ) from None
            self._body = b"".join(chunks)
        return self._body


class _CappedBodyRoute(APIRoute):
    """The events route's request handling with the cheap checks first: content type, the body's size
    and arrival, JSON syntax, the number of events and their field names, then a browser's rate. Only a
    body that passes them reaches pydantic's element-by-element validation, so the work a request can
    cause is bounded by the caps, not by what a client sends."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def screened(request: Request) -> Response:
            capped = _CappedBodyRequest(request.scope, request.receive)
            # The body is read first: a client that sent it whole and hung up has still posted its events.
            refused = await _screen(capped) or await _limited(capped)
            return refused if refused is not None else await handler(capped)

        return screened


async def _limited(request: Request) -> Response | None:
    """A 429 for a browser over its rate (`serving.ratelimit`), or for an address locked out for its wrong
    tokens, before its events are validated and recorded; else None, the caller kept on the request for
    the handler. A request counts once for each
    session it names: a browser posts its own visit, and one body must not open hundreds of them."""
    settings = request.app.state.settings
    address = request.client.host if request.client else None
    try:
        caller = await storefront_caller(
            request.app.state,
            address,
            request.headers.get("authorization"),
            request.headers.get(SHOPPER_TOKEN_HEADER),
            now=datetime.now(UTC).timestamp(),
        )
    except LockedOut as locked:
        return locked.response()
    request.state.caller = caller
    limit: BrowserLimit | None = request.app.state.browser_limit
    if caller.storefront or limit is None:
        return None
    per_minute = settings.events_browser_requests_per_minute
    sessions = _sessions_named(getattr(request, "_json", None))
    if sessions > per_minute:
        raise _refuse(
            [
                (
                    ("events",),
                    f"names {sessions} sessions; without the storefront token a client may post {per_minute} "
                    "a minute: post them from the store's servers",
                )
            ]
        )
    try:
        wait_s = await limit.retry_after(address, cost=max(1, sessions))
    except (RedisError, OSError):
        # Redis unreachable: the events cannot be recorded either, and the handler answers 503 for that.
        return None
    if wait_s is None:
        return None
    RATE_LIMITED.inc()
    refused = error_response(
        429,
        f"more than {per_minute} event requests a minute from this address (a request counts once per "
        f"session it names); retry in {wait_s}s, or post from the store's servers with the storefront token",
    )
    refused.headers["Retry-After"] = str(wait_s)
    return refused


def _sessions_named(body: Any) -> int:
    """How many distinct session ids a parsed body's events name (0 for a body validation will refuse)."""
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return 0
    return len(
        {e["session_id"] for e in events if isinstance(e, dict) and isinstance(e.get("session_id"), str)}
    )


_FIELDS = frozenset(PostedEvent.model_fields)


async def _screen(request: _CappedBodyRequest) -> Response | None:
    """A 4xx for a body that fails a cheap check, else None (the body parsed and kept on the request)."""
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        return wrong_content_type_response(content_type)
    body = await request.body()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error_response(400, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    # FastAPI reads the body through `request.json()`: it gets this parse, not a second one.
    request._json = parsed
    events = parsed.get("events") if isinstance(parsed, dict) else None
    if not isinstance(events, list):
        return None  # the model's validation names what is wrong, at the cost of one small check
    cap = request.app.state.settings.events_max_per_request
    if len(events) > cap:
        raise _refuse([(("events",), f"holds {len(events)} events; at most {cap} per request")])
    # The first problems are named and the rest only counted: a body of thousands of unknown fields
    # costs a set difference per event, not an error object per field.
    named: list[dict[str, str]] = []
    count = 0
    for i, event in enumerate(events):
        extra = event.keys() - _FIELDS if isinstance(event, dict) else ()
        count += len(extra)
        for name in sorted(extra)[: MAX_PROBLEMS - len(named)]:
            named.append({"field": f"events.{i}.{name}", "problem": "unknown field"})
    return problems_response(named, total=count) if count else None


@asynccontextmanager
async def _events_client(app: FastAPI) -> AsyncIterator[None]:
    client = async_client(app.state.settings, socket_timeout_s=WRITE_TIMEOUT_S)
    app.state.events_client = client
    app.state.browser_limit = limit = browser_limit(app.state.settings, client)
    try:
        yield
    finally:
        if limit is not None:
            await limit.aclose()
        await client.aclose()


async def _get_events_client(request: Request) -> Any:
    return request.app.state.events_client


EventsClientDep = Annotated[Any, Depends(_get_events_client)]

router = APIRouter(prefix="/v1", tags=["events"], route_class=_CappedBodyRoute, lifespan=_events_client)


def _refuse(problems: list[tuple[tuple[str | int, ...], str]]) -> RequestValidationError:
    """A validation error in the shape pydantic gives, so the app's 422 handler names the fields."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None} for loc, msg in problems]
    )


@router.post("/events", status_code=202)
async def post_events(
    request: Request, batch: EventBatch, settings: SettingsDep, client: EventsClientDep
) -> Response:
    """Accept storefront events: real-time state and the events stream are updated before answering."""
    events = batch.events
    caller: Caller = request.state.caller
    forged = [i for i, e in enumerate(events) if e.user_id is not None and not caller.speaks_for(e.user_id)]
    if forged:
        # Anyone could otherwise fill any shopper's cart (and so their cart reminder email).
        refused = error_response(
            401,
            "a shopper's events need the storefront token or that shopper's token (X-Shopper-Token): "
            + ", ".join(f"events.{i}.user_id" for i in forged[:20]),
        )
        refused.headers["WWW-Authenticate"] = "Bearer"
        return refused
    now = datetime.now(UTC)
    skew = settings.events_max_clock_skew_s
    latest = now + timedelta(seconds=skew)
    future = [i for i, event in enumerate(events) if event.ts is not None and event.ts > latest]
    if future:
        raise _refuse(
            [
                (
                    ("events", i, "ts"),
                    f"{ts.isoformat()} is in the future (clock skew allowed: {skew}s)",
                )
                for i in future[:20]
                if (ts := events[i].ts) is not None
            ]
        )
    store, catalog = request.app.state.store, request.app.state.catalog
    try:
        # The live version's catalog gives views their department (category interest) and events sent
        # without a price the catalog's; without one (nothing published, Redis slow) events that carry
        # their price are still recorded, just without interest.
        version = await store.live_version()
        if version is not None:
            await catalog.follow(store.client, version, wait_s=EVENTS_WAIT_S)
    except StoreUnavailable:
        pass
    accepted, unpriced = _completed(events, now=now, price_of=catalog.price)
    if unpriced:
        raise _refuse(unpriced[:20])

    def variant_of(subject: str) -> str:
        return assign_variant(subject, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)

    config = realtime.RealtimeConfig.from_settings(settings)
    try:
        # An erased shopper's events are dropped: a storefront that still sends them must not bring the
        # shopper back (real-time state, cart emails, the lake).
        # A shopper who withdrew personalization is not tracked: only their purchases are kept.
        erased, untracked = await _not_to_track(client, {e.user_id for e in events if e.user_id}, settings)
        kept = [
            (p, a)
            for p, a in zip(events, accepted, strict=True)
            if p.user_id not in erased and (p.user_id not in untracked or p.event_type == "purchase")
        ]
        events, accepted = [p for p, _ in kept], [a for _, a in kept]
        claimed, accepted = await _first_deliveries(client, events, accepted, settings.events_dedupe_ttl_s)
    except (RedisError, OSError) as exc:
        return _unavailable(exc)
    duplicates = len(events) - len(accepted)
    try:
        recorded = await realtime.record_events(
            client, accepted, variant_of=variant_of, config=config, category_of=catalog.department
        )
        # A session posted with a shopper for the first time: what the visitor did (this request's guest
        # events included) joins the shopper. The join goes by the events' times, so its order with the
        # shopper's own events does not matter.
        sign_ins = [(e.session_id, e.user_id) for e in events if e.user_id and e.session_id]
        await realtime.stitch_sessions(client, sign_ins, config=config, now=now.timestamp())
        await audiences.note_carts(client, accepted)
    except (RedisError, OSError) as exc:
        # The retry must be taken: the ids this request claimed are given back.
        with contextlib.suppress(RedisError, OSError):
            await realtime.release_event_ids(client, claimed)
        return _unavailable(exc)
    answer = {"accepted": recorded, "duplicates": duplicates}
    if erased:
        answer["erased_shoppers_dropped"] = sum(1 for e in batch.events if e.user_id in erased)
    if untracked:
        answer["not_consented_dropped"] = sum(
            1 for e in batch.events if e.user_id in untracked and e.event_type != "purchase"
        )
    return json_response(answer, status_code=202)


async def _not_to_track(client: Any, user_ids: set[str], settings: Settings) -> tuple[set[str], set[str]]:
    """In one round trip, the shoppers among `user_ids` who were erased, and those (not erased) whose
    consent record withdraws personalization: their browsing (views, carts) is not stored at all; their
    purchases are, as the store's sales (bestsellers, the lift report), and the batch never models them."""
    if not user_ids:
        return set(), set()
    ordered = sorted(user_ids)
    salt = settings.erasure_salt_value()
    pipe = client.pipeline(transaction=False)
    pipe.smismember(ERASURES_KEY, [erasure_digest(u, salt) for u in ordered])
    for user in ordered:
        pipe.hget(consent_key(user), "personalization")
    found, *flags = await pipe.execute()
    erased = {user for user, hit in zip(ordered, found, strict=True) if hit}
    withdrawn = {user for user, flag in zip(ordered, flags, strict=True) if flag in (b"0", "0")}
    return erased, withdrawn - erased


async def _first_deliveries(
    client: Any, posted: list[PostedEvent], accepted: list[AcceptedEvent], ttl_s: int
) -> tuple[list[str], list[AcceptedEvent]]:
    """The ids this request claims, and the events to record: those without an `event_id`, and those
    whose id neither an earlier request nor an earlier event of this one delivered."""
    ids = list(dict.fromkeys(e.event_id for e in posted if e.event_id))
    fresh = await realtime.claim_event_ids(client, ids, ttl_s=ttl_s)
    kept, taken = [], set()
    for event, complete in zip(posted, accepted, strict=True):
        if event.event_id is not None:
            if event.event_id not in fresh or event.event_id in taken:
                continue
            taken.add(event.event_id)
        kept.append(complete)
    return list(fresh), kept


def _unavailable(exc: Exception) -> Response:
    response = error_response(503, f"events could not be stored ({type(exc).__name__}); retry later")
    response.headers["Retry-After"] = "1"
    return response

"""`GET /v1/recommendations`: the stored list for one shopper with the real-time overlay, and the
chain of fallbacks that keeps it answering.

Known, consenting shopper with a personal list -> `personal`, with the overlay (recent purchases
removed, an abandoned cart brought forward with its complements, complements of a recent purchase);
otherwise the segment list for the request's context (country, then device, then referrer) ->
`segment`; otherwise the global list -> `global`. Holdout shoppers get the non-personal list without
overlay. When Redis cannot be read (stopped, or not answering in time, or the breaker is open) the last
global list this process saw is served (`fallback`), then the one bundled with the package. Items
marked unavailable are skipped at read time; the stored overflow refills the list.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import Headers, QueryParams, State
from starlette.types import Receive, Scope, Send

from carousel.cache.catalog import CATALOG_FIELDS
from carousel.cache.payload import decode_items, iter_items
from carousel.rules.holdout import HOLDOUT, assign_variant
from carousel.rules.segments import CONTEXT_DIMENSIONS, GLOBAL_SEGMENT, segment_order
from carousel.rules.sessions import (
    PERSONAL_WEIGHT,
    SEGMENT_WEIGHT,
    Neighbours,
    Placed,
    neighbours,
    placed,
    session_anchors,
    session_list,
)
from serving import metrics, realtime
from serving.auth import SHOPPER_TOKEN_HEADER, LockedOut, storefront_caller
from serving.catalog import Catalog
from serving.inputs import CONTEXT_PATTERN, ID_PATTERN
from serving.overlay import EMPTY_TRIGGERS, apply_overlay, triggers
from serving.responses import error_response, json_response, validation_error_response
from serving.stock import Availability, AvailabilityCache
from serving.store import IMMUTABLE_CACHE_SIZE, ListStore, StoreUnavailable

router = APIRouter(prefix="/v1", tags=["recommendations"])


class RecommendationQuery(BaseModel):
    """The query string, validated as one model in one pydantic-core pass. (Declared as FastAPI
    parameters, the same checks cost more than the route's own work in per-parameter dependency
    solving.)"""

    model_config = ConfigDict(extra="ignore")

    user_id: str | None = Field(None, pattern=ID_PATTERN, description="the shopper; absent for anonymous")
    session_id: str | None = Field(None, pattern=ID_PATTERN)
    placement: str = Field("home", pattern=r"^[a-z0-9_\-]{1,32}$")
    n: int = Field(10, ge=1, le=100)
    country: str | None = Field(None, pattern=CONTEXT_PATTERN)
    device: str | None = Field(None, pattern=CONTEXT_PATTERN)
    referrer: str | None = Field(None, pattern=CONTEXT_PATTERN)
    shopper_token: str | None = Field(
        None,
        max_length=512,
        description="a shopper token for user_id, when the X-Shopper-Token header cannot be sent",
    )
    fields: str | None = Field(
        None,
        pattern=r"^[a-z_]{1,32}(,[a-z_]{1,32}){0,15}$",
        description=f"item attributes to add, comma-separated: {', '.join(CATALOG_FIELDS)}",
    )

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: str | None) -> str | None:
        unknown = [f for f in (fields or "").split(",") if f and f not in CATALOG_FIELDS]
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}; the catalog has {', '.join(CATALOG_FIELDS)}"
            )
        return fields


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The model's fields as OpenAPI query parameters (for the docs and for schema-driven clients)."""
    properties = model.model_json_schema()["properties"]
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": prop.get("description", ""),
            "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
        }
        for name, prop in properties.items()
    ]


def _validated(params: Mapping[str, str]) -> RecommendationQuery:
    try:
        # From a dict: pydantic reads another mapping through `Mapping.get`, a KeyError raised and caught
        # per absent parameter (2.5 of 4.2 µs).
        return RecommendationQuery.model_validate(dict(params.items()))
    except ValidationError as exc:
        problems = [{"loc": ("query", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise RequestValidationError(problems) from None


ROUTE = "/v1/recommendations"


@router.get("/recommendations", openapi_extra={"parameters": _parameters(RecommendationQuery)})
async def recommendations(request: Request) -> Response:
    """The ranked list for one shopper or anonymous visitor, every item with a reason."""
    client = request.client.host if request.client else None
    return await respond(request.app.state, request.query_params, request.headers, client)


async def answer(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /v1/recommendations` answered straight from the ASGI call, ahead of FastAPI's and
    Starlette's layers (routing, request objects, middleware: they cost this route more than its own
    work, docs/performance.md); `serving.app.CarouselApp` sends the route here, and its docs stay on
    the router. An unexpected exception gets a 500 and goes on to the server's log, as Starlette's
    server-error middleware would do."""
    try:
        client = scope.get("client")
        response = await respond(
            state, QueryParams(scope["query_string"]), Headers(scope=scope), client[0] if client else None
        )
    except RequestValidationError as exc:
        response = validation_error_response(exc)
    except Exception:
        await error_response(500, "internal server error")(scope, receive, send)
        raise
    await response(scope, receive, send)


async def respond(
    state: State, params: Mapping[str, str], headers: Mapping[str, str], client: str | None
) -> Response:
    """The route's answer from the app's state, the query string (parsed, not yet validated), the
    request's headers and the client's address."""
    started = time.perf_counter()
    query = _validated(params)
    settings, store = state.settings, state.store
    if query.user_id:
        token = query.shopper_token or headers.get(SHOPPER_TOKEN_HEADER)
        try:
            caller = await storefront_caller(
                state, client, headers.get("authorization"), token, now=time.time()
            )
        except LockedOut as locked:
            return locked.response()
        if not caller.speaks_for(query.user_id):
            # Nobody may read a shopper's list (and, through its reasons, their history) without the
            # storefront token or that shopper's token: the request is served as an anonymous one.
            query = query.model_copy(update={"user_id": None})
    subject = query.user_id or query.session_id or "anonymous"
    variant = assign_variant(subject, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
    try:
        answer = await _from_redis(state, store, query, holdout=variant == HOLDOUT)
    except StoreUnavailable:
        metrics.FALLBACKS.labels(kind="last_global").inc()
        answer = _Answer(state.fallbacks.items()[: query.n], "fallback", None, None)
    _observe_breaker(store)
    if answer is None:
        return error_response(503, "no recommendation version has been published yet")
    items = answer.items
    if query.fields:
        items = _with_attributes(items, query.fields.split(","), state.catalog, state.availability)
    _latency(answer.source).observe(time.perf_counter() - started)
    return json_response(
        {
            "items": items,
            "source": answer.source,
            "variant": variant,
            "placement": query.placement,
            "version": answer.version,
            "generated_at": answer.generated_at,
            "stale": _is_stale(answer.generated_at, settings.stale_after_s),
        }
    )


def _with_attributes(
    items: list[dict[str, Any]], fields: list[str], catalog: Catalog, availability: AvailabilityCache
) -> list[dict[str, Any]]:
    """Each item with the asked attributes of the live catalog (null where it has none); the price is
    the current override (`PUT /v1/items/{id}`) where one is set."""
    prices = availability.last.prices
    out = []
    for item in items:
        attributes = catalog.attributes(item["item_id"]) or {}
        extra = {f: attributes.get(f) for f in fields}
        if "price" in extra and item["item_id"] in prices:
            extra["price"] = prices[item["item_id"]]
        out.append({**item, **extra})
    return out


class _Answer:
    __slots__ = ("generated_at", "items", "source", "version")

    def __init__(
        self, items: list[dict[str, Any]], source: str, version: str | None, generated_at: str | None
    ) -> None:
        self.items, self.source, self.version, self.generated_at = items, source, version, generated_at


async def _from_redis(
    app_state: State, store: ListStore, query: RecommendationQuery, *, holdout: bool
) -> _Answer | None:
    settings = app_state.settings
    version = await store.live_version()
    if version is None:
        return None
    meta = await store.version_meta(version) or {}
    base = str(meta.get("base") or version)
    availability: Availability = await app_state.availability.get(store.call)
    catalog: Catalog = app_state.catalog
    # Only a process holding no catalog yet waits for one, and no longer than a Redis read may take.
    await catalog.follow(store.client, version, wait_s=0.0 if catalog.version else store.deadline_s)
    payload, source = None, "global"
    state = realtime.EMPTY_STATE
    if not holdout and (query.user_id or query.session_id):
        # List, consent and real-time state (or a visitor's session state) in one round trip.
        payload, personalization, state = await store.shopper(version, base, query.user_id, query.session_id)
        if personalization is False:
            # No personalization consent: neither the personal list nor the real-time overlay.
            payload, state, holdout = None, realtime.EMPTY_STATE, True
        source = "personal"
    if payload is None:
        context = {d: getattr(query, d) for d in CONTEXT_DIMENSIONS}
        payload, source = await _segment_for(store, version, segment_order(state.interest, context))
        if source == "global" and payload:
            app_state.fallbacks.remember(version, payload)
    if not payload:
        stored: Iterator[dict[str, Any]] = iter(())
    elif source == "personal":
        stored = iter_items(payload)  # read once: decoded lazily, as far as the answer needs
    else:
        stored = iter(_decoded(payload))
    fired = EMPTY_TRIGGERS
    if state.cart or state.purchases:
        fired = triggers(
            state.cart, state.purchases, now=time.time(), cart_abandon_after_s=settings.cart_abandon_after_s
        )
    # The current session's items pull in their similar items: a visitor's views, cart and purchases;
    # a known shopper's views (their cart and purchases are the overlay's).
    personal = source == "personal"
    if personal:
        anchors = session_anchors(state.views, {}, {}, window_s=settings.session_window_s)
    else:
        anchors = session_anchors(
            state.views, state.cart, state.purchases, window_s=settings.session_window_s
        )
    if anchors:
        seen = state.purchases.keys() if personal else {a.item_id for a in anchors} | state.purchases.keys()
        # A segment list is prepared once per version; a shopper's own list is read here, once.
        fill = _placed(payload) if payload and not personal else placed(stored)
        stored = iter(
            session_list(
                anchors,
                await _neighbours_of(store, version, base, [a.item_id for a in anchors]),
                fill,
                # Room for what the overlay puts in front (and removes from the rest as repeats).
                n=query.n + 3 * len(fired.abandoned_cart) + 4,
                exclude=seen,
                unavailable=availability.unavailable,
                title_of=catalog.title,
                segment_weight=PERSONAL_WEIGHT if personal else SEGMENT_WEIGHT,
            )
        )
        source = "personal" if personal else "session"
    complements: dict[str, Sequence[dict[str, Any]]] = {}
    if fired.anchors:
        complements = await _similar_lists(store, version, base, fired.anchors)
    items = apply_overlay(
        stored,
        fired=fired,
        purchased=state.purchases,
        complements=complements,
        unavailable=availability.unavailable,
        n=query.n,
    )
    if not items and source != "global":
        # Everything filtered away (a tiny segment, all bought): the global list still answers.
        glob = await store.segment_list(version, GLOBAL_SEGMENT)
        items = [
            i for i in (iter_items(glob) if glob else ()) if i["item_id"] not in availability.unavailable
        ][: query.n]
        source = "global"
    return _Answer(items, source, version, meta.get("generated_at"))


async def _segment_for(store: ListStore, version: str, order: list[str]) -> tuple[bytes | None, str]:
    """The first stored list of `order` (`carousel.rules.segments.segment_order`) and its source."""
    for segment in order:
        payload = await store.segment_list(version, segment)
        if payload is not None:
            return payload, "global" if segment == GLOBAL_SEGMENT else "segment"
    return None, "global"


async def _similar_lists(
    store: ListStore, version: str, base: str, anchors: list[str]
) -> dict[str, Sequence[dict[str, Any]]]:
    """The similar-item lists of `anchors`, decoded."""
    return {a: _decoded(p) for a, p in (await _item_lists(store, version, base, anchors)).items()}


async def _neighbours_of(
    store: ListStore, version: str, base: str, anchors: list[str]
) -> dict[str, Neighbours]:
    """The similar items of `anchors` as the session list reads them."""
    return {a: _neighbours(p) for a, p in (await _item_lists(store, version, base, anchors)).items()}


async def _item_lists(store: ListStore, version: str, base: str, anchors: list[str]) -> dict[str, bytes]:
    """The stored similar-item lists of `anchors` that exist (read once per version, then from the
    store's memory: awaited one by one, since a task per list would cost more than the reads, which
    are nearly always cached)."""
    lists = [await store.item_list(version, base, item) for item in anchors]
    return {a: p for a, p in zip(anchors, lists, strict=True) if p}


@lru_cache(maxsize=IMMUTABLE_CACHE_SIZE)
def _neighbours(payload: bytes) -> Neighbours:
    """A similar-item list prepared for session lists, once per stored list (as `_decoded`)."""
    return neighbours(_decoded(payload))


@lru_cache(maxsize=IMMUTABLE_CACHE_SIZE)
def _placed(payload: bytes) -> Placed:
    """A segment list prepared for session lists, once per stored list (as `_decoded`)."""
    return placed(_decoded(payload))


@lru_cache(maxsize=IMMUTABLE_CACHE_SIZE)
def _decoded(payload: bytes) -> tuple[dict[str, Any], ...]:
    """A segment or similar-item list's items, decoded once. The store hands out the same bytes object
    for a version's list every time (`RedisListStore`), so the lookup costs no hashing after the first;
    the items are shared between requests and never changed (the overlay and `fields=` build new ones)."""
    return tuple(decode_items(payload))


@cache
def _latency(source: str) -> Any:
    """The route's latency histogram for one source (label lookups cost more than the observation)."""
    return metrics.LATENCY.labels(route=ROUTE, source=source)


def _observe_breaker(store: ListStore) -> None:
    breaker = getattr(store, "breaker", None)
    if breaker is None:
        return
    metrics.BREAKER_OPEN.set(1.0 if breaker.state == "open" else 0.0)
    opened = breaker.take_new_openings()
    if opened:
        metrics.BREAKER_OPENED.inc(opened)


def _is_stale(generated_at: str | None, stale_after_s: int) -> bool:
    if not generated_at:
        return True
    return time.time() - _epoch(generated_at) > stale_after_s


@lru_cache(maxsize=8)
def _epoch(generated_at: str) -> float:
    """A version's `generated_at` in epoch seconds, parsed once (every request of the version asks)."""
    return datetime.fromisoformat(generated_at).timestamp()

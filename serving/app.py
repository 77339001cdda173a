"""The FastAPI application: `create_app(settings)` wires routers, the Redis list store and errors.

Run with `carousel serve` (uvicorn). Bad input gets a 4xx JSON body naming the field, never a 5xx.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from carousel.cache.client import async_client, text
from carousel.cache.keys import LIVE_KEY
from carousel.cache.memory import memory_warnings, read_memory_async
from configs.settings import Settings, get_settings
from serving import metrics
from serving.auth import MetricsDep, check_tokens_configured
from serving.budget import RequestBudget
from serving.catalog import Catalog
from serving.fallback import FallbackLists
from serving.ratelimit import failed_credentials
from serving.responses import (
    error_response,
    is_json,
    validation_error_response,
    wrong_content_type_response,
)
from serving.routes import audiences, events, health, items, ops, ops_access, recommendations, shop, users
from serving.routes import lift as lift_routes
from serving.routes.ops_access import OperatorOnly
from serving.stock import AvailabilityCache
from serving.store import CircuitBreaker, RedisListStore, StoreUnavailable

# Admin writes (consent, erasure, stock) may take longer than a list read but must not hang either.
ADMIN_TIMEOUT_S = 5.0
# Connecting to a cluster's nodes and loading the scripts, once at start, off any request's deadline.
WARM_UP_TIMEOUT_S = 5.0


async def _load_catalog(store: RedisListStore, catalog: Catalog) -> None:
    """The live version's catalog before the first request (best effort, as the warm-up)."""
    try:
        # Read directly, not through `live_version`, which would hold "nothing live" for a second.
        raw = await store.call(lambda: store.client.get(LIVE_KEY))
    except StoreUnavailable:
        return
    if raw:
        await catalog.follow(store.client, text(raw), wait_s=WARM_UP_TIMEOUT_S)


class CarouselApp(FastAPI):
    """The API: `GET /v1/recommendations`, the storefront's hot route, goes straight to
    `recommendations.answer`; everything else (that route's docs included) through FastAPI as usual.
    `fast_path = False` routes it like any other request (a test compares both)."""

    fast_path = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path and scope["type"] == "http" and scope["path"] == recommendations.ROUTE:
            if scope["method"] == "GET":
                await recommendations.answer(self.state, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_tokens_configured(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_client(settings)
        # The deadline covers a whole operation (a read may need a reconnect): twice the socket timeout.
        store = RedisListStore(
            client,
            deadline_s=2 * settings.redis_socket_timeout_s + settings.redis_connect_timeout_s,
            breaker=CircuitBreaker(failures=3, reset_after_s=2.0),
        )
        problem = await store.warm_up(timeout_s=WARM_UP_TIMEOUT_S)
        if problem is not None:
            print(
                f"carousel: Redis not ready at start ({problem}); serving fallbacks until it is",
                file=sys.stderr,
            )
        else:
            await _load_catalog(store, app.state.catalog)
            # Said at start too: a Redis of the store's own that may evict the lists is found before
            # shoppers get fallbacks, not after.
            with contextlib.suppress(RedisError, OSError):
                for warning in memory_warnings(await read_memory_async(client)):
                    print(f"carousel: WARNING Redis memory: {warning}", file=sys.stderr)
        app.state.store = store
        app.state.availability = AvailabilityCache(client)
        app.state.admin_redis = async_client(settings, socket_timeout_s=ADMIN_TIMEOUT_S)
        app.state.failed_credentials = guard = failed_credentials(settings, app.state.admin_redis)
        try:
            yield
        finally:
            if guard is not None:
                await guard.aclose()
            await store.close()
            await app.state.admin_redis.aclose()

    # The API docs are served by `ops_access.docs_router`, behind the operators' check.
    app = CarouselApp(
        title="carousel", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.fallbacks = FallbackLists(settings.var_dir)
    app.state.catalog = Catalog()
    # Every route but the storefront's gets a time budget. That route's work is bounded already (each
    # Redis read has its deadline, lists are at most 100 items), and the budget's timer and send wrapper
    # were a tenth of its worker's time (`bench serve --profile`).
    app.add_middleware(RequestBudget, budget_s=settings.request_budget_s)
    app.include_router(recommendations.router)
    app.include_router(health.router)
    app.include_router(items.router)
    app.include_router(items.admin_router)
    app.include_router(users.router)
    app.include_router(audiences.router)
    app.include_router(events.router)
    app.include_router(ops.router)
    app.include_router(lift_routes.router)
    app.include_router(ops_access.router)
    app.include_router(ops_access.docs_router)
    if settings.demo:
        # The demo storefront lists shoppers (ids, country, consent, variant): never outside the demo.
        app.include_router(shop.router)

    @app.get("/metrics", include_in_schema=False, dependencies=[MetricsDep])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # Each run's Great Expectations Data Docs, as written by the output gate.
    docs_root = settings.quality_dir / "runs"
    docs_root.mkdir(parents=True, exist_ok=True)
    app.mount(
        "/ops/quality",
        OperatorOnly(StaticFiles(directory=docs_root, html=True)),  # type: ignore[arg-type]
        name="data-docs",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        content_type = request.headers.get("content-type", "")
        body_refused = any(e["loc"][:1] == ("body",) for e in exc.errors())
        sent_body = (
            request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        )
        if body_refused and sent_body and not is_json(content_type):
            return wrong_content_type_response(content_type)
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # WWW-Authenticate, a login redirect's Location
        return response

    return app

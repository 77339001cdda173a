"""The FastAPI application: `create_app(settings)` wires routers, the Redis list store and errors.

Run with `carousel serve` (uvicorn). Bad input gets a 4xx JSON body naming the field, never a 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from carousel.redis_conn import async_client
from configs.settings import Settings, get_settings
from serving.responses import error_response
from serving.routes import health, ops, recommendations
from serving.store import RedisListStore


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = RedisListStore(async_client(settings))
        app.state.store = store
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(title="carousel", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(ops.router)
    # Each run's Great Expectations Data Docs, as written by the output gate.
    docs_root = settings.quality_dir / "runs"
    docs_root.mkdir(parents=True, exist_ok=True)
    app.mount("/ops/quality", StaticFiles(directory=docs_root, html=True), name="data-docs")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "problem": err["msg"]}
            for err in exc.errors()
        ]
        fields = ", ".join(p["field"] for p in problems)
        return error_response(422, f"invalid request: {fields}", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail))

    return app

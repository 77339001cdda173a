"""The serving benchmark's baseline: a bare FastAPI route returning one Redis GET, run by uvicorn with
the same workers as the API, so `bench serve` can say how close the full route comes to it.

    uvicorn carousel.bench.baseline:app   (CAROUSEL_REDIS_URL names the Redis)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aredis
from fastapi import FastAPI, Response


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = aredis.Redis.from_url(os.environ["CAROUSEL_REDIS_URL"], max_connections=256)
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=_lifespan)


@app.get("/get")
async def get(key: str) -> Response:
    value = await app.state.redis.get(key)
    return Response(value or b"null", media_type="application/json")

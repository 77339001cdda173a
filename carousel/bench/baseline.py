"""The serving benchmark's baseline: a bare FastAPI route returning one Redis GET, served as the API is
(the same workers, a listening socket each), so `bench serve` can say how close the full route comes.

    python -m serving.workers carousel.bench.baseline:app --port P --workers 2
        (CAROUSEL_REDIS_URL names the Redis)
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

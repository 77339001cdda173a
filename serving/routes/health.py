"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response
from redis.exceptions import RedisError

from serving.deps import StoreDep
from serving.responses import json_response

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> Response:
    """The process answers."""
    return json_response({"status": "ok"})


@router.get("/health/ready")
async def ready(store: StoreDep) -> Response:
    """Ready when Redis answers and a version is live."""
    try:
        version = await store.live_version()
    except (RedisError, OSError) as exc:
        return json_response({"status": "unavailable", "redis": f"error: {type(exc).__name__}"}, 503)
    if version is None:
        return json_response({"status": "unavailable", "redis": "ok", "live_version": None}, 503)
    return json_response({"status": "ok", "redis": "ok", "live_version": version})

"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.deps import StoreDep
from serving.responses import json_response
from serving.store import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> Response:
    """The process answers."""
    return json_response({"status": "ok"})


@router.get("/health/ready")
async def ready(request: Request, store: StoreDep) -> Response:
    """Ready when a version is live, or while Redis is unreachable but a fallback list can serve (the
    API keeps answering 200s from it; taking it out of rotation would not help the storefront)."""
    try:
        await store.ping()  # the pointer is cached: ask Redis itself
        version = await store.live_version()
    except StoreUnavailable as exc:
        if request.app.state.fallbacks.available():
            return json_response({"status": "degraded", "redis": f"error: {exc}", "serving": "fallback"})
        return json_response({"status": "unavailable", "redis": f"error: {exc}"}, 503)
    if version is None:
        return json_response({"status": "unavailable", "redis": "ok", "live_version": None}, 503)
    return json_response({"status": "ok", "redis": "ok", "live_version": version})

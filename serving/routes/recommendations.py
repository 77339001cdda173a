"""`GET /v1/recommendations`: the stored list for one shopper, with the segment and global fallbacks.

Known shopper with a personal list -> `personal`; otherwise the segment list for the request's context
(country, then device, then referrer) -> `segment`; otherwise the global list -> `global`. Holdout
shoppers get the non-personal list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from serving import keyspace
from serving.deps import SettingsDep, StoreDep
from serving.responses import error_response, json_response
from serving.variant import HOLDOUT, assign_variant

router = APIRouter(prefix="/v1", tags=["recommendations"])

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
CONTEXT_PATTERN = r"^[\w .,'()\-/&]{1,64}$"

UserId = Annotated[str | None, Query(pattern=ID_PATTERN, description="the shopper; absent for anonymous")]
SessionId = Annotated[str | None, Query(pattern=ID_PATTERN)]
Placement = Annotated[str, Query(pattern=r"^[a-z0-9_\-]{1,32}$")]
Count = Annotated[int, Query(ge=1, le=100)]
Context = Annotated[str | None, Query(pattern=CONTEXT_PATTERN)]


@router.get("/recommendations")
async def recommendations(
    settings: SettingsDep,
    store: StoreDep,
    user_id: UserId = None,
    session_id: SessionId = None,
    placement: Placement = "home",
    n: Count = 10,
    country: Context = None,
    device: Context = None,
    referrer: Context = None,
) -> Response:
    """The ranked list for one shopper or anonymous visitor, every item with a reason."""
    subject = user_id or session_id or "anonymous"
    variant = assign_variant(subject, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
    version = await store.live_version()
    if version is None:
        return error_response(503, "no recommendation version has been published yet")
    meta = await store.version_meta(version) or {}
    payload, source = None, "global"
    if user_id is not None and variant != HOLDOUT:
        payload = await store.user_list(version, str(meta.get("base") or version), user_id)
        source = "personal"
    context = {"country": country, "device": device, "referrer": referrer}
    for dimension in keyspace.CONTEXT_DIMENSIONS:
        value = context[dimension]
        if payload is not None:
            break
        if value:
            payload = await store.segment_list(version, keyspace.context_segment(dimension, value))
            source = "segment"
    if payload is None:
        payload = await store.segment_list(version, keyspace.GLOBAL_SEGMENT)
        source = "global"
    items: list[dict[str, Any]] = keyspace.decode_items(payload)[:n] if payload else []
    generated_at = meta.get("generated_at")
    return json_response(
        {
            "items": items,
            "source": source,
            "variant": variant,
            "placement": placement,
            "version": version,
            "generated_at": generated_at,
            "stale": _is_stale(generated_at, settings.stale_after_s),
        }
    )


def _is_stale(generated_at: str | None, stale_after_s: int) -> bool:
    if not generated_at:
        return True
    age = datetime.now(UTC) - datetime.fromisoformat(generated_at)
    return age.total_seconds() > stale_after_s

"""`GET /v1/audiences/{name}`: the shoppers to email for one triggered campaign (marketing token).

Rows come from the last batch run, with abandoned carts kept current from the real-time state at each
request. Held-out (holdout) shoppers are recorded but left out of the send list unless
`include_held_out=true`. JSON `{"rows": [...], "next_cursor": ...}` or CSV (one row per shopper, items as
JSON in a column), paged by an opaque cursor.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from carousel.cache.keys import LIVE_KEY
from serving import audiences
from serving.auth import MarketingDep
from serving.deps import SettingsDep, StoreDep
from serving.responses import error_response, json_response

router = APIRouter(prefix="/v1/audiences", tags=["audiences"], dependencies=[MarketingDep])

Campaign = Annotated[
    Literal["abandoned_cart", "post_purchase", "browse_abandonment"], Path(description="the campaign")
]


@router.get("/{name}")
async def audience(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    name: Campaign,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    include_held_out: bool = False,
) -> Response:
    client = request.app.state.admin_redis
    if name == "abandoned_cart" and cursor is None:
        # Carts abandoned since the last batch run join the audience before its first page is read.
        version = await client.get(LIVE_KEY)
        meta = await store.version_meta(version.decode()) if version else None
        await audiences.promote_abandoned_carts(
            client,
            now=time.time(),
            settings=settings,
            version=version.decode() if version else None,
            base=str((meta or {}).get("base") or (version.decode() if version else "")) or None,
        )
    try:
        rows, next_cursor = await audiences.page(
            client, name, cursor=cursor, limit=limit, include_held_out=include_held_out
        )
    except ValueError as exc:
        return error_response(
            422, f"invalid request: cursor ({exc})", problems=[{"field": "cursor", "problem": str(exc)}]
        )
    if format == "json":
        return json_response({"rows": rows, "next_cursor": next_cursor})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["user_id", "triggered_at", "variant", "held_out", "items"])
    for row in rows:
        writer.writerow(
            [
                row["user_id"],
                row["triggered_at"],
                row["variant"],
                row["held_out"],
                orjson.dumps(row["items"]).decode(),
            ]
        )
    response = Response(buffer.getvalue(), media_type="text/csv")
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
    return response

"""Item routes: `GET /v1/items/{item_id}/similar` (items bought or viewed together) and
`PUT /v1/items/{item_id}` (stock and price, admin token), honoured at read time by every list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from carousel.cache.payload import decode_items
from carousel.rules.segments import GLOBAL_SEGMENT
from serving import stock
from serving.auth import AdminDep
from serving.deps import SettingsDep, StoreDep
from serving.inputs import ID_PATTERN
from serving.responses import error_response, json_response

router = APIRouter(prefix="/v1/items", tags=["items"])
admin_router = APIRouter(prefix="/v1/items", tags=["items"], dependencies=[AdminDep])

ItemId = Annotated[str, Path(pattern=ID_PATTERN, description="the catalog item id")]


class ItemUpdate(BaseModel):
    """A stock or price change; at least one of the two."""

    model_config = ConfigDict(extra="forbid")

    in_stock: bool | None = None
    price: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)

    @model_validator(mode="after")
    def _something(self) -> ItemUpdate:
        if self.in_stock is None and self.price is None:
            raise ValueError("give in_stock, price or both")
        return self


@router.get("/{item_id}/similar")
async def similar_items(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    item_id: ItemId,
    n: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    """Items most often bought or viewed in the same sessions as this one, in stock, best first. An item
    without neighbours (new, or unknown) gets the global list without itself (`source: global`)."""
    version = await store.live_version()
    if version is None:
        return error_response(503, "no recommendation version has been published yet")
    meta = await store.version_meta(version) or {}
    payload = await store.item_list(version, str(meta.get("base") or version), item_id)
    source = "similar"
    if payload is None:
        payload = await store.segment_list(version, GLOBAL_SEGMENT)
        source = "global"
    availability = await request.app.state.availability.get()
    items: list[dict[str, Any]] = [
        item
        for item in (decode_items(payload) if payload else [])
        if item["item_id"] != item_id and item["item_id"] not in availability.unavailable
    ][:n]
    return json_response({"item_id": item_id, "items": items, "source": source, "version": version})


@admin_router.put("/{item_id}")
async def update_item(request: Request, item_id: ItemId, update: ItemUpdate) -> Response:
    """Mark an item (un)available or change its price; lists stop showing unavailable items within a
    second and refill from their stored overflow."""
    await stock.set_item_state(
        request.app.state.admin_redis, item_id, in_stock=update.in_stock, price=update.price
    )
    request.app.state.availability.invalidate()
    return json_response({"item_id": item_id, "in_stock": update.in_stock, "price": update.price})

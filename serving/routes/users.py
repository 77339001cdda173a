"""Shopper routes for the store's back office (admin token): consent and erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict

from serving.auth import AdminDep
from serving.consent import set_consent
from serving.erasure import erase_shopper
from serving.inputs import ID_PATTERN
from serving.responses import json_response

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[AdminDep])

UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="the shopper")]


class ConsentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personalization: bool
    marketing: bool


@router.put("/{user_id}/consent")
async def update_consent(request: Request, user_id: UserIdPath, consent: ConsentUpdate) -> Response:
    """Record what the shopper agreed to. Without personalization consent they get segment or global
    lists from the next request on, and the batch stops modelling them."""
    await set_consent(
        request.app.state.admin_redis,
        user_id,
        personalization=consent.personalization,
        marketing=consent.marketing,
    )
    return json_response({"user_id": user_id, **consent.model_dump()})


@router.delete("/{user_id}")
async def erase_user(request: Request, user_id: UserIdPath) -> Response:
    """Erase the shopper: every Redis key and list member naming them, at once; batch runs leave them
    out from then on."""
    salt = request.app.state.settings.erasure_salt_value()
    removed = await erase_shopper(request.app.state.admin_redis, user_id, salt=salt)
    return json_response({"user_id": user_id, "erased": True, **removed})

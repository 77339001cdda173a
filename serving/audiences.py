"""The API's side of the marketing audiences (`GET /v1/audiences/{name}`): paging the rows the batch
wrote (`carousel.cache.audiences`), remembering fresh carts from `POST /v1/events`, and turning the
carts abandoned since the last batch run into `abandoned_cart` rows at read time, by the same rules as
the batch (`carousel.rules.carts`, consent, holdout, frequency cap).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import orjson
import pandas as pd

from carousel.cache.audiences import CAMPAIGNS, encode_row
from carousel.cache.client import AsyncRedis, text
from carousel.cache.keys import (
    ERASURES_KEY,
    NO_MARKETING_KEY,
    PENDING_CARTS_KEY,
    audience_index_key,
    audience_rows_key,
    consent_key,
    item_key,
)
from carousel.cache.payload import decode_items
from carousel.cache.scripts import RESOLVE_USER_LIST
from carousel.cache.shoppers import parse_consent
from carousel.cache.stream import EventLike
from carousel.rules.carts import CART_REMINDER, COMPLETES_CART, abandoned_cart
from carousel.rules.erasure import erasure_digest
from carousel.rules.holdout import HOLDOUT, assign_variant
from carousel.rules.reasons import reason
from configs.settings import Settings
from serving import realtime

# Items an audience row shows at most, and the cart items whose complements are looked up.
ROW_ITEMS = 6
COMPLEMENT_ANCHORS = 3


async def note_carts(client: AsyncRedis, events: Iterable[EventLike]) -> None:
    """Remember shoppers who put something in their cart (their cart may become abandoned)."""
    latest: dict[str, float] = {}
    for event in events:
        if event.user_id and event.event_type == "add_to_cart":
            latest[event.user_id] = max(latest.get(event.user_id, 0.0), event.ts.timestamp())
    if latest:
        await client.zadd(PENDING_CARTS_KEY, latest, gt=True)


async def promote_abandoned_carts(
    client: AsyncRedis, *, now: float, settings: Settings, version: str | None, base: str | None
) -> int:
    """Turn the carts left alone past the window since the last batch run into `abandoned_cart` rows
    (same consent, erasure, holdout and cap rules as the batch). Returns how many rows were added."""
    window = float(settings.cart_abandon_after_s)
    due: Any = await client.zrangebyscore(PENDING_CARTS_KEY, "-inf", now - window)
    added = 0
    for raw in due:
        user = text(raw)
        state = await realtime.read_state(client, user_id=user, session_id=None)
        await client.zrem(PENDING_CARTS_KEY, user)
        cart = abandoned_cart(state.cart, state.purchases, now=now, after_s=window)
        if not cart:
            continue
        if await client.sismember(NO_MARKETING_KEY, user):
            continue
        if await client.sismember(ERASURES_KEY, erasure_digest(user, settings.erasure_salt_value())):
            continue
        if parse_consent(await client.hgetall(consent_key(user))).marketing is False:
            continue
        triggered = state.cart[cart[0]]
        previous = await client.zscore(audience_index_key("abandoned_cart"), user)
        if previous is not None and abs(triggered - previous) < settings.audience_cap_hours * 3600:
            continue
        items = [{"item_id": i, "reason": reason(CART_REMINDER)} for i in cart]
        if version and base:
            for item in cart[:COMPLEMENT_ANCHORS]:
                stored = await client.eval(RESOLVE_USER_LIST, 1, item_key(item), version, base)
                items += [
                    {"item_id": similar["item_id"], "reason": reason(COMPLETES_CART)}
                    for similar in (decode_items(stored) if stored else [])[:2]
                    if similar["item_id"] not in state.cart
                ]
        variant = assign_variant(user, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
        row = {
            "user_id": user,
            "triggered_at": pd.Timestamp(triggered, unit="s", tz="UTC"),
            "items": _unique(items)[:ROW_ITEMS],
            "variant": variant,
            "held_out": variant == HOLDOUT,
        }
        pipe = client.pipeline(transaction=True)
        pipe.zadd(audience_index_key("abandoned_cart"), {user: triggered})
        pipe.hset(audience_rows_key("abandoned_cart"), user, encode_row(row))
        await pipe.execute()
        added += 1
    return added


async def drop_shopper(client: AsyncRedis, user_id: str) -> None:
    """Remove a shopper from every audience (consent withdrawn, erasure)."""
    for campaign in CAMPAIGNS:
        pipe = client.pipeline(transaction=True)
        pipe.zrem(audience_index_key(campaign), user_id)
        pipe.hdel(audience_rows_key(campaign), user_id)
        await pipe.execute()
    await client.zrem(PENDING_CARTS_KEY, user_id)
    await client.srem(NO_MARKETING_KEY, user_id)


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item["item_id"] not in seen:
            seen.add(item["item_id"])
            out.append(item)
    return out


def encode_cursor(score: float, user: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([score, user])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises ValueError on anything that is not a cursor this API handed out."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, user = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:  # any malformed input is the same client error
        raise ValueError("cursor is not one this API returned") from exc
    if not isinstance(score, int | float) or not isinstance(user, str):
        raise ValueError("cursor is not one this API returned")
    return float(score), user


async def page(
    client: AsyncRedis, campaign: str, *, cursor: str | None, limit: int, include_held_out: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of rows in (triggered_at, user_id) order after `cursor`, and the next cursor."""
    after = decode_cursor(cursor) if cursor else None
    rows: list[dict[str, Any]] = []
    low = "-inf" if after is None else str(after[0])
    offset = 0
    while len(rows) < limit:
        batch: Any = await client.zrangebyscore(
            audience_index_key(campaign), low, "+inf", start=offset, num=limit * 2, withscores=True
        )
        if not batch:
            return rows, None
        offset += len(batch)
        candidates = [
            (text(m), float(s))
            for m, s in batch
            if after is None or (float(s), text(m)) > (after[0], after[1])
        ]
        payloads = (
            await client.hmget(audience_rows_key(campaign), [m for m, _ in candidates]) if candidates else []
        )
        for (member, score), payload in zip(candidates, payloads, strict=True):
            if payload is None:
                continue
            row = orjson.loads(payload)
            last = (score, member)
            if not include_held_out and row["held_out"]:
                continue
            rows.append(row)
            if len(rows) == limit:
                return rows, encode_cursor(*last)
    return rows, None

"""Audience rows in Redis: what `GET /v1/audiences/{name}` serves, replaced by each batch run
(`jobs/audiences.py`) and kept current between runs for abandoned carts from the real-time state.

Keys (a hash tag per campaign keeps a campaign's keys in one slot, so a new snapshot replaces the old
one with two RENAMEs in one transaction, on a Redis Cluster too)::

    carousel:aud:{<campaign>}:index  -> zset user_id -> triggered_at (epoch s): the paging order
    carousel:aud:{<campaign>}:rows   -> hash user_id -> orjson row {user_id, triggered_at, items, variant,
                                        held_out}
    carousel:aud:{carts}:pending     -> zset user_id -> time of their newest add-to-cart (set by
                                        POST /v1/events): shoppers whose cart may become abandoned
    carousel:aud:{carts}:no-marketing -> set of shoppers without marketing consent

Pages are ordered by (triggered_at, user_id) and the cursor is the last row's pair, so walking the
pages returns every row present throughout exactly once.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from serving import keyspace, realtime
from serving.consent import consent_key, parse_consent
from serving.variant import HOLDOUT, assign_variant

CAMPAIGNS = ("abandoned_cart", "post_purchase", "browse_abandonment")
PENDING_CARTS = "carousel:aud:{carts}:pending"
NO_MARKETING = "carousel:aud:{carts}:no-marketing"


def index_key(campaign: str) -> str:
    return f"carousel:aud:{{{campaign}}}:index"


def rows_key(campaign: str) -> str:
    return f"carousel:aud:{{{campaign}}}:rows"


def _epoch(at: Any) -> float:
    return float(pd.Timestamp(at).timestamp())


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def encode_row(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "user_id": str(row["user_id"]),
            "triggered_at": _iso(_epoch(row["triggered_at"])),
            "items": row["items"],
            "variant": row["variant"],
            "held_out": bool(row["held_out"]),
        }
    )


# -- batch side (sync client) ---------------------------------------------------------------------------
def replace_campaign(
    client: Any, campaign: str, rows: Iterable[Mapping[str, Any]], *, no_marketing: set[str]
) -> None:
    """Swap in a campaign's new rows at once (readers see the old or the new audience, never a mix)."""
    rows = list(rows)
    staging_index, staging_rows = index_key(campaign) + ":new", rows_key(campaign) + ":new"
    pipe = client.pipeline(transaction=True)
    pipe.delete(staging_index, staging_rows)
    if rows:
        pipe.zadd(staging_index, {str(r["user_id"]): _epoch(r["triggered_at"]) for r in rows})
        pipe.hset(staging_rows, mapping={str(r["user_id"]): encode_row(r) for r in rows})
        pipe.rename(staging_index, index_key(campaign))
        pipe.rename(staging_rows, rows_key(campaign))
    else:
        pipe.delete(index_key(campaign), rows_key(campaign))
    pipe.execute()
    refreshed = client.pipeline(transaction=True)
    refreshed.delete(NO_MARKETING + ":new")
    if no_marketing:
        refreshed.sadd(NO_MARKETING + ":new", *sorted(no_marketing))
        refreshed.rename(NO_MARKETING + ":new", NO_MARKETING)
    else:
        refreshed.delete(NO_MARKETING)
    refreshed.execute()


def current_trigger_times(client: Any) -> dict[tuple[str, str], pd.Timestamp]:
    """(campaign, user) -> triggered_at of every row in Redis: what the frequency cap compares with."""
    out: dict[tuple[str, str], pd.Timestamp] = {}
    for campaign in CAMPAIGNS:
        for user, score in client.zrange(index_key(campaign), 0, -1, withscores=True):
            out[(campaign, user.decode())] = pd.Timestamp(score, unit="s", tz="UTC")
    return out


# -- API side (async client) ----------------------------------------------------------------------------
async def note_carts(client: Any, events: Iterable[Any]) -> None:
    """Remember shoppers who put something in their cart (their cart may become abandoned)."""
    latest: dict[str, float] = {}
    for event in events:
        if event.user_id and event.event_type == "add_to_cart":
            latest[event.user_id] = max(latest.get(event.user_id, 0.0), event.ts.timestamp())
    if latest:
        await client.zadd(PENDING_CARTS, latest, gt=True)


async def promote_abandoned_carts(
    client: Any, *, now: float, settings: Any, version: str | None, base: str | None
) -> int:
    """Turn the carts left alone past the window since the last batch run into `abandoned_cart` rows
    (same consent, erasure, holdout and cap rules as the batch). Returns how many rows were added."""
    window = float(settings.cart_abandon_after_s)
    due = await client.zrangebyscore(PENDING_CARTS, "-inf", now - window)
    added = 0
    for raw in due:
        user = raw.decode()
        state = await realtime.read_state(client, user_id=user, session_id=None)
        cart = {i: t for i, t in state.cart.items() if i not in state.purchases}
        await client.zrem(PENDING_CARTS, user)
        if not cart or now - max(cart.values()) < window:
            continue
        if await client.sismember(NO_MARKETING, user):
            continue
        if parse_consent(await client.hgetall(consent_key(user))).marketing is False:
            continue
        triggered = max(cart.values())
        previous = await client.zscore(index_key("abandoned_cart"), user)
        if previous is not None and abs(triggered - previous) < settings.audience_cap_hours * 3600:
            continue
        items = [
            {"item_id": i, "reason": {"code": "in_your_cart", "text": "Still in your cart"}}
            for i in sorted(cart, key=lambda i: -cart[i])
        ]
        if version and base:
            for item in list(cart)[:3]:
                payload = await client.eval(
                    keyspace.RESOLVE_USER_LIST, 1, keyspace.item_key(item), version, base
                )
                for similar in (keyspace.decode_items(payload) if payload else [])[:2]:
                    if similar["item_id"] not in cart:
                        items.append(
                            {
                                "item_id": similar["item_id"],
                                "reason": {
                                    "code": "completes_cart",
                                    "text": "Goes with what is in your cart",
                                },
                            }
                        )
        variant = assign_variant(user, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
        row = {
            "user_id": user,
            "triggered_at": pd.Timestamp(triggered, unit="s", tz="UTC"),
            "items": _unique(items)[:6],
            "variant": variant,
            "held_out": variant == HOLDOUT,
        }
        pipe = client.pipeline(transaction=True)
        pipe.zadd(index_key("abandoned_cart"), {user: triggered})
        pipe.hset(rows_key("abandoned_cart"), user, encode_row(row))
        await pipe.execute()
        added += 1
    return added


async def drop_shopper(client: Any, user_id: str) -> None:
    """Remove a shopper from every audience (consent withdrawn, erasure)."""
    for campaign in CAMPAIGNS:
        pipe = client.pipeline(transaction=True)
        pipe.zrem(index_key(campaign), user_id)
        pipe.hdel(rows_key(campaign), user_id)
        await pipe.execute()
    await client.zrem(PENDING_CARTS, user_id)
    await client.srem(NO_MARKETING, user_id)


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
    client: Any, campaign: str, *, cursor: str | None, limit: int, include_held_out: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of rows in (triggered_at, user_id) order after `cursor`, and the next cursor."""
    after = decode_cursor(cursor) if cursor else None
    rows: list[dict[str, Any]] = []
    low = "-inf" if after is None else str(after[0])
    offset = 0
    while len(rows) < limit:
        batch = await client.zrangebyscore(
            index_key(campaign), low, "+inf", start=offset, num=limit * 2, withscores=True
        )
        if not batch:
            return rows, None
        offset += len(batch)
        candidates = [
            (m.decode(), s) for m, s in batch if after is None or (s, m.decode()) > (after[0], after[1])
        ]
        payloads = await client.hmget(rows_key(campaign), [m for m, _ in candidates]) if candidates else []
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

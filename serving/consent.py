"""`PUT /v1/users/{id}/consent`'s write: the shopper's consent as the store's consent platform last
reported it. Where a record exists it wins over the lake's users table (`carousel.rules.consent`)."""

from __future__ import annotations

from typing import Any

from carousel.cache.client import AsyncRedis
from carousel.cache.keys import NO_MARKETING_KEY, consent_key
from carousel.cache.shoppers import consent_record
from serving import audiences


async def set_consent(client: AsyncRedis, user_id: str, *, personalization: bool, marketing: bool) -> None:
    """Record consent; without marketing consent the shopper leaves every audience at once."""
    record: dict[Any, Any] = consent_record(personalization, marketing)
    await client.hset(consent_key(user_id), mapping=record)
    if marketing:
        await client.srem(NO_MARKETING_KEY, user_id)
    else:
        await audiences.drop_shopper(client, user_id)
        await client.sadd(NO_MARKETING_KEY, user_id)

"""Shoppers' consent as the store's consent platform last reported it (`PUT /v1/users/{id}/consent`).

Key: `carousel:consent:{u:<user_id>}` (the shopper's hash tag, see `serving/keyspace.py`) -> hash {personalization: "0"|"1", marketing: "0"|"1"}. A shopper
without a key is governed by the batch's users table (the lake), which the drain keeps in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving import keyspace

PREFIX = "carousel:consent:"


def consent_key(user_id: str) -> str:
    return f"{PREFIX}{keyspace.user_tag(user_id)}"


@dataclass(frozen=True)
class Consent:
    personalization: bool | None
    marketing: bool | None


def parse_consent(raw: dict[Any, Any] | None) -> Consent:
    values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in (raw or {}).items()}

    def flag(name: str) -> bool | None:
        value = values.get(name)
        if value is None:
            return None
        return (value.decode() if isinstance(value, bytes) else str(value)) == "1"

    return Consent(flag("personalization"), flag("marketing"))


def recorded_consents(client_sync: Any) -> dict[str, Consent]:
    """Every consent record the API holds, by shopper (a SCAN; for the batch jobs, blocking client)."""
    out = {}
    for key in client_sync.scan_iter(match=PREFIX + "*", count=5_000):
        out[keyspace.tagged_user_id(key, PREFIX)] = parse_consent(client_sync.hgetall(key))
    return out


async def set_consent(client: Any, user_id: str, *, personalization: bool, marketing: bool) -> None:
    """Record consent; without marketing consent the shopper leaves every audience at once."""
    from serving import audiences

    await client.hset(
        consent_key(user_id),
        mapping={"personalization": "1" if personalization else "0", "marketing": "1" if marketing else "0"},
    )
    if marketing:
        await client.srem(audiences.NO_MARKETING, user_id)
    else:
        await audiences.drop_shopper(client, user_id)
        await client.sadd(audiences.NO_MARKETING, user_id)

"""Stock and price overrides honoured at read time (`PUT /v1/items/{item_id}`).

Keys (single-key commands; both small: only overridden items are in them)::

    carousel:unavailable  -> set of item ids that cannot be bought now
    carousel:prices       -> hash item id -> current unit price

The API keeps both in memory and refreshes them at most once a second per process, so filtering a list
costs no round trip; an update is honoured by every worker within that second. When Redis cannot be
read the last known state stays in force.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from carousel.cache.client import AsyncRedis, text
from carousel.cache.keys import PRICES_KEY, UNAVAILABLE_KEY


@dataclass(frozen=True)
class Availability:
    unavailable: frozenset[str]
    prices: dict[str, float]


async def set_item_state(
    client: AsyncRedis, item_id: str, *, in_stock: bool | None, price: float | None
) -> None:
    pipe = client.pipeline(transaction=False)
    if in_stock is True:
        pipe.srem(UNAVAILABLE_KEY, item_id)
    elif in_stock is False:
        pipe.sadd(UNAVAILABLE_KEY, item_id)
    if price is not None:
        pipe.hset(PRICES_KEY, item_id, repr(float(price)))
    await pipe.execute()


class AvailabilityCache:
    """The overrides, read from Redis at most every `ttl_s` seconds."""

    def __init__(self, client: AsyncRedis, *, ttl_s: float = 1.0) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._fetched_at = -1e9
        self._state = Availability(frozenset(), {})

    async def get(
        self, run: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None
    ) -> Availability:
        """The overrides; a refresh goes through `run` (the store's deadline and breaker) when given, so
        only real Redis reads count for or against the breaker."""
        now = time.monotonic()
        if now - self._fetched_at < self._ttl_s:
            return self._state
        self._fetched_at = now  # also on failure: a down Redis is not asked on every request

        async def fetch() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.smembers(UNAVAILABLE_KEY)
            pipe.hgetall(PRICES_KEY)
            replies: list[Any] = await pipe.execute()
            return replies

        members, prices = await (run(fetch) if run else fetch())
        self._state = Availability(
            frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members),
            {text(k): float(v) for k, v in prices.items()},
        )
        return self._state

    @property
    def last(self) -> Availability:
        """The overrides as last read (no Redis call)."""
        return self._state

    def invalidate(self) -> None:
        self._fetched_at = -1e9

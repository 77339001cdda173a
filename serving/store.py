"""The API's read side of the list cache: the live pointer, version metadata and stored lists.

`ListStore` is the small interface the routes use; `RedisListStore` implements it on the shared key
layout (`serving/keyspace.py`). The live pointer is cached for a second per process so a list read is a
single round trip (one script on the shopper's key); a publish is seen by every worker within that
second.

Every Redis call has a hard deadline and goes through a circuit breaker: after a few consecutive
failures (Redis stopped, or accepting connections but not answering) the store stops asking for a
while and fails at once with `StoreUnavailable`, so requests are answered from a fallback in
microseconds instead of each waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from serving import keyspace

T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """Redis did not answer in time (or the breaker is open): serve a fallback."""


class ListStore(Protocol):
    async def live_version(self) -> str | None: ...
    async def version_meta(self, version: str) -> dict[str, Any] | None: ...
    async def user_list(self, version: str, base: str, user_id: str) -> bytes | None: ...
    async def item_list(self, version: str, base: str, item_id: str) -> bytes | None: ...
    async def shopper(
        self, version: str, base: str, user_id: str, session_id: str | None
    ) -> tuple[bytes | None, dict[Any, Any], Any]: ...
    async def segment_list(self, version: str, segment: str) -> bytes | None: ...
    async def ping(self) -> bool: ...


class CircuitBreaker:
    """Closed: calls go through. After `failures` consecutive failures it opens for `reset_after_s`
    (calls fail at once); then one trial call is let through (half-open), and its outcome closes or
    re-opens it."""

    def __init__(self, *, failures: int = 3, reset_after_s: float = 2.0) -> None:
        self.failures = failures
        self.reset_after_s = reset_after_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self.opened_count = 0
        self._reported = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self._opened_at >= self.reset_after_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def take_new_openings(self) -> int:
        """Openings since the last call (for a metrics counter)."""
        new, self._reported = self.opened_count - self._reported, self.opened_count
        return new

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self._consecutive += 1
        self._trial_running = False
        if self._opened_at is not None or self._consecutive >= self.failures:
            if self._opened_at is None or self.state == "half_open":
                self.opened_count += 1
            self._opened_at = time.monotonic()


class RedisListStore:
    """Lists and pointer read from Redis (single-key commands only: cluster-safe)."""

    def __init__(
        self,
        client: Any,
        *,
        pointer_ttl_s: float = 1.0,
        deadline_s: float = 0.1,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client = client
        self._pointer_ttl_s = pointer_ttl_s
        self._deadline_s = deadline_s
        self.breaker = breaker or CircuitBreaker()
        self._pointer: tuple[float, str | None] = (-1e9, None)
        self._meta: dict[str, dict[str, Any]] = {}
        self._resolve = client.register_script(keyspace.RESOLVE_USER_LIST)

    @property
    def client(self) -> Any:
        return self._client

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation under the deadline and the breaker."""
        if not self.breaker.allow():
            raise StoreUnavailable("Redis circuit is open")
        try:
            result = await asyncio.wait_for(operation(), self._deadline_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            raise StoreUnavailable(f"Redis did not answer: {type(exc).__name__}") from exc
        self.breaker.success()
        return result

    async def live_version(self) -> str | None:
        fetched_at, version = self._pointer
        now = time.monotonic()
        if now - fetched_at < self._pointer_ttl_s:
            return version
        raw = await self.call(lambda: self._client.get(keyspace.LIVE_KEY))
        version = raw.decode() if raw else None
        self._pointer = (now, version)
        return version

    async def version_meta(self, version: str) -> dict[str, Any] | None:
        if version in self._meta:
            return self._meta[version]
        raw = await self.call(lambda: self._client.get(keyspace.meta_key(version)))
        if raw is None:
            return None
        meta = keyspace.decode_meta(raw)
        self._meta = {version: meta}  # only the live version's meta is worth keeping
        return meta

    async def user_list(self, version: str, base: str, user_id: str) -> bytes | None:
        """The shopper's list in `version` (a full version is its own base; a delta builds on one)."""
        return await self._resolved(keyspace.user_key(user_id), version, base)

    async def item_list(self, version: str, base: str, item_id: str) -> bytes | None:
        """The item's similar items in `version` (written by full versions, resolved like shoppers')."""
        return await self._resolved(keyspace.item_key(item_id), version, base)

    async def _resolved(self, key: str, version: str, base: str) -> bytes | None:
        value: bytes | None = await self.call(lambda: self._resolve(keys=[key], args=[version, base]))
        return value

    async def shopper(
        self, version: str, base: str, user_id: str, session_id: str | None
    ) -> tuple[bytes | None, dict[Any, Any], Any]:
        """The shopper's list, consent record and real-time state in ONE round trip (a pipeline; on a
        cluster it is split by node, still without waiting between commands)."""
        from serving import realtime
        from serving.consent import consent_key

        keys = realtime.subject_keys(user_id=user_id, session_id=session_id)

        async def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            # EVAL, not EVALSHA: a pipeline holding registered scripts checks them with an extra
            # SCRIPT EXISTS round trip first; Redis caches the compiled script either way.
            pipe.eval(keyspace.RESOLVE_USER_LIST, 1, keyspace.user_key(user_id), version, base)
            pipe.hgetall(consent_key(user_id))
            if keys is not None:
                realtime.queue_state_reads(pipe, keys)
            replies: list[Any] = await pipe.execute()
            return replies

        replies = await self.call(read)
        state = realtime.state_from(replies[2:]) if keys is not None else realtime.EMPTY_STATE
        return replies[0], replies[1], state

    async def segment_list(self, version: str, segment: str) -> bytes | None:
        value: bytes | None = await self.call(
            lambda: self._client.get(keyspace.segment_key(version, segment))
        )
        return value

    async def ping(self) -> bool:
        return bool(await self.call(lambda: self._client.ping()))

    async def close(self) -> None:
        await self._client.aclose()

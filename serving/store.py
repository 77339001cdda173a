"""The API's read side of the list cache: the live pointer, version metadata and stored lists.

`ListStore` is the small interface the routes use; `RedisListStore` implements it on the shared key
layout (`serving/keyspace.py`). The live pointer is cached for a second per process so a list read is a
single round trip (one script on the shopper's key); a publish is seen by every worker within that
second.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from serving import keyspace


class ListStore(Protocol):
    async def live_version(self) -> str | None: ...
    async def version_meta(self, version: str) -> dict[str, Any] | None: ...
    async def user_list(self, version: str, base: str, user_id: str) -> bytes | None: ...
    async def segment_list(self, version: str, segment: str) -> bytes | None: ...
    async def ping(self) -> bool: ...


class RedisListStore:
    """Lists and pointer read from Redis (single-key commands only: cluster-safe)."""

    def __init__(self, client: Any, *, pointer_ttl_s: float = 1.0) -> None:
        self._client = client
        self._pointer_ttl_s = pointer_ttl_s
        self._pointer: tuple[float, str | None] = (-1e9, None)
        self._meta: dict[str, dict[str, Any]] = {}
        self._resolve = client.register_script(keyspace.RESOLVE_USER_LIST)

    async def live_version(self) -> str | None:
        fetched_at, version = self._pointer
        now = time.monotonic()
        if now - fetched_at < self._pointer_ttl_s:
            return version
        raw = await self._client.get(keyspace.LIVE_KEY)
        version = raw.decode() if raw else None
        self._pointer = (now, version)
        return version

    async def version_meta(self, version: str) -> dict[str, Any] | None:
        if version in self._meta:
            return self._meta[version]
        raw = await self._client.get(keyspace.meta_key(version))
        if raw is None:
            return None
        meta = keyspace.decode_meta(raw)
        self._meta = {version: meta}  # only the live version's meta is worth keeping
        return meta

    async def user_list(self, version: str, base: str, user_id: str) -> bytes | None:
        """The shopper's list in `version` (a full version is its own base; a delta builds on one)."""
        value: bytes | None = await self._resolve(keys=[keyspace.user_key(user_id)], args=[version, base])
        return value

    async def segment_list(self, version: str, segment: str) -> bytes | None:
        value: bytes | None = await self._client.get(keyspace.segment_key(version, segment))
        return value

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()

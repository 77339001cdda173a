"""Redis clients built from settings, single node or cluster, always with explicit timeouts."""

from __future__ import annotations

from typing import Any, TypeAlias

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from configs.settings import Settings

# The clients carousel's code is written against: a single Redis or a Redis Cluster, blocking (the batch,
# the CLI) or asyncio (the API).
SyncRedis: TypeAlias = redis.Redis | RedisCluster
AsyncRedis: TypeAlias = aredis.Redis | AsyncRedisCluster


def text(reply: bytes | str | memoryview | int | float) -> str:
    """A Redis reply as text: the clients return bytes (they are not built to decode replies)."""
    if isinstance(reply, bytes | bytearray | memoryview):
        return bytes(reply).decode()
    return str(reply)


def sync_client(settings: Settings, *, socket_timeout_s: float = 30.0) -> SyncRedis:
    """A blocking client for batch jobs and the CLI (generous timeout: bulk pipelines take a while)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": max(settings.redis_connect_timeout_s, 1.0),
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **kwargs)
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def async_client(settings: Settings, *, socket_timeout_s: float | None = None) -> AsyncRedis:
    """The API's client: short timeouts so a slow Redis turns into a fallback, not a hung request
    (`socket_timeout_s` overrides the setting for writes that must not be abandoned half-way)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s or settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
    }
    if settings.redis_cluster:
        return AsyncRedisCluster.from_url(settings.redis_url, **kwargs)
    return aredis.Redis.from_url(settings.redis_url, max_connections=256, **kwargs)

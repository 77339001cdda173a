"""Redis clients built from settings, single node or cluster, always with explicit timeouts."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from configs.settings import Settings


def sync_client(settings: Settings, *, socket_timeout_s: float = 30.0) -> Any:
    """A blocking client for batch jobs and the CLI (generous timeout: bulk pipelines take a while)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": max(settings.redis_connect_timeout_s, 1.0),
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **kwargs)
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def async_client(settings: Settings, *, socket_timeout_s: float | None = None) -> Any:
    """The API's client: short timeouts so a slow Redis turns into a fallback, not a hung request
    (`socket_timeout_s` overrides the setting for writes that must not be abandoned half-way)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s or settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
    }
    if settings.redis_cluster:
        return AsyncRedisCluster.from_url(settings.redis_url, **kwargs)
    return aredis.Redis.from_url(settings.redis_url, max_connections=256, **kwargs)

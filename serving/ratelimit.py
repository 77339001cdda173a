"""How often one browser may post events: `POST /v1/events` without the storefront token, per client address.

Anonymous events need no credential (a visitor's browser posts them), so without a limit one client could
create visitor sessions, each with its own real-time state in Redis, as fast as it can send requests. A
request therefore counts once for each session it names (a browser posts its own visit). The store's
servers post with the storefront token and are not limited here: they speak for every shopper.

The count is `limits`' sliding-window counter over one minute, kept in Redis so that every API worker and
replica counts the same requests. Its keys (``carousel:ratelimit:...``) name the client's address and
expire within two minutes. An IPv6 client is counted by its /64 network, which a single host can usually
pick addresses from. Behind a proxy every client has the proxy's address unless `forwarded_allow_ips`
names the proxy: uvicorn then takes the client's from ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
import math
import time
from typing import Any, cast
from urllib.parse import urlsplit

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from configs.settings import Settings

__all__ = ["KEY_PREFIX", "BrowserLimit", "browser_limit", "client_key"]

KEY_PREFIX = "carousel:ratelimit"
# An IPv6 host is usually given a whole /64: counting single addresses would let it rotate past the limit.
_IPV6_PREFIX = 64


def client_key(address: str | None) -> str:
    """What the limit counts by: an IPv4 address, an IPv6 /64 network, or the text uvicorn gave (a
    Unix socket's, or ``unknown`` when there is none)."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, _IPV6_PREFIX), strict=False))
    return str(parsed)


class BrowserLimit:
    """`per_minute` event requests per client over a sliding minute, counted in `storage`."""

    def __init__(self, storage: RedisStorage, per_minute: int) -> None:
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._item = RateLimitItemPerMinute(per_minute)

    async def retry_after(self, address: str | None, *, cost: int = 1) -> int | None:
        """Count a request from `address` `cost` times: None when it may go on, else the whole seconds
        until the client may post again (the ``Retry-After`` of its 429). Raises Redis's errors."""
        key = client_key(address)
        if await self._limiter.hit(self._item, "events", key, cost=cost):
            return None
        stats = await self._limiter.get_window_stats(self._item, "events", key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def aclose(self) -> None:
        """Close the cluster client the storage made for itself (a single Redis's is the caller's pool)."""
        bridge = self.storage.bridge
        if isinstance(self.storage, RedisClusterStorage) and isinstance(bridge, RedispyBridge):
            # The redispy bridge's connection is a `redis.asyncio.RedisCluster`; limits types it loosely.
            await cast(AsyncRedisCluster, bridge.get_connection()).aclose()


def browser_limit(settings: Settings, client: Any) -> BrowserLimit | None:
    """The limit the settings ask for (None when ``events_browser_requests_per_minute`` is 0), counting in
    the Redis `client` talks to: on a single Redis through `client`'s own connections, on a Redis Cluster
    through a cluster client of the same nodes and timeouts (`limits` cannot share one)."""
    per_minute = settings.events_browser_requests_per_minute
    if per_minute == 0:
        return None
    storage: RedisStorage
    if settings.redis_cluster:
        url = urlsplit(settings.redis_url)
        options: dict[str, Any] = {
            "socket_timeout": settings.redis_socket_timeout_s,
            "socket_connect_timeout": settings.redis_connect_timeout_s,
        }
        if url.scheme == "rediss":
            options["ssl"] = True
        storage = RedisClusterStorage(
            f"async+redis+cluster://{url.netloc}", implementation="redispy", key_prefix=KEY_PREFIX, **options
        )
    else:
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=client.connection_pool,
        )
    return BrowserLimit(storage, per_minute)

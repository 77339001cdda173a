"""Per-client-address limits kept in Redis, so that every API worker and replica counts the same requests.

- `BrowserLimit`: how often one browser may post events (`POST /v1/events` without the storefront token).
  Anonymous events need no credential (a visitor's browser posts them), so without a limit one client
  could create visitor sessions, each with its own real-time state in Redis, as fast as it can send
  requests. A request therefore counts once for each session it names (a browser posts its own visit).
  The store's servers post with the storefront token and are not limited here: they speak for every
  shopper.
- `FailedCredentials`: how many wrong tokens one client may present (`auth_failures_per_minute`). Past
  it, every token from the address is refused with 429 for a minute, the right one too, so guessing a
  token gains nothing from speed.

Both count with `limits`' sliding-window counter over one minute. Their keys (``carousel:ratelimit:...``)
name the client's address and expire within two minutes. An IPv6 client is counted by its /64 network,
which a single host can usually pick addresses from. Behind a proxy every client has the proxy's address
unless `forwarded_allow_ips` names the proxy: uvicorn then takes the client's from ``X-Forwarded-For``.
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
from redis.exceptions import RedisError

from configs.settings import Settings

__all__ = [
    "KEY_PREFIX",
    "BrowserLimit",
    "FailedCredentials",
    "browser_limit",
    "client_key",
    "failed_credentials",
]

KEY_PREFIX = "carousel:ratelimit"
# An IPv6 host is usually given a whole /64: counting single addresses would let it rotate past the limit.
_IPV6_PREFIX = 64
# Addresses a worker remembers as locked out: past this many, the expired ones, then the oldest, are
# forgotten.
_LOCKS_KEPT = 10_000


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


class _PerMinute:
    """`per_minute` hits per client over a sliding minute, counted in `storage` under `namespace`."""

    def __init__(self, storage: RedisStorage, per_minute: int, namespace: str) -> None:
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._item = RateLimitItemPerMinute(per_minute)
        self._namespace = namespace

    async def _over(self, key: str, cost: int) -> float | None:
        """Count `cost` hits for `key`: None within the limit, else when (epoch seconds) it may go on."""
        if await self._limiter.hit(self._item, self._namespace, key, cost=cost):
            return None
        stats = await self._limiter.get_window_stats(self._item, self._namespace, key)
        now = time.time()
        # `limits` estimates the reset as a window's time left modulo its period: a window whose time
        # left is read as exactly the period (a key set in the same millisecond) gives "now", which would
        # tell a client over its limit to retry in a second. Its real reset is a whole period away.
        return stats.reset_time if stats.reset_time > now else now + self._item.get_expiry()

    async def aclose(self) -> None:
        """Close the cluster client the storage made for itself (a single Redis's is the caller's pool)."""
        bridge = self.storage.bridge
        if isinstance(self.storage, RedisClusterStorage) and isinstance(bridge, RedispyBridge):
            # The redispy bridge's connection is a `redis.asyncio.RedisCluster`; limits types it loosely.
            await cast(AsyncRedisCluster, bridge.get_connection()).aclose()


def _seconds_until(when: float) -> int:
    """A ``Retry-After``: whole seconds, at least 1."""
    return max(1, math.ceil(when - time.time()))


class BrowserLimit(_PerMinute):
    """`per_minute` event requests per client over a sliding minute."""

    def __init__(self, storage: RedisStorage, per_minute: int) -> None:
        super().__init__(storage, per_minute, "events")

    async def retry_after(self, address: str | None, *, cost: int = 1) -> int | None:
        """Count a request from `address` `cost` times: None when it may go on, else the whole seconds
        until the client may post again (the ``Retry-After`` of its 429). Raises Redis's errors."""
        until = await self._over(client_key(address), cost)
        return None if until is None else _seconds_until(until)


class FailedCredentials(_PerMinute):
    """`per_minute` wrong tokens per client over a sliding minute.

    The wrong token over the limit locks the address out for a minute: every token it presents is
    refused, the right one too, so that the answers during a lockout say nothing about a guess. The
    worker that counts the failure over the limit remembers the lock (`locked` needs no Redis, and costs
    a right token nothing); another worker learns it at the address's next failure there, so at most
    one more guess per worker is judged within a window."""

    def __init__(self, storage: RedisStorage, per_minute: int) -> None:
        super().__init__(storage, per_minute, "auth")
        self._locks: dict[str, float] = {}

    def locked(self, address: str | None) -> int | None:
        """The whole seconds `address` stays locked out for, or None."""
        if not self._locks:
            return None  # the usual case, on the storefront's hot route: no address to parse
        key = client_key(address)
        until = self._locks.get(key)
        if until is None:
            return None
        if until <= time.time():
            del self._locks[key]
            return None
        return _seconds_until(until)

    async def failed(self, address: str | None) -> int | None:
        """Count a wrong token from `address`: None while it is within the limit (its request gets 401),
        else the whole seconds it is now locked out for (a minute). Redis failing counts nothing: an outage
        must not lock the operators out of the pages they need during it."""
        key = client_key(address)
        try:
            if await self._limiter.hit(self._item, self._namespace, key):
                return None
        except (RedisError, OSError):
            return None
        # A whole window from the failure over the limit, not the counter's estimate of when one more
        # would pass: `limits` gives "now" for that at some moments, which would unlock at once.
        until = time.time() + self._item.get_expiry()
        if len(self._locks) >= _LOCKS_KEPT:
            now = time.time()
            self._locks = {k: t for k, t in self._locks.items() if t > now}
            # Still full (many addresses guessing at once): forget the oldest locks. A forgotten address
            # gets one more guess judged here, which counts in Redis and locks it again.
            for oldest in list(self._locks)[: len(self._locks) - _LOCKS_KEPT + 1]:
                del self._locks[oldest]
        self._locks.pop(key, None)
        self._locks[key] = until
        return _seconds_until(until)


def browser_limit(settings: Settings, client: Any) -> BrowserLimit | None:
    """The events limit the settings ask for (None when ``events_browser_requests_per_minute`` is 0),
    counting in the Redis `client` talks to (`_storage`)."""
    per_minute = settings.events_browser_requests_per_minute
    return BrowserLimit(_storage(settings, client), per_minute) if per_minute else None


def failed_credentials(settings: Settings, client: Any) -> FailedCredentials | None:
    """The wrong-token limit the settings ask for (None when ``auth_failures_per_minute`` is 0), counting
    in the Redis `client` talks to (`_storage`)."""
    per_minute = settings.auth_failures_per_minute
    return FailedCredentials(_storage(settings, client), per_minute) if per_minute else None


def _storage(settings: Settings, client: Any) -> RedisStorage:
    """A `limits` storage in the Redis `client` talks to: on a single Redis through `client`'s own
    connections, on a Redis Cluster through a cluster client of the same nodes and timeouts (`limits`
    cannot share one)."""
    if settings.redis_cluster:
        url = urlsplit(settings.redis_url)
        options: dict[str, Any] = {
            "socket_timeout": settings.redis_socket_timeout_s,
            "socket_connect_timeout": settings.redis_connect_timeout_s,
        }
        if url.scheme == "rediss":
            options["ssl"] = True
        return RedisClusterStorage(
            f"async+redis+cluster://{url.netloc}", implementation="redispy", key_prefix=KEY_PREFIX, **options
        )
    return RedisStorage(
        "async+redis://",
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        connection_pool=client.connection_pool,
    )

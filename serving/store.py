"""The API's read side of the list cache: the live pointer, version metadata and stored lists.

`ListStore` is the small interface the routes use; `RedisListStore` implements it on the shared key
layout (`carousel.cache`). The live pointer is cached for a second per process so a list read is a
single round trip (one script on the shopper's key); a publish is seen by every worker within that
second.

Every Redis call has a hard deadline and goes through a circuit breaker: after a few consecutive
failures (Redis stopped, or accepting connections but not answering) the store stops asking for a
while and fails at once with `StoreUnavailable`, so requests are answered from a fallback in
microseconds instead of each waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import hiredis
import redis.asyncio as aredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from carousel.cache import keys
from carousel.cache.client import AsyncRedis, text
from carousel.cache.payload import decode_meta
from carousel.cache.scripts import READ_SHOPPER, RESOLVE_USER_LIST
from serving.realtime import EMPTY_STATE, ShopperState, state_from_flat

T = TypeVar("T")
# Segment and similar-item lists kept in memory per process (a few hundred bytes each).
IMMUTABLE_CACHE_SIZE = 20_000


class StoreUnavailable(RuntimeError):
    """Redis did not answer in time (or the breaker is open): serve a fallback."""


class ListStore(Protocol):
    """What the routes read lists through (`RedisListStore`; a test may give another)."""

    @property
    def client(self) -> AsyncRedis: ...
    @property
    def deadline_s(self) -> float: ...
    async def call(self, operation: Callable[[], Awaitable[T]]) -> T: ...
    async def live_version(self) -> str | None: ...
    async def version_meta(self, version: str) -> dict[str, Any] | None: ...
    async def user_list(self, version: str, base: str, user_id: str) -> bytes | None: ...
    async def item_list(self, version: str, base: str, item_id: str) -> bytes | None: ...
    async def shopper(
        self, version: str, base: str, user_id: str | None, session_id: str | None
    ) -> tuple[bytes | None, bool | None, ShopperState]: ...
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


class ScriptBatcher:
    """Auto-pipelining for one Lua script: the calls made in the same event-loop turn go to Redis as one
    batch of EVALSHA. Under concurrency most requests then share a round trip, and the client's
    per-call cost is paid once per batch.

    On a single Redis the batcher writes each batch on a connection of its own and reads the replies
    back: redis-py's pipeline object, pool bookkeeping and retry wrapper around it are a large share of
    the route's cost (`bench serve --profile`, docs/performance.md). On a cluster the client's pipelines route
    each EVALSHA to the node of its keys.

    A batch has one deadline, `deadline_s`, for its wait for a connection, its write and its replies;
    when it passes, every caller of the batch gets `TimeoutError`. So the callers need no timer of their
    own, and the batcher's connections have no socket timeout: with one, redis-py starts a task per
    write (`asyncio.wait_for` before Python 3.12) and a timer per reply, a tenth of the worker's time
    under load (docs/performance.md)."""

    def __init__(
        self,
        client: AsyncRedis,
        source: str,
        *,
        deadline_s: float,
        max_connections: int = 64,
        max_idle: int = 32,
    ) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._deadline_s = deadline_s
        self._pending: list[tuple[list[str], list[str], asyncio.Future[Any]]] = []
        self._pool = client.connection_pool if isinstance(client, aredis.Redis) else None
        self._idle: list[Any] = []
        self._max_idle = max_idle
        # Batches in flight at once (one connection each): while Redis stalls, new batches wait for a
        # slot instead of opening connections without bound.
        self._slots = asyncio.Semaphore(max_connections)

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((keys, args, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(batch))
        task.add_done_callback(_TASKS.discard)
        _TASKS.add(task)

    async def _run(self, batch: list[tuple[list[str], list[str], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(self._deadline_s):
                replies = await self._send(batch)
                # Redis restarted or flushed its scripts: load it and send the batch again.
                if any(isinstance(r, NoScriptError) for r in replies):
                    await self._client.script_load(self._source)
                    replies = await self._send(batch)
        except BaseException as exc:  # the connection failed or the deadline passed: every caller gets it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller gave up (its deadline passed)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _send(self, batch: list[tuple[list[str], list[str], asyncio.Future[Any]]]) -> list[Any]:
        if self._pool is None:
            pipe = self._client.pipeline(transaction=False)
            for keys, args, _ in batch:
                pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        async with self._slots:
            return await self._send_on_own_connection(batch)

    async def _send_on_own_connection(
        self, batch: list[tuple[list[str], list[str], asyncio.Future[Any]]]
    ) -> list[Any]:
        assert self._pool is not None
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = self._pool.make_connection()
            connection.socket_timeout = None  # the batch's deadline bounds it (see the class)
        try:
            # hiredis packs each command in one call; redis-py's packer re-encodes every argument in
            # Python first (5% of the worker under load).
            packed = b"".join(
                # hiredis's stub types the command as a 1-tuple; it takes any number of arguments.
                hiredis.pack_command(("EVALSHA", self._sha, len(keys), *keys, *args))  # type: ignore[arg-type]
                for keys, args, _ in batch
            )
            await connection.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            for _ in batch:  # every reply is read, errors included, so the connection stays in step
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            await connection.disconnect()  # a half-read connection is never reused
            raise
        if len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            await connection.disconnect()
        return replies

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


# Flush tasks in flight (the event loop keeps only weak references to tasks).
_TASKS: set[asyncio.Task[None]] = set()


class RedisListStore:
    """Lists and pointer read from Redis (single-key commands only: cluster-safe)."""

    def __init__(
        self,
        client: AsyncRedis,
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
        self._resolve = client.register_script(RESOLVE_USER_LIST)
        self._read_shopper = ScriptBatcher(client, READ_SHOPPER, deadline_s=deadline_s)
        # A version's lists never change once written, so the few segment lists and the similar-item
        # lists the overlay reads are kept per (version, key): no round trip after the first.
        self._immutable: OrderedDict[tuple[str, str], bytes | None] = OrderedDict()

    @property
    def client(self) -> AsyncRedis:
        return self._client

    @property
    def deadline_s(self) -> float:
        return self._deadline_s

    async def call(self, operation: Callable[[], Awaitable[T]], *, bounded: bool = False) -> T:
        """Run one Redis operation under the deadline and the breaker (`bounded`: the operation keeps
        the deadline itself, as the shopper reads' batcher does)."""
        if not self.breaker.allow():
            raise StoreUnavailable("Redis circuit is open")
        try:
            if bounded:
                result = await operation()
            else:
                async with asyncio.timeout(self._deadline_s):
                    result = await operation()
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
        raw = await self.call(lambda: self._client.get(keys.LIVE_KEY))
        version = text(raw) if raw else None
        if version != self._pointer[1]:
            # A version id can come back with other content (rolled back, then its interval rerun):
            # what was kept for the old pointer is dropped.
            self._meta.clear()
            self._immutable.clear()
        self._pointer = (now, version)
        return version

    async def version_meta(self, version: str) -> dict[str, Any] | None:
        if version in self._meta:
            return self._meta[version]
        raw = await self.call(lambda: self._client.get(keys.meta_key(version)))
        if not isinstance(raw, bytes):
            return None
        meta = decode_meta(raw)
        self._meta = {version: meta}  # only the live version's meta is worth keeping
        return meta

    async def user_list(self, version: str, base: str, user_id: str) -> bytes | None:
        """The shopper's list in `version` (a full version is its own base; a delta builds on one)."""
        return await self._resolved(keys.user_key(user_id), version, base)

    async def item_list(self, version: str, base: str, item_id: str) -> bytes | None:
        """The item's similar items in `version` (written by full versions, resolved like shoppers')."""
        key = keys.item_key(item_id)
        return await self._cached(version, key, lambda: self._resolve(keys=[key], args=[version, base]))

    async def _resolved(self, key: str, version: str, base: str) -> bytes | None:
        value: bytes | None = await self.call(lambda: self._resolve(keys=[key], args=[version, base]))
        return value

    async def shopper(
        self, version: str, base: str, user_id: str | None, session_id: str | None
    ) -> tuple[bytes | None, bool | None, ShopperState]:
        """A shopper's list, personalization consent and real-time state, or a visitor's session state,
        with ONE script call (the keys share a hash tag, so this holds on a cluster too)."""
        state_keys = keys.state_keys(user_id=user_id, session_id=session_id)
        if state_keys is None:
            return None, None, EMPTY_STATE
        if user_id:
            owned = (keys.user_key(user_id), keys.consent_key(user_id))
        else:
            # A visitor has no list and no consent record: keys that never exist, in the session's slot.
            owned = (f"{state_keys.cart}:no-list", f"{state_keys.cart}:no-consent")
        read = [*owned, state_keys.cart, state_keys.purchases, state_keys.interest, state_keys.views]
        reply = await self.call(lambda: self._read_shopper(read, [version, base]), bounded=True)
        if not isinstance(reply, list):  # the list alone: no consent record, no real-time state
            return reply or None, None, EMPTY_STATE
        listed, consent, cart, purchases, interest, views = reply
        state = state_from_flat(cart, purchases, interest, views)
        return listed or None, None if consent is None else consent == b"1", state

    async def segment_list(self, version: str, segment: str) -> bytes | None:
        key = keys.segment_key(version, segment)
        return await self._cached(version, key, lambda: self._get(key))

    async def _cached(
        self, version: str, key: str, read: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """An immutable list of `version`, read once and then served from memory (LRU-bounded)."""
        entry = (version, key)
        if entry in self._immutable:
            self._immutable.move_to_end(entry)
            return self._immutable[entry]
        value: bytes | None = await self.call(read)
        self._immutable[entry] = value
        if len(self._immutable) > IMMUTABLE_CACHE_SIZE:
            self._immutable.popitem(last=False)
        return value

    async def _get(self, key: str) -> bytes | None:
        """A string key's value (the meta and segment lists are stored as bytes)."""
        value = await self._client.get(key)
        return value if isinstance(value, bytes) else None

    async def ping(self) -> bool:
        return bool(await self.call(lambda: self._client.ping()))

    async def warm_up(self, timeout_s: float) -> str | None:
        """Do before the first request what would otherwise make it miss its deadline: a cluster client
        learns which node holds which slot, and the scripts are loaded (on every primary of a cluster).
        Best effort: Redis may be down at start, and the API must still come up and serve fallbacks;
        the reason is returned for the caller to report."""
        try:
            async with asyncio.timeout(timeout_s):
                initialize = getattr(self._client, "initialize", None)
                if initialize is not None:  # redis.asyncio.RedisCluster: fetch the slot map now
                    await initialize()
                for source in (READ_SHOPPER, RESOLVE_USER_LIST):
                    await self._client.script_load(source)
        except (RedisError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def close(self) -> None:
        await self._read_shopper.aclose()
        await self._client.aclose()

"""Auto-pipelining of the API's shopper reads (`serving.store.ScriptBatcher`) against a real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from serving.store import ScriptBatcher

pytestmark = pytest.mark.integration

ECHO = "return {KEYS[1], ARGV[1]}"
# Generous: a batch's deadline only matters in the test that lets it pass.
DEADLINE_S = 5.0
FAIL_ON_BAD = "if ARGV[1] == 'bad' then return redis.error_reply('bad argument') end return ARGV[1]"


def _run(redis_url: str, scenario: Any) -> Any:
    async def main() -> Any:
        client = aredis.Redis.from_url(redis_url)
        try:
            return await scenario(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_concurrent_calls_share_one_pipeline_and_each_gets_its_own_reply(redis_url: str) -> None:
    """Forty calls made together: each caller gets the reply to its own keys and arguments, in fewer
    round trips than calls."""

    async def scenario(client: Any) -> tuple[list[Any], int]:
        batcher = ScriptBatcher(client, ECHO, deadline_s=DEADLINE_S)
        sent = 0
        original = batcher._send

        async def counting(batch: Any) -> Any:
            nonlocal sent
            sent += 1
            return await original(batch)

        batcher._send = counting  # type: ignore[method-assign]
        replies = await asyncio.gather(*(batcher([f"k{i}"], [f"a{i}"]) for i in range(40)))
        return replies, sent

    replies, sent = _run(redis_url, scenario)
    assert replies == [[f"k{i}".encode(), f"a{i}".encode()] for i in range(40)]
    assert sent < 40


def test_a_flushed_script_cache_is_reloaded(redis_url: str) -> None:
    """After SCRIPT FLUSH (or a Redis restart) the next calls still answer."""

    async def scenario(client: Any) -> list[Any]:
        batcher = ScriptBatcher(client, ECHO, deadline_s=DEADLINE_S)
        await batcher(["k"], ["first"])
        await client.script_flush()
        return list(await asyncio.gather(batcher(["k"], ["x"]), batcher(["k"], ["y"])))

    assert _run(redis_url, scenario) == [[b"k", b"x"], [b"k", b"y"]]


def test_an_error_reaches_only_the_call_that_caused_it(redis_url: str) -> None:
    async def scenario(client: Any) -> list[Any]:
        batcher = ScriptBatcher(client, FAIL_ON_BAD, deadline_s=DEADLINE_S)
        return list(
            await asyncio.gather(batcher(["k"], ["good"]), batcher(["k"], ["bad"]), return_exceptions=True)
        )

    good, bad = _run(redis_url, scenario)
    assert good == b"good"
    assert isinstance(bad, ResponseError) and "bad argument" in str(bad)


def test_a_failed_connection_fails_every_waiting_call(redis_url: str) -> None:
    """Nothing listening: every caller gets the connection error (the store turns it into a fallback)."""

    async def scenario(_: Any) -> list[Any]:
        dead = aredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        batcher = ScriptBatcher(dead, ECHO, deadline_s=DEADLINE_S)
        try:
            return list(
                await asyncio.gather(*(batcher(["k"], ["a"]) for _ in range(3)), return_exceptions=True)
            )
        finally:
            await dead.aclose()

    assert all(isinstance(r, OSError | aredis.ConnectionError) for r in _run(redis_url, scenario))


def test_the_batchers_connection_stays_in_step_after_errors_and_is_reused(redis_url: str) -> None:
    """On a single Redis the batcher writes on its own connection: an error reply is read like any other,
    so the next batch on the same connection gets its own replies."""

    async def scenario(client: Any) -> tuple[list[Any], list[Any], int]:
        batcher = ScriptBatcher(client, FAIL_ON_BAD, deadline_s=DEADLINE_S)
        first = await asyncio.gather(
            batcher(["k"], ["bad"]), batcher(["k"], ["one"]), batcher(["k"], ["bad"]), return_exceptions=True
        )
        second = await asyncio.gather(batcher(["k"], ["two"]), batcher(["k"], ["three"]))
        idle = len(batcher._idle)
        await batcher.aclose()
        return list(first), list(second), idle

    first, second, idle = _run(redis_url, scenario)
    assert isinstance(first[0], ResponseError) and first[1] == b"one" and isinstance(first[2], ResponseError)
    assert second == [b"two", b"three"]
    assert idle == 1


def test_a_batch_past_its_deadline_fails_its_callers_and_its_connection_is_not_reused(
    redis_url: str,
) -> None:
    """A reply that misses the batch's deadline leaves its connection half-read: every caller of the
    batch gets `TimeoutError` at the deadline (the client has no socket timeout to do it), the
    connection is dropped, and the next call answers on a fresh one."""
    slow = (
        "local function now() local t = redis.call('TIME') return t[1] + t[2] / 1e6 end "
        "local start = now() while now() - start < tonumber(ARGV[1]) do end return ARGV[1]"
    )

    async def scenario(_: Any) -> tuple[list[Any], float, Any, int]:
        client = aredis.Redis.from_url(redis_url)
        try:
            batcher = ScriptBatcher(client, slow, deadline_s=0.1)
            await client.script_load(slow)
            started = time.perf_counter()
            timed_out = await asyncio.gather(
                batcher(["k"], ["1.0"]), batcher(["k"], ["0"]), return_exceptions=True
            )
            waited = time.perf_counter() - started
            idle_after_timeout = len(batcher._idle)
            await asyncio.sleep(1.0)  # Redis finishes the slow script
            return list(timed_out), waited, await batcher(["k"], ["0"]), idle_after_timeout
        finally:
            await client.aclose()

    timed_out, waited, answer, idle_after_timeout = _run(redis_url, scenario)
    assert all(isinstance(r, TimeoutError) for r in timed_out)
    assert waited < 0.8  # the deadline, not the slow script, ended the wait
    assert idle_after_timeout == 0
    assert answer == b"0"


def test_batches_in_flight_are_bounded_by_the_connection_limit(redis_url: str) -> None:
    """Five batches formed in five event-loop turns, one connection allowed: they take turns on it."""

    async def scenario(client: Any) -> tuple[list[Any], int]:
        batcher = ScriptBatcher(client, ECHO, deadline_s=DEADLINE_S, max_connections=1)
        # Counted where a batch holds its connection (not by connections made: a test elsewhere that
        # flushes the server's scripts makes the client reload them on a connection of its own).
        in_flight = most = 0
        original = batcher._send_on_own_connection

        async def counting(batch: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await original(batch)
            finally:
                in_flight -= 1

        batcher._send_on_own_connection = counting  # type: ignore[method-assign]
        calls = []
        for i in range(5):
            calls.append(asyncio.ensure_future(batcher([f"k{i}"], [f"a{i}"])))
            await asyncio.sleep(0)  # the next call lands in a later turn: a batch of its own
        replies = list(await asyncio.gather(*calls))
        await batcher.aclose()
        return replies, most

    replies, most = _run(redis_url, scenario)
    assert replies == [[f"k{i}".encode(), f"a{i}".encode()] for i in range(5)]
    assert most == 1

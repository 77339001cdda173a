"""Auto-pipelining of the API's shopper reads (`serving.store.ScriptBatcher`) against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from serving.store import ScriptBatcher

pytestmark = pytest.mark.integration

ECHO = "return {KEYS[1], ARGV[1]}"
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
        batcher = ScriptBatcher(client, ECHO)
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
        batcher = ScriptBatcher(client, ECHO)
        await batcher(["k"], ["first"])
        await client.script_flush()
        return list(await asyncio.gather(batcher(["k"], ["x"]), batcher(["k"], ["y"])))

    assert _run(redis_url, scenario) == [[b"k", b"x"], [b"k", b"y"]]


def test_an_error_reaches_only_the_call_that_caused_it(redis_url: str) -> None:
    async def scenario(client: Any) -> list[Any]:
        batcher = ScriptBatcher(client, FAIL_ON_BAD)
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
        batcher = ScriptBatcher(dead, ECHO)
        try:
            return list(
                await asyncio.gather(*(batcher(["k"], ["a"]) for _ in range(3)), return_exceptions=True)
            )
        finally:
            await dead.aclose()

    assert all(isinstance(r, OSError | aredis.ConnectionError) for r in _run(redis_url, scenario))

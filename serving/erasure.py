"""Erasure of a shopper (`DELETE /v1/users/{user_id}`): every key and list member naming them goes.

Removed at once: their lists in every version (`carousel:u:<id>`), their consent record, their
real-time state and that of the sessions they used, and their events still waiting in the event
streams. What remains is a digest in `carousel:erasures` (`carousel.rules.erasure`), which names nobody but
lets the batch leave them out: the pipeline drops shoppers whose digest is listed before it models or
publishes anything, so a run computed before the erasure cannot bring their list back.
"""

from __future__ import annotations

from typing import Any

from carousel.cache.client import AsyncRedis, text
from carousel.cache.keys import (
    ERASED_SESSIONS_KEY,
    ERASURES_KEY,
    EVENTS_STREAM,
    LINKS_STREAM,
    REJECTED_STREAM,
    consent_key,
    shopper_state_keys,
    user_key,
)
from carousel.rules.erasure import erasure_digest
from serving import audiences, realtime

_STREAM_CHUNK = 1_000


async def erase_shopper(client: AsyncRedis, user_id: str, *, salt: str) -> dict[str, int]:
    """Delete everything naming `user_id` and record the erasure's digest; returns what was removed."""
    await client.sadd(ERASURES_KEY, erasure_digest(user_id, salt))
    keys = shopper_state_keys(user_id)
    sessions: Any = await client.zrange(keys.sessions, 0, -1)
    if sessions:
        # Their guest sessions, as salted digests (a session id may embed the user id): the compaction
        # takes those sessions' events out of the lake (their sign-in links are dropped from the stream
        # below, before any drain could file them).
        await client.sadd(ERASED_SESSIONS_KEY, *(erasure_digest(text(s), salt) for s in sessions))
    deleted = int(await client.delete(user_key(user_id), consent_key(user_id)))
    deleted += int(await client.delete(*keys.all))
    deleted += await realtime.forget_sessions(client, sessions)
    await audiences.drop_shopper(client, user_id)
    events = 0
    for stream in (EVENTS_STREAM, REJECTED_STREAM, LINKS_STREAM):
        events += await _drop_stream_entries(client, stream, user_id, {bytes(s) for s in sessions})
    return {"keys": deleted, "stream_entries": events}


async def _drop_stream_entries(client: AsyncRedis, stream: str, user_id: str, sessions: set[bytes]) -> int:
    """XDEL the stream entries of one shopper and of their guest sessions (a scan of the stream: erasures
    are rare)."""
    dropped = 0
    start = "-"
    target = user_id.encode()
    while True:
        entries: Any = await client.xrange(stream, min=start, max="+", count=_STREAM_CHUNK)
        if not entries:
            return dropped
        doomed = [
            entry_id
            for entry_id, fields in entries
            if (fields or {}).get(b"user_id") == target or (fields or {}).get(b"session_id") in sessions
        ]
        if doomed:
            dropped += int(await client.xdel(stream, *doomed))
        last = text(entries[-1][0])
        start = "(" + last
        if len(entries) < _STREAM_CHUNK:
            return dropped

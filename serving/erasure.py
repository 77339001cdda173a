"""Erasure of a shopper (`DELETE /v1/users/{user_id}`): every key and list member naming them goes.

Removed at once: their lists in every version (`carousel:u:<id>`), their consent record, their
real-time state and that of the sessions they used, and their events still waiting in the event
streams. What remains is a salted SHA-256 digest in `carousel:erasures`, which names nobody but lets
the batch leave them out: the pipeline drops shoppers whose digest is listed before it models or
publishes anything, so a run computed before the erasure cannot bring their list back.
"""

from __future__ import annotations

import hashlib
from typing import Any

from serving import audiences, keyspace, realtime
from serving.consent import consent_key

ERASURES_KEY = "carousel:erasures"
DIGEST_PREFIX = "carousel-erasure:"
_STREAM_CHUNK = 1_000


def erasure_digest(user_id: str) -> str:
    return hashlib.sha256((DIGEST_PREFIX + user_id).encode()).hexdigest()


async def erase_shopper(client: Any, user_id: str) -> dict[str, int]:
    """Delete everything naming `user_id` and record the erasure's digest; returns what was removed."""
    await client.sadd(ERASURES_KEY, erasure_digest(user_id))
    keys = realtime.user_keys(user_id)
    sessions = await client.zrange(keys.sessions, 0, -1)
    deleted = int(await client.delete(keyspace.user_key(user_id), consent_key(user_id)))
    deleted += int(await client.delete(*keys.all))
    for session in sessions:  # each session's keys live in their own hash slot
        deleted += int(await client.delete(*realtime.session_keys(session.decode()).all))
    await audiences.drop_shopper(client, user_id)
    events = 0
    for stream in (realtime.EVENTS_STREAM, realtime.REJECTED_STREAM):
        events += await _drop_stream_entries(client, stream, user_id)
    return {"keys": deleted, "stream_entries": events}


async def _drop_stream_entries(client: Any, stream: str, user_id: str) -> int:
    """XDEL the stream entries of one shopper (a scan of the stream: erasures are rare)."""
    dropped = 0
    start = "-"
    target = user_id.encode()
    while True:
        entries = await client.xrange(stream, min=start, max="+", count=_STREAM_CHUNK)
        if not entries:
            return dropped
        doomed = [entry_id for entry_id, fields in entries if fields.get(b"user_id") == target]
        if doomed:
            dropped += int(await client.xdel(stream, *doomed))
        last = entries[-1][0].decode()
        start = "(" + last
        if len(entries) < _STREAM_CHUNK:
            return dropped

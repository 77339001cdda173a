"""The Redis key layout and payload format, shared by the loader (`jobs/publish.py`) and the API.

Keys (all single-key operations on the serving path, so a Redis Cluster works unchanged: list keys are
spread over hash slots by shopper, and the pointer is one key)::

    carousel:live                      -> the live version id (one atomic SET switches versions)
    carousel:history                   -> list of published version ids, newest first
    carousel:pending                   -> set of versions being written (swept if their loader died)
    carousel:ver:<version>:meta        -> orjson manifest of the version (run id, counts, generated_at)
    carousel:ver:<version>:u:<user_id> -> orjson list payload for one shopper
    carousel:ver:<version>:s:<segment> -> orjson list payload for one segment ("global", "country:FR", ...)

A list payload is the JSON array of served items, already in the response's shape, so the API only
slices it: ``[{"item_id": "...", "score": 0.93, "reason": {"code": "...", "text": "..."}}, ...]``.
"""

from __future__ import annotations

from typing import Any

import orjson

PREFIX = "carousel"
LIVE_KEY = f"{PREFIX}:live"
HISTORY_KEY = f"{PREFIX}:history"
# Versions being written and not yet live: a loader killed mid-way leaves its version here, and the next
# publish sweeps it away.
PENDING_KEY = f"{PREFIX}:pending"
GLOBAL_SEGMENT = "global"


def version_prefix(version: str) -> str:
    return f"{PREFIX}:ver:{version}:"


def meta_key(version: str) -> str:
    return f"{version_prefix(version)}meta"


def user_key(version: str, user_id: str) -> str:
    return f"{version_prefix(version)}u:{user_id}"


def segment_key(version: str, segment: str) -> str:
    return f"{version_prefix(version)}s:{segment}"


# The order in which an anonymous visitor's context picks a segment list (the first one stored wins).
CONTEXT_DIMENSIONS = ("country", "device", "referrer")


def context_segment(dimension: str, value: str) -> str:
    """The segment name for one context value, e.g. ("country", "Germany") -> "country:germany"."""
    return f"{dimension}:{value.strip().lower()}"


def country_segment(country: str) -> str:
    return context_segment("country", country)


def encode_items(items: list[dict[str, Any]]) -> bytes:
    """The stored payload of one list."""
    return orjson.dumps(items)


def decode_items(payload: bytes) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = orjson.loads(payload)
    return items


def encode_meta(meta: dict[str, Any]) -> bytes:
    return orjson.dumps(meta)


def decode_meta(payload: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = orjson.loads(payload)
    return meta

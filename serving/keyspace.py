"""The Redis key layout and payload format, shared by the loader (`jobs/publish.py`) and the API.

Keys (every serving read is a single-key command, so a Redis Cluster works unchanged: shoppers' keys
are spread over hash slots, and the pointer is one key)::

    carousel:live                      -> the live version id (one atomic SET switches versions)
    carousel:history                   -> list of published version ids, newest first
    carousel:pending                   -> set of versions written but not (or no longer) published,
                                          whose leftovers the next publish sweeps away
    carousel:ver:<version>:meta        -> orjson manifest of the version (run id, kind, base, counts)
    carousel:ver:<version>:s:<segment> -> orjson list payload for one segment ("global", "country:fr", ...)
    carousel:ver:<version>:departments -> orjson map item_id -> department, for visitors' category interest
    carousel:u:<user_id>               -> hash: field <version> -> orjson list payload for one shopper
    carousel:i:<item_id>               -> hash: field <version> -> the item's similar items (full versions)

Versions are ids that sort by the data interval they cover. A *full* version writes every shopper; an
*incremental* (delta) version writes only the shoppers whose inputs changed, on top of the newest full
version, its *base*. A shopper's list in version V is the field of their hash with the highest version
in [base(V), V]: one script on one key (`RESOLVE_USER_LIST`). So a delta is published by writing a few
hash fields and moving the pointer; rolling back moves the pointer back and the older fields are seen
again; fields of versions above the pointer are invisible until it moves. Each write also prunes the
hash to the fields some retained version still resolves to.

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


USER_PREFIX = f"{PREFIX}:u:"
ITEM_PREFIX = f"{PREFIX}:i:"
# Keys whose fields are versions (see the module docstring); swept and pruned together.
VERSIONED_HASH_PREFIXES = (USER_PREFIX, ITEM_PREFIX)


def user_key(user_id: str) -> str:
    return f"{USER_PREFIX}{user_id}"


def item_key(item_id: str) -> str:
    """The hash of an item's similar-items lists (field = version; written by full versions only)."""
    return f"{ITEM_PREFIX}{item_id}"


# The shopper's (or item's) list in version ARGV[1] whose base is ARGV[2]: the newest field in
# [base, version].
RESOLVE_USER_LIST = """
local best = nil
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f <= ARGV[1] and f >= ARGV[2] and (best == nil or f > best) then best = f end
end
if best == nil then return nil end
return redis.call('HGET', KEYS[1], best)
"""


def departments_key(version: str) -> str:
    """orjson map item_id -> department (top level of its category): lets the API turn a visitor's
    views into category interest and pick the matching `category:<department>` segment list."""
    return f"{version_prefix(version)}departments"


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

"""The Redis key layout and payload format, shared by the loader (`jobs/publish.py`) and the API.

Keys (every serving read touches one hash slot, so a Redis Cluster works unchanged: shoppers' keys are
spread over hash slots, and the pointer is one key)::

    carousel:{versions}:live           -> the live version id (one atomic SET switches versions)
    carousel:{versions}:history        -> list of published version ids, newest first
    carousel:{versions}:pending        -> set of versions written but not (or no longer) published,
                                          whose leftovers the next publish sweeps away
    carousel:ver:<version>:meta        -> orjson manifest of the version (run id, kind, base, counts)
    carousel:ver:<version>:s:<segment> -> orjson list payload for one segment ("global", "country:fr", ...)
    carousel:ver:<version>:departments -> orjson map item_id -> department, for visitors' category interest
    carousel:u:{u:<user_id>}           -> hash: field <version> -> the list payload of one shopper
    carousel:consent:{u:<user_id>}     -> the shopper's consent record (`serving/consent.py`)
    carousel:i:<item_id>               -> hash: field <version> -> the item's similar items (full versions)

Versions are ids that sort by the data interval they cover. A *full* version writes every shopper; an
*incremental* (delta) version writes only the shoppers whose inputs changed, on top of the newest full
version, its *base*. A shopper's list in version V is the field of their hash with the highest version
in [base(V), V]: one script on one key (`RESOLVE_USER_LIST`). So a delta is published by writing a few
hash fields and moving the pointer; rolling back moves the pointer back and the older fields are seen
again; fields of versions above the pointer are invisible until it moves. Each write also prunes the
hash to the fields some retained version still resolves to.

A shopper's keys carry the hash tag `{u:<user_id>}`, the tag of their real-time keys too
(`serving/realtime.py`), so the API reads their list, consent and real-time state with one script in
one round trip, on one node of a cluster as on a single Redis (`READ_SHOPPER`).

A list payload is compact, because a store keeps one per shopper: the distinct reasons of the list, then
the item ids, scores and reason references as three parallel arrays; a reason's text is stored only when
it is not the code's standard text (`REASON_TEXTS`), e.g. "Goes with <title>"::

    [[["similar_shoppers"], ["goes_with_yours", "Goes with Red Mug"]], ["i1", "i7"], [0.93, 0.9], [0, 1]]

`decode_items` (or lazily `iter_items`) turns it back into the served shape:
``{"item_id": "i1", "score": 0.93, "reason": {"code": "similar_shoppers", "text": "..."}}``. A 30-item
list takes about 0.7-0.9 KB; Redis keeps a hash of such values in its compact listpack encoding when
`hash-max-listpack-value` is at least `LISTPACK_VALUE_BYTES` (the managed server sets it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

PREFIX = "carousel"
# The version bookkeeping shares the hash tag `{versions}`: a rollback changes all three in one
# transaction, which a Redis Cluster allows only within one slot.
LIVE_KEY = f"{PREFIX}:{{versions}}:live"
HISTORY_KEY = f"{PREFIX}:{{versions}}:history"
# Versions being written and not yet live: a loader killed mid-way leaves its version here, and the next
# publish sweeps it away.
PENDING_KEY = f"{PREFIX}:{{versions}}:pending"
GLOBAL_SEGMENT = "global"


def version_prefix(version: str) -> str:
    return f"{PREFIX}:ver:{version}:"


def meta_key(version: str) -> str:
    return f"{version_prefix(version)}meta"


USER_PREFIX = f"{PREFIX}:u:"
ITEM_PREFIX = f"{PREFIX}:i:"
# Keys whose fields are versions (see the module docstring); swept and pruned together.
VERSIONED_HASH_PREFIXES = (USER_PREFIX, ITEM_PREFIX)


def user_tag(user_id: str) -> str:
    """The hash tag every key of one shopper carries: their keys share a slot on a Redis Cluster."""
    return f"{{u:{user_id}}}"


def user_key(user_id: str) -> str:
    return f"{USER_PREFIX}{user_tag(user_id)}"


def tagged_user_id(key: str | bytes, prefix: str) -> str:
    """The shopper of a key `<prefix>{u:<user_id>}` (the inverse of `user_key` and its siblings)."""
    text = key.decode() if isinstance(key, bytes) else key
    return text[len(prefix) + 3 : -1]


def item_key(item_id: str) -> str:
    """The hash of an item's similar-items lists (field = version; written by full versions only)."""
    return f"{ITEM_PREFIX}{item_id}"


# The shopper's (or item's) list in version ARGV[1] whose base is ARGV[2]: the newest field in
# [base, version].
_NEWEST_FIELD = """
local best = nil
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f <= ARGV[1] and f >= ARGV[2] and (best == nil or f > best) then best = f end
end
"""
RESOLVE_USER_LIST = (
    _NEWEST_FIELD
    + """
if best == nil then return nil end
return redis.call('HGET', KEYS[1], best)
"""
)


# One shopper's list, consent and real-time state in one call (all their keys share the `{u:<id>}` tag;
# an anonymous visitor's session keys share `{s:<id>}`). KEYS: list hash, consent hash, cart, purchases,
# interest (the first two may be a visitor's never-written keys). ARGV: version, base.
# Returns just the list (or nil) when there is no consent record and no real-time state, the common case,
# which spares the client parsing a nested reply; else {list or false, personalization flag or false,
# cart, purchases, interest}, without the list and the state when personalization was withdrawn ("0").
READ_SHOPPER = (
    """
local consent = redis.call('HGET', KEYS[2], 'personalization')
if consent == '0' then return {false, consent, {}, {}, {}} end
"""
    + _NEWEST_FIELD
    + """
local list = false
if best ~= nil then list = redis.call('HGET', KEYS[1], best) end
local cart = redis.call('ZRANGEBYSCORE', KEYS[3], '(0', '+inf', 'WITHSCORES')
local purchases = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
local interest = redis.call('HGETALL', KEYS[5])
if not consent and #cart == 0 and #purchases == 0 and #interest == 0 then return list end
return {list, consent, cart, purchases, interest}
"""
)


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


# The standard text of every reason code; a stored list names a text only where it differs.
REASON_TEXTS = {
    "buy_again": "You bought this before",
    "viewed": "You looked at this recently",
    "goes_with_yours": "Often bought together with items you chose",
    "similar_shoppers": "Shoppers with similar taste bought this",
    "popular": "Popular right now",
    "popular_in_country": "Popular in your country",
    "bestseller": "Bestseller right now",
    "new_arrival": "New in: just arrived",
    "new_for_you": "New in a category you like",
    # Set by the API's real-time overlay and the similar-items lists.
    "cart_reminder": "Still in your cart",
    "completes_cart": "Goes with what is in your cart",
    "bought_with": "Goes with what you just bought",
    "bought_together": "Often bought or viewed together",
}
# Scores are stored with this many significant digits: they order nothing (rows are in rank order) and
# are shown to clients only as a relative strength.
SCORE_DIGITS = 4
# The largest hash value Redis should keep in a listpack (`hash-max-listpack-value`): above a list's size.
LISTPACK_VALUE_BYTES = 4096


def encode_items(items: Iterable[tuple[str, float, str, str]]) -> bytes:
    """The stored payload of one list from its (item_id, score, reason code, reason text) in rank order
    (the loader rounds the scores to `SCORE_DIGITS` first, for a whole run at once)."""
    reasons: dict[tuple[str, str], int] = {}
    ids, scores, refs = [], [], []
    for item_id, score, code, text in items:
        ids.append(item_id)
        scores.append(score)
        refs.append(reasons.setdefault((code, text), len(reasons)))
    return encode_columns([reason_entry(code, text) for code, text in reasons], ids, scores, refs)


def reason_entry(code: str, text: str) -> list[str]:
    """A reason as stored: its code, and its text only when that is not the code's standard text."""
    return [code] if REASON_TEXTS.get(code) == text else [code, text]


def encode_columns(table: list[list[str]], ids: list[str], scores: list[float], refs: list[int]) -> bytes:
    """The payload from its parts: reasons, then item ids, scores and reason indices (rank order)."""
    return orjson.dumps([table, ids, scores, refs])


def iter_items(payload: bytes) -> Iterator[dict[str, Any]]:
    """The items of a stored list in the served shape, lazily (callers usually need the first few)."""
    table, ids, scores, refs = orjson.loads(payload)
    reasons = [{"code": r[0], "text": r[1] if len(r) > 1 else REASON_TEXTS.get(r[0], "")} for r in table]
    for item_id, score, ref in zip(ids, scores, refs, strict=True):
        yield {"item_id": item_id, "score": score, "reason": reasons[ref]}


def decode_items(payload: bytes) -> list[dict[str, Any]]:
    """Every item of a stored list, in the served shape."""
    return list(iter_items(payload))


def encode_meta(meta: dict[str, Any]) -> bytes:
    return orjson.dumps(meta)


def decode_meta(payload: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = orjson.loads(payload)
    return meta

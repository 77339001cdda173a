"""The Lua scripts carousel runs in Redis, and how the batch queues them into pipelines.

Every script touches the keys of one hash slot only (a shopper's `{u:<id>}` keys, one item's hash, or the
`{versions}` keys), so each works on a Redis Cluster unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from redis.cluster import RedisCluster
from redis.crc import key_slot

from carousel.cache.client import SyncRedis

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
# interest, views (the first two may be a visitor's never-written keys). ARGV: version, base.
# Returns just the list (or nil) when there is no consent record and no real-time state, the common case,
# which spares the client parsing a nested reply (and Redis, through one EXISTS, four reads); else {list or
# false, personalization flag or false, cart, purchases, interest, views}, without the list and the state when
# personalization was withdrawn.
READ_SHOPPER = (
    """
local consent = redis.call('HGET', KEYS[2], 'personalization')
if consent == '0' then return {false, consent, {}, {}, {}, {}} end
"""
    + _NEWEST_FIELD
    + """
local list = false
if best ~= nil then list = redis.call('HGET', KEYS[1], best) end
if redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[5], KEYS[6]) == 0 then
  if not consent then return list end
  return {list, consent, {}, {}, {}, {}}
end
local cart = redis.call('ZRANGEBYSCORE', KEYS[3], '(0', '+inf', 'WITHSCORES')
local purchases = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
local interest = redis.call('HGETALL', KEYS[5])
local views = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES')
if not consent and #cart == 0 and #purchases == 0 and #interest == 0 and #views == 0 then return list end
return {list, consent, cart, purchases, interest, views}
"""
)


# Move the pointer only forward (version ids sort by the data interval they cover), so a late retry
# of an older interval cannot replace a newer version. Single key: safe on a Redis Cluster.
SWITCH_FORWARD = """
local live = redis.call('GET', KEYS[1])
if live and live >= ARGV[1] then return live end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


# Shoppers' (or items') hashes, many per call. ARGV[1]: the version written now ('' to only prune),
# ARGV[2]: the ceiling (fields above it belong to versions still being written and are left alone),
# ARGV[3]: p, the number of (version, base) pairs that must stay resolvable, ARGV[4 .. 3+2p]: the pairs,
# then one payload per key when writing. For each key: write the field, keep it and the field each pair
# resolves to, drop the rest, and the key once it is empty. Returns the number of fields removed.
# Keys of one call share a hash slot on a cluster (`slot_batches`).
WRITE_AND_PRUNE = """
local version, ceiling, p = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed = 0
for k, key in ipairs(KEYS) do
  if version ~= '' then redis.call('HSET', key, version, ARGV[3 + 2 * p + k]) end
  local fields = redis.call('HKEYS', key)
  local keep = {}
  if version ~= '' then keep[version] = true end
  for i = 4, 3 + 2 * p, 2 do
    local best = nil
    for _, f in ipairs(fields) do
      if f <= ARGV[i] and f >= ARGV[i + 1] and (best == nil or f > best) then best = f end
    end
    if best then keep[best] = true end
  end
  local dropped = 0
  for _, f in ipairs(fields) do
    if not keep[f] and f <= ceiling then
      redis.call('HDEL', key, f)
      dropped = dropped + 1
    end
  end
  if dropped > 0 and redis.call('HLEN', key) == 0 then redis.call('DEL', key) end
  removed = removed + dropped
end
return removed
"""


# Applies one subject's events (in time order) to its keys; one script so the cart's compare-and-set is
# atomic. KEYS: cart, purchases, views, interest, sessions. ARGV: cart_ttl, purchases_ttl, views_ttl,
# views_max, purchases_max, tombstone_s, cart_max, sessions_max, then per event: event_type, item_id, ts,
# category or '', interest weight, session_id to remember or ''. Returns the sessions dropped from
# `sessions` by its count (the caller deletes their keys, which live in other hash slots).
RECORD_EVENTS = """
local cart, purchases, views, interest, sessions = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cart_ttl, purchases_ttl, views_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local views_max, purchases_max, tombstone_s = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cart_max, sessions_max = tonumber(ARGV[7]), tonumber(ARGV[8])
local function set_cart(item, signed)
  local current = redis.call('ZSCORE', cart, item)
  if current and math.abs(tonumber(current)) > math.abs(signed) then return end
  redis.call('ZADD', cart, signed, item)
end
local latest = nil
for i = 9, #ARGV, 6 do
  local kind, item, ts = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if latest == nil or ts > latest then latest = ts end
  if kind == 'view' then
    redis.call('ZADD', views, 'GT', ts, item)
  elseif kind == 'add_to_cart' then
    set_cart(item, ts)
  elseif kind == 'remove_from_cart' then
    set_cart(item, -ts)
  elseif kind == 'purchase' then
    redis.call('ZADD', purchases, 'GT', ts, item)
    set_cart(item, -ts)
  end
  if ARGV[i + 3] ~= '' and tonumber(ARGV[i + 4]) > 0 then
    redis.call('HINCRBYFLOAT', interest, ARGV[i + 3], ARGV[i + 4])
  end
  if ARGV[i + 5] ~= '' then redis.call('ZADD', sessions, 'GT', ts, ARGV[i + 5]) end
end
if latest == nil then return {} end
local function before(t) return '(' .. string.format('%.6f', t) end
redis.call('ZREMRANGEBYSCORE', cart, '(0', before(latest - cart_ttl))
redis.call('ZREMRANGEBYSCORE', cart, string.format('(%.6f', tombstone_s - latest), '(0')
-- At most cart_max removals (ranked first, the newest first: -t) and cart_max items in the cart (ranked
-- last, the oldest first): item ids are the client's, so the cart is bounded by count as well as by time.
local removed_count = redis.call('ZCOUNT', cart, '-inf', '(0')
if removed_count > cart_max then redis.call('ZREMRANGEBYRANK', cart, cart_max, removed_count - 1) end
local size = redis.call('ZCARD', cart)
local held = size - math.min(removed_count, cart_max)
if held > cart_max then redis.call('ZREMRANGEBYRANK', cart, size - held, size - cart_max - 1) end
redis.call('ZREMRANGEBYSCORE', views, '-inf', before(latest - views_ttl))
redis.call('ZREMRANGEBYRANK', views, 0, -views_max - 1)
redis.call('ZREMRANGEBYSCORE', purchases, '-inf', before(latest - purchases_ttl))
redis.call('ZREMRANGEBYRANK', purchases, 0, -purchases_max - 1)
redis.call('ZREMRANGEBYSCORE', sessions, '-inf', before(latest - purchases_ttl))
local dropped_sessions = redis.call('ZRANGE', sessions, 0, -sessions_max - 1)
if #dropped_sessions > 0 then redis.call('ZREMRANGEBYRANK', sessions, 0, -sessions_max - 1) end
redis.call('EXPIRE', cart, cart_ttl)
redis.call('EXPIRE', views, views_ttl)
redis.call('EXPIRE', interest, views_ttl)
redis.call('EXPIRE', purchases, purchases_ttl)
redis.call('EXPIRE', sessions, purchases_ttl)
return dropped_sessions
"""


class PipelinedScript:
    """A Lua script queued into pipelines as EVALSHA, on a single Redis and on a cluster alike (redis-py's
    cluster pipelines refuse `Script` objects but route a raw EVALSHA by its keys). Loaded on every
    primary first."""

    def __init__(self, client: SyncRedis, source: str) -> None:
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        client.script_load(source)

    def queue(self, pipe: Any, keys: list[Any], args: list[Any]) -> None:
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


# Keys per script call: one call writes this many shoppers (a cluster splits them by slot first).
KEYS_PER_CALL = 64


def slot_batches(
    client: SyncRedis, entries: Iterable[tuple[Any, bytes]]
) -> Iterator[list[tuple[Any, bytes]]]:
    """(key, payload) entries in groups of up to `KEYS_PER_CALL` for one script call each: consecutive on
    a single Redis; on a cluster grouped by hash slot first, since a script's keys must share one."""
    if not isinstance(client, RedisCluster):
        batch: list[tuple[Any, bytes]] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) >= KEYS_PER_CALL:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    by_slot: dict[int, list[tuple[Any, bytes]]] = {}
    for entry in entries:
        key = entry[0]
        slot = key_slot(key if isinstance(key, bytes) else key.encode())
        group = by_slot.setdefault(slot, [])
        group.append(entry)
        if len(group) >= KEYS_PER_CALL:
            yield by_slot.pop(slot)
    yield from by_slot.values()

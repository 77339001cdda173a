"""Load a run's lists into Redis as a new version and switch the live pointer atomically.

Steps: write the version's lists (shoppers as fields of their hash, segments under the version's own
prefix; nothing the live version resolves to is touched), check that every one is there, write the
version's manifest, then move `carousel:{versions}:live` with one atomic compare-and-set (a script on that single
key: the pointer only moves forward), and finally drop versions beyond the retention. A failure at any
step before the switch leaves the live version serving; a half-written version is never pointed at.

Two kinds of version (see `serving/keyspace.py`): *full* (every shopper; its own base) and *delta* (only
the shoppers whose inputs changed, on top of the live version's base), so the 15-minute run writes a
few thousand fields instead of every shopper's key and stays atomic and reversible.

Run from `jobs.pipeline` (CLI `carousel refresh` and the Airflow DAGs); `carousel publish rollback` uses
`rollback`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from redis.cluster import RedisCluster
from redis.crc import key_slot

from serving import keyspace

BATCH = 2_000
# Shoppers written per pipeline round trip. Redis runs a client's pipelined commands back to back, so
# this bounds how long a publish holds up the API's reads (a few milliseconds).
WRITE_BATCH = 512
Kind = Literal["full", "delta"]

# Move the pointer only forward (version ids sort by the data interval they cover), so a late retry
# of an older interval cannot replace a newer version. Single key: safe on a Redis Cluster.
_SWITCH_FORWARD = """
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
# Keys of one call share a hash slot on a cluster (see `_slot_batches`).
_WRITE_AND_PRUNE = """
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
# Keys per script call: one call writes this many shoppers (a cluster splits them by slot first).
KEYS_PER_CALL = 64


class PublishError(RuntimeError):
    """The version could not be published; the live version is unchanged."""


@dataclass(frozen=True)
class PublishResult:
    version: str
    live: str
    switched: bool
    user_lists: int
    segment_lists: int
    removed_versions: list[str]
    kind: str = "full"
    base: str = ""
    digest: str = ""
    # On a rerun of the live interval: whether the recomputed lists equal the published ones.
    identical: bool | None = None


# What a loader process should get when it shares a machine with the API: NumPy's huge pages off. With
# them on, the loader's multi-gigabyte arrays fault in 2 MB pages and every process on a 2-core VM stalls
# meanwhile (measured: worst 5 s slice p99 of the API 183-557 ms while a loader only encoded 1M lists,
# 28 ms with them off; Redis itself logged 35 ms stalls with no command of the loader's). NumPy reads the
# variable when it is imported, so it is set for the process that is started.
LOADER_ENV = {"NUMPY_MADVISE_HUGEPAGE": "0"}


def loader_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (this process's environment by default) with `LOADER_ENV` on top, and nothing else of this
    process's: a caller that points its job at another Redis or var/ keeps what it set."""
    return {**(os.environ if base is None else base), **LOADER_ENV}


# Rows of a sorted lists file encoded and written at a time (whole lists: about 20k shoppers of 30).
BLOCK_ROWS = 600_000


@dataclass(frozen=True)
class SortedListsFile:
    """A run's lists in a Parquet file sorted by owner (as `jobs.pipeline` writes them), read in blocks
    of whole lists, so the loader holds one block and never the run's tens of millions of rows (a
    million shoppers' lists read whole took the loader to 9.3 GB)."""

    path: Path
    key_column: str = "user_id"
    block_rows: int = BLOCK_ROWS
    # Erasure digests of shoppers whose lists are left out as the blocks are read.
    erased: frozenset[str] = frozenset()

    def rows(self) -> int:
        return int(pq.ParquetFile(self.path).metadata.num_rows)

    def is_sorted(self) -> bool:
        """Whether the owners are in ascending order (read as one Arrow column, not Python strings)."""
        owners = pq.read_table(self.path, columns=[self.key_column]).column(0).combine_chunks()
        if len(owners) < 2:
            return True
        return bool(pc.all(pc.less_equal(owners.slice(0, len(owners) - 1), owners.slice(1))).as_py())

    def blocks(self) -> Iterator[pd.DataFrame]:
        """Frames of whole lists, in owner order; raises `PublishError` on rows out of owner order."""
        carry: pd.DataFrame | None = None
        last: Any = None
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.block_rows):
            frame = batch.to_pandas()
            if carry is not None:
                frame = pd.concat([carry, frame], ignore_index=True)
            if frame.empty:
                continue
            owners = frame[self.key_column].to_numpy()
            if (last is not None and owners[0] <= last) or bool((owners[1:] < owners[:-1]).any()):
                raise PublishError(f"{self.path} is not sorted by {self.key_column}: nothing switched")
            # The last owner's list may go on in the next batch: it waits for it.
            tail = int(np.searchsorted(owners, owners[-1], side="left"))
            if tail > 0:
                last = owners[tail - 1]
                yield self._kept(frame.iloc[:tail])
            carry = frame.iloc[tail:]
        if carry is not None and len(carry):
            yield self._kept(carry)

    def _kept(self, block: pd.DataFrame) -> pd.DataFrame:
        return _drop_erased(block, self.erased) if self.erased else block


Lists = pd.DataFrame | SortedListsFile


def _blocks(lists: Lists) -> Iterator[pd.DataFrame]:
    return lists.blocks() if isinstance(lists, SortedListsFile) else iter([lists])


def content_digest(
    user_lists: Lists, segment_lists: pd.DataFrame, item_lists: pd.DataFrame | None = None
) -> str:
    """SHA-256 over every (owner, payload) of a version in a fixed order: equal digests, equal content."""
    digest = _Digest()
    frames: list[tuple[str, Lists, str]] = [("u", user_lists, "user_id"), ("s", segment_lists, "segment")]
    if item_lists is not None:
        frames.append(("i", item_lists, "anchor_id"))
    for kind, frame, column in frames:
        for _ in digest.payloads(kind, frame, column):
            pass
    return digest.hexdigest()


class _Digest:
    """The content digest, fed by the lists as they are encoded (users, then segments, then items)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def payloads(self, kind: str, lists: Lists, key_column: str) -> Iterator[tuple[str, bytes]]:
        for block in _blocks(lists):
            for owner, payload in list_payloads(block, key_column):
                self._sha.update(f"{kind}:{owner}\n".encode())
                self._sha.update(payload)
                self._sha.update(b"\n")
                yield owner, payload

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def list_payloads(lists: pd.DataFrame, key_column: str) -> Iterator[tuple[str, bytes]]:
    """(owner, payload) for every list in a frame sorted by (owner, rank), in the stored compact format
    (`keyspace.encode_items`, which this builds vectorized: a million lists take seconds, not minutes)."""
    if lists.empty:
        return
    lists = lists.sort_values([key_column, "rank"], kind="stable")
    owners = lists[key_column].to_numpy()
    items = lists["item_id"].astype(str).tolist()
    scores = significant(lists["score"].to_numpy(dtype="float64"), keyspace.SCORE_DIGITS).tolist()
    bounds = np.flatnonzero(owners[1:] != owners[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(owners)]])
    row_owner = np.repeat(np.arange(len(starts), dtype=np.int64), ends - starts)
    # Each distinct (code, text) once per list, in order of first use; rows point at it. Integer keys
    # throughout: factorizing strings once, then pairs and (list, pair) as int64.
    code_ids, code_names = pd.factorize(lists["reason_code"].astype(str).to_numpy())
    text_ids, text_names = pd.factorize(lists["reason_text"].astype(str).to_numpy())
    pairs, pair_keys = pd.factorize(code_ids.astype(np.int64) * len(text_names) + text_ids)
    entries = [
        keyspace.reason_entry(str(code_names[k // len(text_names)]), str(text_names[k % len(text_names)]))
        for k in pair_keys.tolist()
    ]
    used, first_uses = pd.factorize(row_owner * len(pair_keys) + pairs)  # uniques in order of first use
    first_owner = first_uses // len(pair_keys)
    # Rows are grouped by list, so a first use's position within its list is its rank after the list's
    # first first-use.
    first_local = np.arange(len(first_uses)) - np.searchsorted(first_owner, first_owner, side="left")
    refs = first_local[used].tolist()
    table_pairs = (first_uses % len(pair_keys)).tolist()
    table_bounds = np.searchsorted(first_owner, np.arange(len(starts) + 1)).tolist()
    for k, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        table = [entries[p] for p in table_pairs[table_bounds[k] : table_bounds[k + 1]]]
        yield (
            str(owners[start]),
            keyspace.encode_columns(table, items[start:end], scores[start:end], refs[start:end]),
        )


def significant(values: np.ndarray, digits: int) -> np.ndarray:
    """`values` rounded to `digits` significant digits (0 stays 0), for the whole run at once."""
    magnitude = np.floor(np.log10(np.abs(values), where=values != 0, out=np.zeros_like(values)))
    factor = 10.0 ** (digits - 1 - magnitude)
    rounded: np.ndarray = np.round(values * factor) / factor
    return rounded


def publish_version(
    client: Any,
    *,
    version: str,
    user_lists: Lists,
    segment_lists: pd.DataFrame,
    manifest: dict[str, Any],
    keep_versions: int = 2,
    kind: Kind = "full",
    item_lists: pd.DataFrame | None = None,
    departments: dict[str, str] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PublishResult:
    """Write a version, verify it, switch the pointer forward, and apply retention.

    Parameters
    ----------
    client : redis.Redis or redis.cluster.RedisCluster
    version : str
        Sortable version id (the data interval end), e.g. ``20261129T004500Z``.
    user_lists, segment_lists : pandas.DataFrame
        The run's validated output (`user_id`/`segment`, `rank`, `item_id`, `score`, reason columns).
        For a delta, `user_lists` holds only the shoppers whose inputs changed. The shoppers' lists
        may also be a `SortedListsFile`, encoded and written block by block.
    manifest : dict
        Stored as the version's meta key and read by the API (`generated_at`, run id, counts).
    kind : "full" or "delta"
        A delta is published on top of the live version's base; it needs a live version.
    item_lists : pandas.DataFrame, optional
        Similar items per `anchor_id` (full versions; a delta's items resolve to its base's).
    departments : dict, optional
        item_id -> department of the catalog, stored with the version for the API.
    on_step : callable, optional
        Called with each step's name as it ends (`checked`, `shoppers written`, ..., `pruned`): for
        logs, and for the benchmark that lines up serving latency with what the loader was doing.
    """
    step = on_step or (lambda _: None)
    if kind == "delta" and item_lists is not None:
        raise PublishError("similar-item lists belong to full versions; a delta inherits its base's")
    # A run computed before a shopper was erased must not bring their list back.
    erased = _erased_digests(client)
    user_lists = _without_erased(user_lists, erased)
    live = _decode(client.get(keyspace.LIVE_KEY))
    if live == version:
        # A rerun of the interval that is already live: nothing to switch and nothing to rewrite; say
        # whether the recomputed content is the published one.
        digest = content_digest(user_lists, segment_lists, item_lists)
        stored = (read_meta(client, version) or {}).get("digest")
        return PublishResult(version, version, False, 0, 0, [], kind, "", digest, stored == digest)
    if live is not None and live > version:
        raise PublishError(f"version {version} is not newer than the live version {live}; nothing published")
    if kind == "delta":
        live_meta = read_meta(client, live) if live else None
        if live_meta is None:
            raise PublishError(
                f"incremental version {version} needs a live version to build on and there is none: "
                "run a full refresh first"
            )
        base = str(live_meta.get("base") or live)
    else:
        base = version
    # A version this loader (or a killed one) left half-written is cleared before writing anew.
    sweep_abandoned(client, keep=set())
    check_memory(client, estimate_bytes(user_lists, segment_lists, version))
    client.sadd(keyspace.PENDING_KEY, version)
    retained = _retained_pairs(client, version, base, keep_versions)
    step("checked")
    write = _PipelinedScript(client, _WRITE_AND_PRUNE)
    # The digest is taken as the lists are encoded for writing (in `content_digest`'s order), so a
    # million lists are encoded once.
    digest_of = _Digest()
    pipe = client.pipeline(transaction=False)

    def write_hashed(entries: Iterator[tuple[str, bytes]], key_of: Callable[[str], str]) -> list[str]:
        written: list[str] = []
        pending = 0
        for batch in _slot_batches(client, ((key_of(owner), payload) for owner, payload in entries)):
            keys = [key for key, _ in batch]
            args = [version, version, len(retained) // 2, *retained, *(p for _, p in batch)]
            write.queue(pipe, keys, args)
            written.extend(keys)
            pending += len(keys)
            if pending >= WRITE_BATCH:
                _execute(pipe)
                pending = 0
        _execute(pipe)
        return written

    user_keys = write_hashed(digest_of.payloads("u", user_lists, "user_id"), keyspace.user_key)
    step("shoppers written")
    segment_keys: list[str] = []
    for owner, payload in digest_of.payloads("s", segment_lists, "segment"):
        segment_keys.append(keyspace.segment_key(version, owner))
        pipe.set(segment_keys[-1], payload)
    if departments is not None:
        segment_keys.append(keyspace.departments_key(version))
        pipe.set(segment_keys[-1], orjson.dumps(departments))
    _execute(pipe)
    item_keys: list[str] = []
    if item_lists is not None:
        item_keys = write_hashed(digest_of.payloads("i", item_lists, "anchor_id"), keyspace.item_key)
    step("segments and items written")
    digest = digest_of.hexdigest()
    missing = _missing_fields(client, user_keys + item_keys, version) + _missing_keys(client, segment_keys)
    if missing:
        raise PublishError(
            f"version {version} is incomplete: {len(missing)} lists missing, e.g. {missing[0]}"
        )
    step("verified")
    n_users = len(user_keys)
    n_segments = len(segment_keys)
    meta = {
        **manifest,
        "version": version,
        "kind": kind,
        "base": base,
        "digest": digest,
        "user_lists": n_users,
        "segment_lists": n_segments,
        "item_lists": len(item_keys),
    }
    client.set(keyspace.meta_key(version), keyspace.encode_meta(meta))
    now_live = _decode(client.eval(_SWITCH_FORWARD, 1, keyspace.LIVE_KEY, version))
    switched = now_live == version
    if not switched:
        raise PublishError(
            f"a newer version {now_live} went live during this publish; {version} not switched"
        )
    client.lpush(keyspace.HISTORY_KEY, version)
    client.srem(keyspace.PENDING_KEY, version)
    step("switched")
    removed = apply_retention(client, keep_versions=keep_versions)
    step("retention applied")
    if kind == "full":
        # Shoppers absent from a full version keep old fields no retained version resolves to: drop them.
        prune_users(client, _retained_pairs(client, version, base, keep_versions))
        step("pruned")
    return PublishResult(version, version, switched, n_users, n_segments, removed, kind, base, digest)


def _erased_digests(client: Any) -> set[str]:
    from serving.erasure import ERASURES_KEY

    return {d.decode() if isinstance(d, bytes) else str(d) for d in client.smembers(ERASURES_KEY)}


def _without_erased(user_lists: Lists, digests: set[str]) -> Lists:
    """The lists without erased shoppers' (a file's blocks are filtered as they are read)."""
    if not digests:
        return user_lists
    if isinstance(user_lists, SortedListsFile):
        return replace(user_lists, erased=frozenset(digests))
    return _drop_erased(user_lists, digests)


def _drop_erased(frame: pd.DataFrame, digests: AbstractSet[str]) -> pd.DataFrame:
    from serving.erasure import erasure_digest

    if frame.empty:
        return frame
    users = pd.Series(frame["user_id"].unique())
    erased = users[users.map(lambda u: erasure_digest(str(u)) in digests)]
    return frame[~frame["user_id"].isin(erased)] if len(erased) else frame


def _retained_pairs(client: Any, version: str, base: str, keep_versions: int) -> list[str]:
    """Flattened (version, base) pairs of the versions that stay resolvable once `version` is live: it
    and the newest `keep_versions - 1` published ones (the live one among them)."""
    pairs = [version, base]
    older = [v for v in published_versions(client) if v != version][: max(0, keep_versions - 1)]
    live = live_version(client)
    if live and live != version and live not in older:
        older.append(live)
    for old in older:
        meta = read_meta(client, old)
        if meta is not None:
            pairs += [old, str(meta.get("base") or old)]
    return pairs


def prune_users(client: Any, retained: list[str]) -> int:
    """Apply the retention to every shopper's and item's hash (a SCAN): fields no retained version
    resolves to are removed, and hashes left empty are deleted. Returns the number of fields removed."""
    prune = _PipelinedScript(client, _WRITE_AND_PRUNE)
    ceiling = max(retained[0::2]) if retained else ""
    removed = 0
    pipe = client.pipeline(transaction=False)
    pending = 0
    for batch in _slot_batches(client, ((key, b"") for key in _versioned_hash_keys(client))):
        prune.queue(pipe, [key for key, _ in batch], ["", ceiling, len(retained) // 2, *retained])
        pending += len(batch)
        if pending >= WRITE_BATCH:
            removed += int(sum(pipe.execute()))
            pending = 0
    return removed + int(sum(pipe.execute()))


class _PipelinedScript:
    """A Lua script queued into pipelines as EVALSHA, on a single Redis and on a cluster alike (redis-py's
    cluster pipelines refuse `Script` objects but route a raw EVALSHA by its keys). Loaded on every
    primary first."""

    def __init__(self, client: Any, source: str) -> None:
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        client.script_load(source)

    def queue(self, pipe: Any, keys: list[Any], args: list[Any]) -> None:
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def _slot_batches(client: Any, entries: Iterable[tuple[Any, bytes]]) -> Iterator[list[tuple[Any, bytes]]]:
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


# Redis's own cost of one small string key (dict entry, key and value objects, allocator rounding).
KEY_OVERHEAD_BYTES = 90


def estimate_bytes(user_lists: Lists, segment_lists: pd.DataFrame, version: str, sample: int = 2_000) -> int:
    """Memory the version will take in Redis, from the encoded size of a sample of its lists (a sorted
    file's: from its first block, scaled to its rows)."""

    def shopper_key(v: str, owner: str) -> str:
        # A shopper's list is a field of their hash, named by the version: key and field both count.
        return keyspace.user_key(owner) + v

    total = _sampled_bytes(segment_lists, "segment", keyspace.segment_key, version, sample)
    if not isinstance(user_lists, SortedListsFile):
        return total + _sampled_bytes(user_lists, "user_id", shopper_key, version, sample)
    first = next(user_lists.blocks(), None)
    if first is None or first.empty:
        return total
    block_bytes = _sampled_bytes(first, "user_id", shopper_key, version, sample)
    return total + int(block_bytes * user_lists.rows() / len(first))


def _sampled_bytes(
    frame: pd.DataFrame, column: str, key_of: Callable[[str, str], str], version: str, sample: int
) -> int:
    if frame.empty:
        return 0
    owners = frame[column].drop_duplicates()
    picked = owners.sample(min(sample, len(owners)), random_state=0) if len(owners) > sample else owners
    subset = frame[frame[column].isin(picked)]
    sizes = [len(payload) + len(key_of(version, owner)) for owner, payload in list_payloads(subset, column)]
    return int(np.mean(sizes) * len(owners)) + KEY_OVERHEAD_BYTES * len(owners)


def check_memory(client: Any, needed_bytes: int, headroom: float = 0.10) -> None:
    """Refuse to load when Redis's maxmemory leaves no room for the new version.

    Without this, a full Redis would evict (or refuse) keys half-way through, possibly live ones.
    With no maxmemory set there is no limit to check against.
    """
    info = client.info("memory")
    nodes = info.values() if isinstance(info, dict) and "used_memory" not in info else [info]
    nodes = list(nodes)
    share = needed_bytes / max(1, len(nodes))  # keys spread evenly over a cluster's primaries
    for node in nodes:
        limit = int(node.get("maxmemory", 0))
        used = int(node.get("used_memory", 0))
        if limit and used + share * (1 + headroom) > limit:
            raise PublishError(
                f"Redis has {max(0, limit - used) / 1e6:.1f} MB free under maxmemory "
                f"({limit / 1e6:.1f} MB) but the new version needs about {share * (1 + headroom) / 1e6:.1f} MB: "
                "nothing loaded (raise maxmemory or lower retention)"
            )


def sweep_abandoned(client: Any, keep: set[str]) -> list[str]:
    """Delete what versions left behind that are pending but neither live nor published: half-written by
    a killed loader, or rolled back. Their shopper fields go too, or a later version would resolve to
    them."""
    live = live_version(client)
    history = set(published_versions(client))
    doomed = []
    for raw in client.smembers(keyspace.PENDING_KEY):
        version = _decode(raw) or ""
        if version in keep or version == live or version in history:
            continue
        doomed.append(version)
    if not doomed:
        return []
    batch: list[Any] = []
    for key in _versioned_hash_keys(client):
        batch.append(key)
        if len(batch) >= BATCH:
            _hdel_each(client, batch, doomed)
            batch = []
    if batch:
        _hdel_each(client, batch, doomed)
    for version in doomed:
        _unlink_prefix(client, keyspace.version_prefix(version))
        client.srem(keyspace.PENDING_KEY, version)
    return doomed


def _versioned_hash_keys(client: Any) -> Iterator[Any]:
    for prefix in keyspace.VERSIONED_HASH_PREFIXES:
        yield from client.scan_iter(match=prefix + "*", count=5_000)


def _hdel_each(client: Any, keys: list[Any], fields: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hdel(key, *fields)
    pipe.execute()


def published_versions(client: Any) -> list[str]:
    """Versions still held in Redis, newest first."""
    return [_decode(v) or "" for v in client.lrange(keyspace.HISTORY_KEY, 0, -1)]


def live_version(client: Any) -> str | None:
    return _decode(client.get(keyspace.LIVE_KEY))


def read_meta(client: Any, version: str) -> dict[str, Any] | None:
    raw = client.get(keyspace.meta_key(version))
    return keyspace.decode_meta(raw) if raw else None


def read_user_list(client: Any, version: str, user_id: str) -> bytes | None:
    """The shopper's stored list as `version` resolves it (what the API serves), or None."""
    return _resolve(client, version, keyspace.user_key(user_id))


def read_item_list(client: Any, version: str, item_id: str) -> bytes | None:
    """The item's similar items as `version` resolves them, or None."""
    return _resolve(client, version, keyspace.item_key(item_id))


def _resolve(client: Any, version: str, key: str) -> bytes | None:
    meta = read_meta(client, version)
    if meta is None:
        return None
    base = str(meta.get("base") or version)
    value: bytes | None = client.eval(keyspace.RESOLVE_USER_LIST, 1, key, version, base)
    return value


def read_user_lists(client: Any, version: str, user_ids: list[str]) -> pd.DataFrame:
    """Many shoppers' lists as `version` resolves them (pipelined), as rows user_id, rank, item_id, score;
    shoppers without a list in that version have no rows."""
    meta = read_meta(client, version)
    columns = ["user_id", "rank", "item_id", "score"]
    if meta is None or not user_ids:
        return pd.DataFrame(columns=columns)
    base = str(meta.get("base") or version)
    resolve = _PipelinedScript(client, keyspace.RESOLVE_USER_LIST)
    rows: list[tuple[str, int, str, float]] = []
    for start in range(0, len(user_ids), BATCH):
        chunk = user_ids[start : start + BATCH]
        pipe = client.pipeline(transaction=False)
        for user in chunk:
            resolve.queue(pipe, [keyspace.user_key(user)], [version, base])
        for user, payload in zip(chunk, pipe.execute(), strict=True):
            if payload:
                rows.extend(
                    (user, rank, str(item["item_id"]), float(item["score"]))
                    for rank, item in enumerate(keyspace.decode_items(payload), start=1)
                )
    return pd.DataFrame(rows, columns=columns)


def rollback(client: Any) -> tuple[str, str]:
    """Point `live` at the newest version older than the live one that is still complete in Redis.

    Returns (from_version, to_version). The rolled-back version's lists are then removed (it is marked
    pending in the same transaction, so an interrupted clean-up is finished by the next publish): its
    shopper fields must not resurface under a later delta.
    """
    live = live_version(client)
    if live is None:
        raise PublishError("nothing is live: there is nothing to roll back")
    for candidate in published_versions(client):
        if candidate < live and read_meta(client, candidate) is not None:
            # Rollback is the one deliberate backwards move, so it bypasses the forward-only script;
            # the check-and-set on the pointer keeps a concurrent publish from being overwritten.
            with client.pipeline(transaction=True) as pipe:
                pipe.watch(keyspace.LIVE_KEY)
                if _decode(pipe.get(keyspace.LIVE_KEY)) != live:
                    raise PublishError("the live version changed during rollback; try again")
                pipe.multi()
                pipe.set(keyspace.LIVE_KEY, candidate)
                pipe.lrem(keyspace.HISTORY_KEY, 0, live)
                pipe.sadd(keyspace.PENDING_KEY, live)
                pipe.execute()
            client.unlink(keyspace.meta_key(live))
            sweep_abandoned(client, keep=set())
            return live, candidate
    raise PublishError(f"no earlier complete version to roll back to from {live}")


def apply_retention(client: Any, *, keep_versions: int) -> list[str]:
    """Remove every version beyond the newest `keep_versions` (never the live one) with UNLINK."""
    live = live_version(client)
    history = published_versions(client)
    keep = set(history[:keep_versions]) | ({live} if live else set())
    removed: list[str] = []
    for version in history[keep_versions:]:
        if version in keep:
            continue
        # Drop the meta first: from then on the version counts as gone even if the sweep is interrupted.
        client.unlink(keyspace.meta_key(version))
        _unlink_prefix(client, keyspace.version_prefix(version))
        client.lrem(keyspace.HISTORY_KEY, 0, version)
        removed.append(version)
    return removed


def _unlink_prefix(client: Any, prefix: str) -> None:
    batch: list[Any] = []
    for key in client.scan_iter(match=prefix + "*", count=5_000):
        batch.append(key)
        if len(batch) >= BATCH:
            _unlink_each(client, batch)
            batch = []
    if batch:
        _unlink_each(client, batch)


def _unlink_each(client: Any, keys: list[Any]) -> None:
    # One UNLINK per key in a pipeline: multi-key UNLINK would cross hash slots on a cluster.
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    pipe.execute()


def _missing_keys(client: Any, keys: list[str]) -> list[str]:
    missing: list[str] = []
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(key)
        missing.extend(k for k, found in zip(chunk, pipe.execute(), strict=True) if not found)
    return missing


def _missing_fields(client: Any, keys: list[str], field: str) -> list[str]:
    missing: list[str] = []
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.hexists(key, field)
        missing.extend(k for k, found in zip(chunk, pipe.execute(), strict=True) if not found)
    return missing


def _execute(pipe: Any) -> None:
    # SET answers True and the write script the number of fields it pruned; None or False is a refusal.
    results = pipe.execute(raise_on_error=True)
    if any(r is None or r is False for r in results):
        raise PublishError("Redis refused part of the version's writes")


def _decode(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)

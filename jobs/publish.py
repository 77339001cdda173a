"""Load a run's lists into Redis as a new version and switch the live pointer atomically.

Steps: write every list under the version's own key prefix with pipelined SETs (the live version is never
touched), check that every key is there, write the version's manifest, then move `carousel:live` with one
atomic compare-and-set (a script on that single key: the pointer only moves forward), and finally drop
versions beyond the retention with UNLINK. A failure at any step before the switch leaves the live
version serving; a half-written version is never pointed at.

Run from `jobs.pipeline` (CLI `carousel refresh` and the Airflow DAG); `carousel publish rollback` uses
`rollback`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from serving import keyspace

BATCH = 2_000

# Move the pointer only forward (version ids sort by the data interval they cover), so a late retry
# of an older interval cannot replace a newer version. Single key: safe on a Redis Cluster.
_SWITCH_FORWARD = """
local live = redis.call('GET', KEYS[1])
if live and live >= ARGV[1] then return live end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


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


def list_payloads(lists: pd.DataFrame, key_column: str) -> Iterator[tuple[str, bytes]]:
    """(owner, payload) for every list in a frame sorted by (owner, rank); payload in the served shape."""
    if lists.empty:
        return
    lists = lists.sort_values([key_column, "rank"], kind="stable")
    owners = lists[key_column].to_numpy()
    items = lists["item_id"].to_numpy()
    scores = np.round(lists["score"].to_numpy(dtype="float64"), 6)
    codes = lists["reason_code"].to_numpy()
    texts = lists["reason_text"].to_numpy()
    bounds = np.flatnonzero(owners[1:] != owners[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(owners)]])
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        payload = [
            {"item_id": items[i], "score": float(scores[i]), "reason": {"code": codes[i], "text": texts[i]}}
            for i in range(start, end)
        ]
        yield str(owners[start]), keyspace.encode_items(payload)


def publish_version(
    client: Any,
    *,
    version: str,
    user_lists: pd.DataFrame,
    segment_lists: pd.DataFrame,
    manifest: dict[str, Any],
    keep_versions: int = 2,
) -> PublishResult:
    """Write a version, verify it, switch the pointer forward, and apply retention.

    Parameters
    ----------
    client : redis.Redis or redis.cluster.RedisCluster
    version : str
        Sortable version id (the data interval end), e.g. ``20261129T004500Z``.
    user_lists, segment_lists : pandas.DataFrame
        The run's validated output (`user_id`/`segment`, `rank`, `item_id`, `score`, reason columns).
    manifest : dict
        Stored as the version's meta key and read by the API (`generated_at`, run id, counts).
    """
    live = _decode(client.get(keyspace.LIVE_KEY))
    if live == version:
        # A rerun of the interval that is already live: nothing to switch, and nothing to rewrite.
        return PublishResult(version, version, False, 0, 0, [])
    if live is not None and live > version:
        raise PublishError(f"version {version} is not newer than the live version {live}; nothing published")
    sweep_abandoned(client, keep={version})
    check_memory(client, estimate_bytes(user_lists, segment_lists, version))
    client.sadd(keyspace.PENDING_KEY, version)
    keys: list[str] = []
    pipe = client.pipeline(transaction=False)
    pending = 0
    for owner_kind, frame, column in (("u", user_lists, "user_id"), ("s", segment_lists, "segment")):
        for owner, payload in list_payloads(frame, column):
            key = (
                keyspace.user_key(version, owner)
                if owner_kind == "u"
                else keyspace.segment_key(version, owner)
            )
            pipe.set(key, payload)
            keys.append(key)
            pending += 1
            if pending >= BATCH:
                _execute(pipe)
                pending = 0
    if pending:
        _execute(pipe)
    missing = _missing_keys(client, keys)
    if missing:
        raise PublishError(f"version {version} is incomplete: {len(missing)} keys missing, e.g. {missing[0]}")
    n_users = int(user_lists["user_id"].nunique()) if not user_lists.empty else 0
    n_segments = int(segment_lists["segment"].nunique()) if not segment_lists.empty else 0
    meta = {**manifest, "version": version, "user_lists": n_users, "segment_lists": n_segments}
    client.set(keyspace.meta_key(version), keyspace.encode_meta(meta))
    now_live = _decode(client.eval(_SWITCH_FORWARD, 1, keyspace.LIVE_KEY, version))
    switched = now_live == version
    if not switched:
        raise PublishError(
            f"a newer version {now_live} went live during this publish; {version} not switched"
        )
    client.lpush(keyspace.HISTORY_KEY, version)
    client.srem(keyspace.PENDING_KEY, version)
    removed = apply_retention(client, keep_versions=keep_versions)
    return PublishResult(version, version, switched, n_users, n_segments, removed)


# Redis's own cost of one small string key (dict entry, key and value objects, allocator rounding).
KEY_OVERHEAD_BYTES = 90


def estimate_bytes(
    user_lists: pd.DataFrame, segment_lists: pd.DataFrame, version: str, sample: int = 2_000
) -> int:
    """Memory the version will take in Redis, from the encoded size of a sample of its lists."""
    total = 0
    for frame, column, key_of in (
        (user_lists, "user_id", keyspace.user_key),
        (segment_lists, "segment", keyspace.segment_key),
    ):
        if frame.empty:
            continue
        owners = frame[column].drop_duplicates()
        picked = owners.sample(min(sample, len(owners)), random_state=0) if len(owners) > sample else owners
        subset = frame[frame[column].isin(picked)]
        sizes = [
            len(payload) + len(key_of(version, owner)) for owner, payload in list_payloads(subset, column)
        ]
        total += int(np.mean(sizes) * len(owners)) + KEY_OVERHEAD_BYTES * len(owners)
    return total


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
    """Delete versions a killed loader left half-written (pending, never live, not in history)."""
    live = live_version(client)
    history = set(published_versions(client))
    swept = []
    for raw in client.smembers(keyspace.PENDING_KEY):
        version = _decode(raw) or ""
        if version in keep or version == live or version in history:
            continue
        _unlink_prefix(client, keyspace.version_prefix(version))
        client.srem(keyspace.PENDING_KEY, version)
        swept.append(version)
    return swept


def published_versions(client: Any) -> list[str]:
    """Versions still held in Redis, newest first."""
    return [_decode(v) or "" for v in client.lrange(keyspace.HISTORY_KEY, 0, -1)]


def live_version(client: Any) -> str | None:
    return _decode(client.get(keyspace.LIVE_KEY))


def read_meta(client: Any, version: str) -> dict[str, Any] | None:
    raw = client.get(keyspace.meta_key(version))
    return keyspace.decode_meta(raw) if raw else None


def rollback(client: Any) -> tuple[str, str]:
    """Point `live` at the newest version older than the live one that is still complete in Redis.

    Returns (from_version, to_version). The rolled-back version stays in Redis (for inspection) until
    retention removes it.
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
                pipe.execute()
            client.unlink(keyspace.meta_key(live))
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


def _execute(pipe: Any) -> None:
    results = pipe.execute(raise_on_error=True)
    if not all(results):
        raise PublishError("Redis refused part of the version's writes")


def _decode(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)

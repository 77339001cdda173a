"""The versions Redis keeps: retention after a publish, the sweep of what a killed loader left half
written, and rollback to the previous complete version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from carousel.cache import keys
from carousel.cache.client import SyncRedis
from carousel.cache.scripts import WRITE_AND_PRUNE, PipelinedScript, slot_batches
from carousel.cache.versions import BATCH, decode, live_version, published_versions, read_meta
from jobs.publishing import PublishError

# Shoppers written per pipeline round trip. Redis runs a client's pipelined commands back to back, so
# this bounds how long a publish holds up the API's reads (a few milliseconds).
WRITE_BATCH = 512


def retained_pairs(client: SyncRedis, version: str, base: str, keep_versions: int) -> list[str]:
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


def prune_users(client: SyncRedis, retained: list[str]) -> int:
    """Apply the retention to every shopper's and item's hash (a SCAN): fields no retained version
    resolves to are removed, and hashes left empty are deleted. Returns the number of fields removed."""
    prune = PipelinedScript(client, WRITE_AND_PRUNE)
    ceiling = max(retained[0::2]) if retained else ""
    removed = 0
    pipe = client.pipeline(transaction=False)
    pending = 0
    for batch in slot_batches(client, ((key, b"") for key in _versioned_hash_keys(client))):
        prune.queue(pipe, [key for key, _ in batch], ["", ceiling, len(retained) // 2, *retained])
        pending += len(batch)
        if pending >= WRITE_BATCH:
            removed += int(sum(pipe.execute()))
            pending = 0
    return removed + int(sum(pipe.execute()))


def sweep_abandoned(client: SyncRedis, keep: set[str]) -> list[str]:
    """Delete what versions left behind that are pending but neither live nor published: half-written by
    a killed loader, or rolled back. Their shopper fields go too, or a later version would resolve to
    them."""
    live = live_version(client)
    history = set(published_versions(client))
    doomed = []
    for raw in client.smembers(keys.PENDING_KEY):
        version = decode(raw) or ""
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
        _unlink_prefix(client, keys.version_prefix(version))
        client.srem(keys.PENDING_KEY, version)
    return doomed


def _versioned_hash_keys(client: SyncRedis) -> Iterator[Any]:
    for prefix in keys.VERSIONED_HASH_PREFIXES:
        yield from client.scan_iter(match=prefix + "*", count=5_000)


def _hdel_each(client: SyncRedis, keys: list[Any], fields: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hdel(key, *fields)
    pipe.execute()


def rollback(client: SyncRedis) -> tuple[str, str]:
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
                pipe.watch(keys.LIVE_KEY)
                if decode(pipe.get(keys.LIVE_KEY)) != live:
                    raise PublishError("the live version changed during rollback; try again")
                pipe.multi()
                pipe.set(keys.LIVE_KEY, candidate)
                pipe.lrem(keys.HISTORY_KEY, 0, live)
                pipe.sadd(keys.PENDING_KEY, live)
                pipe.execute()
            client.unlink(keys.meta_key(live))
            sweep_abandoned(client, keep=set())
            return live, candidate
    raise PublishError(f"no earlier complete version to roll back to from {live}")


def apply_retention(client: SyncRedis, *, keep_versions: int) -> list[str]:
    """Remove every version beyond the newest `keep_versions` (never the live one) with UNLINK."""
    live = live_version(client)
    history = published_versions(client)
    keep = set(history[:keep_versions]) | ({live} if live else set())
    removed: list[str] = []
    for version in history[keep_versions:]:
        if version in keep:
            continue
        # Drop the meta first: from then on the version counts as gone even if the sweep is interrupted.
        client.unlink(keys.meta_key(version))
        _unlink_prefix(client, keys.version_prefix(version))
        client.lrem(keys.HISTORY_KEY, 0, version)
        removed.append(version)
    return removed


def _unlink_prefix(client: SyncRedis, prefix: str) -> None:
    batch: list[Any] = []
    for key in client.scan_iter(match=prefix + "*", count=5_000):
        batch.append(key)
        if len(batch) >= BATCH:
            _unlink_each(client, batch)
            batch = []
    if batch:
        _unlink_each(client, batch)


def _unlink_each(client: SyncRedis, keys: list[Any]) -> None:
    # One UNLINK per key in a pipeline: multi-key UNLINK would cross hash slots on a cluster.
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    pipe.execute()

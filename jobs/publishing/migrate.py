"""Move a Redis written by an older carousel to the current key layout (`carousel.cache.keys`).

The layout gave every shopper key the hash tag `{u:<user_id>}` and the version bookkeeping the tag
`{versions}`, so one script reads a shopper and rollback is one transaction, on a cluster too. A Redis
populated before that holds `carousel:consent:<id>`, `carousel:u:<id>`, `carousel:live`,
`carousel:history` and `carousel:pending`: without this move the consent the store's platform reported
would be ignored and the live version unknown. Run once after upgrading: `carousel publish migrate`.

Safe to rerun and to run while the new API writes: values already at a new key win (they are newer),
old keys are deleted only after their content is copied. Works on a cluster (copies, never RENAME across
slots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carousel.cache import keys
from carousel.cache.client import SyncRedis
from carousel.cache.keys import CONSENT_PREFIX, consent_key

OLD_LIVE, OLD_HISTORY, OLD_PENDING = "carousel:live", "carousel:history", "carousel:pending"


@dataclass(frozen=True)
class Migrated:
    consents: int
    shopper_hashes: int
    version_keys: int


def migrate_keys(client: SyncRedis) -> Migrated:
    """Copy every old-layout key to its new name (new values win) and delete the old one."""
    consents = _move_hashes(client, CONSENT_PREFIX, consent_key)
    hashes = _move_hashes(client, keys.USER_PREFIX, keys.user_key)
    return Migrated(consents, hashes, _move_versions(client))


def _move_hashes(client: SyncRedis, prefix: str, new_key: Any) -> int:
    moved = 0
    for raw in list(client.scan_iter(match=prefix + "*", count=5_000)):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key.startswith(prefix + "{u:"):
            continue  # already the current layout
        target = new_key(key[len(prefix) :])
        newer = client.hgetall(target)
        old: dict[Any, Any] = {f: v for f, v in client.hgetall(key).items() if f not in newer}
        if old:
            client.hset(target, mapping=old)
        client.delete(key)
        moved += 1
    return moved


def _move_versions(client: SyncRedis) -> int:
    moved = 0
    live = client.get(OLD_LIVE)
    if live is not None:
        if client.get(keys.LIVE_KEY) is None:
            client.set(keys.LIVE_KEY, live)
        client.delete(OLD_LIVE)
        moved += 1
    history = client.lrange(OLD_HISTORY, 0, -1)
    if history:
        known = set(client.lrange(keys.HISTORY_KEY, 0, -1))
        missing = [v for v in history if v not in known]
        if missing:  # older versions go after the newer ones already recorded, newest first
            client.rpush(keys.HISTORY_KEY, *missing)
        client.delete(OLD_HISTORY)
        moved += 1
    pending = client.smembers(OLD_PENDING)
    if pending:
        client.sadd(keys.PENDING_KEY, *pending)
        client.delete(OLD_PENDING)
        moved += 1
    return moved

"""Reading published versions (blocking client): what is live, each version's meta, and a shopper's or
an item's list as a version resolves it. Used by the batch stages, the CLI and the demo; the API reads
the same keys through its own async store (`serving/store.py`).

A shopper's list in version V is the field of their hash with the highest version in [base(V), V]
(`scripts.RESOLVE_USER_LIST`): a delta version writes only the shoppers whose inputs changed on top of
its base, the newest full version.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from carousel.cache import keys, payload
from carousel.cache.client import SyncRedis, text
from carousel.cache.scripts import RESOLVE_USER_LIST, PipelinedScript

# Keys read per pipeline round trip.
BATCH = 2_000


def published_versions(client: SyncRedis) -> list[str]:
    """Versions still held in Redis, newest first."""
    return [decode(v) or "" for v in client.lrange(keys.HISTORY_KEY, 0, -1)]


def live_version(client: SyncRedis) -> str | None:
    return decode(client.get(keys.LIVE_KEY))


def read_meta(client: SyncRedis, version: str) -> dict[str, Any] | None:
    raw = client.get(keys.meta_key(version))
    return payload.decode_meta(raw) if isinstance(raw, bytes) else None


def read_user_list(client: SyncRedis, version: str, user_id: str) -> bytes | None:
    """The shopper's stored list as `version` resolves it (what the API serves), or None."""
    return _resolve(client, version, keys.user_key(user_id))


def read_item_list(client: SyncRedis, version: str, item_id: str) -> bytes | None:
    """The item's similar items as `version` resolves them, or None."""
    return _resolve(client, version, keys.item_key(item_id))


def _resolve(client: SyncRedis, version: str, key: str) -> bytes | None:
    meta = read_meta(client, version)
    if meta is None:
        return None
    base = str(meta.get("base") or version)
    value: bytes | None = client.eval(RESOLVE_USER_LIST, 1, key, version, base)
    return value


def read_user_lists(client: SyncRedis, version: str, user_ids: list[str]) -> pd.DataFrame:
    """Many shoppers' lists as `version` resolves them (pipelined), as rows user_id, rank, item_id, score;
    shoppers without a list in that version have no rows."""
    meta = read_meta(client, version)
    columns = ["user_id", "rank", "item_id", "score"]
    if meta is None or not user_ids:
        return pd.DataFrame(columns=columns)
    base = str(meta.get("base") or version)
    resolve = PipelinedScript(client, RESOLVE_USER_LIST)
    rows: list[tuple[str, int, str, float]] = []
    for start in range(0, len(user_ids), BATCH):
        chunk = user_ids[start : start + BATCH]
        pipe = client.pipeline(transaction=False)
        for user in chunk:
            resolve.queue(pipe, [keys.user_key(user)], [version, base])
        for user, stored in zip(chunk, pipe.execute(), strict=True):
            if stored:
                rows.extend(
                    (user, rank, str(item["item_id"]), float(item["score"]))
                    for rank, item in enumerate(payload.decode_items(stored), start=1)
                )
    return pd.DataFrame(rows, columns=columns)


def decode(value: Any) -> str | None:
    """A Redis reply as text (None stays None)."""
    return None if value is None else text(value)

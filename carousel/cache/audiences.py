"""Audience rows in Redis: the batch replaces a campaign's rows after each refresh, the API serves them
(`GET /v1/audiences/{name}`) and adds abandoned carts between runs. Keys: `carousel.cache.keys`.

Pages are ordered by (triggered_at, user_id), so walking the pages returns every row present throughout
exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from carousel.cache.client import SyncRedis, text
from carousel.cache.keys import NO_MARKETING_KEY, audience_index_key, audience_rows_key

CAMPAIGNS = ("abandoned_cart", "post_purchase", "browse_abandonment")


def epoch_seconds(at: Any) -> float:
    return float(pd.Timestamp(at).timestamp())


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def encode_row(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "user_id": str(row["user_id"]),
            "triggered_at": _iso(epoch_seconds(row["triggered_at"])),
            "items": row["items"],
            "variant": row["variant"],
            "held_out": bool(row["held_out"]),
        }
    )


# -- batch side (sync client) ---------------------------------------------------------------------------
def replace_campaign(
    client: SyncRedis, campaign: str, rows: Iterable[Mapping[str, Any]], *, no_marketing: set[str]
) -> None:
    """Swap in a campaign's new rows at once (readers see the old or the new audience, never a mix)."""
    rows = list(rows)
    staging_index, staging_rows = audience_index_key(campaign) + ":new", audience_rows_key(campaign) + ":new"
    pipe = client.pipeline(transaction=True)
    pipe.delete(staging_index, staging_rows)
    if rows:
        pipe.zadd(staging_index, {str(r["user_id"]): epoch_seconds(r["triggered_at"]) for r in rows})
        pipe.hset(staging_rows, mapping={str(r["user_id"]): encode_row(r) for r in rows})
        pipe.rename(staging_index, audience_index_key(campaign))
        pipe.rename(staging_rows, audience_rows_key(campaign))
    else:
        pipe.delete(audience_index_key(campaign), audience_rows_key(campaign))
    pipe.execute()
    refreshed = client.pipeline(transaction=True)
    refreshed.delete(NO_MARKETING_KEY + ":new")
    if no_marketing:
        refreshed.sadd(NO_MARKETING_KEY + ":new", *sorted(no_marketing))
        refreshed.rename(NO_MARKETING_KEY + ":new", NO_MARKETING_KEY)
    else:
        refreshed.delete(NO_MARKETING_KEY)
    refreshed.execute()


def current_trigger_times(client: SyncRedis) -> dict[tuple[str, str], pd.Timestamp]:
    """(campaign, user) -> triggered_at of every row in Redis: what the frequency cap compares with."""
    out: dict[tuple[str, str], pd.Timestamp] = {}
    for campaign in CAMPAIGNS:
        rows: Any = client.zrange(audience_index_key(campaign), 0, -1, withscores=True)
        for user, score in rows:
            out[(campaign, text(user))] = pd.Timestamp(score, unit="s", tz="UTC")
    return out

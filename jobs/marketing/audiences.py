"""Marketing audiences for triggered emails, computed from the lake after every refresh.

Three campaigns, each a set of rows (user_id, triggered_at, items with reasons, variant, held_out):

* `abandoned_cart`: the shopper's cart (added, not removed, not bought since) untouched for longer than
  `cart_abandon_after_s`; items: the cart, then what goes with it;
* `post_purchase`: a purchase `post_purchase_after_days` to `post_purchase_until_days` ago; items: what
  goes with the purchases (similar-items lists), then the shopper's personal list, never what they
  already bought;
* `browse_abandonment`: an item viewed `browse_min_views` times or more within the look-back and never
  carted or bought; items: that item, then what goes with it.

Rules that hold for every campaign: shoppers without marketing consent (the lake's users table, or the
API's consent record) and erased shoppers are never in an audience; holdout shoppers (the same salted
hash as the storefront) are recorded with `held_out=true` and are not in the send list; a frequency cap
keeps one row per shopper and campaign per `audience_cap_hours` (a newer trigger inside the cap keeps
the first row).

Run by the `audiences` stage of every refresh (`jobs.stages.audiences`), which writes each campaign's
rows as files for email tools and into Redis, where the API serves them and keeps abandoned carts current
between runs from the real-time state (`serving/audiences.py`). The triggers are found by Spark tasks
(`spark_audiences`, each shopper's events on an executor); consent, erasure, holdout and the cap are
applied to the triggered rows alone (`apply_rules`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from carousel.cache import versions
from carousel.cache.client import SyncRedis, sync_client
from carousel.cache.payload import decode_items
from carousel.rules.carts import CART_REMINDER, COMPLETES_CART, abandoned_cart
from carousel.rules.erasure import Erasures
from carousel.rules.holdout import HOLDOUT, assign_variant
from carousel.rules.reasons import reason
from configs.settings import Settings

ROW_COLUMNS = ["campaign", "user_id", "triggered_at", "items", "variant", "held_out"]


@dataclass(frozen=True)
class AudienceRules:
    cart_abandon_after_s: float
    post_purchase_after_days: float = 2.0
    post_purchase_until_days: float = 7.0
    browse_min_views: int = 3
    lookback_days: float = 14.0
    cap_hours: float = 24.0
    items_per_row: int = 6

    @classmethod
    def from_settings(cls, settings: Settings) -> AudienceRules:
        return cls(
            cart_abandon_after_s=settings.cart_abandon_after_s,
            post_purchase_after_days=settings.post_purchase_after_days,
            post_purchase_until_days=settings.post_purchase_until_days,
            browse_min_views=settings.browse_min_views,
            lookback_days=settings.audience_lookback_days,
            cap_hours=settings.audience_cap_hours,
        )


def _item(item_id: str, code: str) -> dict[str, Any]:
    return {"item_id": item_id, "reason": reason(code)}


def compute_audiences(
    events: pd.DataFrame,
    *,
    now: datetime,
    rules: AudienceRules,
    similar: Callable[[str], list[str]],
    personal: Callable[[str], list[str]],
) -> pd.DataFrame:
    """The triggers found in `events` (canonical events of known shoppers, before `now`), one row per
    (campaign, shopper), before consent, holdout and cap are applied.

    `similar(item)` gives an item's similar items and `personal(user)` the shopper's list, best first.
    """
    now_ts = pd.Timestamp(now)
    recent = events[events["user_id"].notna() & (events["ts"] < now_ts)]
    recent = recent[recent["ts"] >= now_ts - pd.Timedelta(days=rules.lookback_days)]
    rows: list[dict[str, Any]] = []
    for user, own in recent.sort_values("ts", kind="stable").groupby("user_id", sort=True):
        rows.extend(_triggers(str(user), own, now_ts, rules, similar, personal))
    return pd.DataFrame(rows, columns=ROW_COLUMNS[:4])


# The look-back window's shoppers are handed to `compute_audiences` in this many buckets: a call per
# shopper costs twice as much per shopper in pandas overhead as a call over many, and a bucket holds
# 1/256 of the window's events.
AUDIENCE_BUCKETS = 256
# A triggered row as the Spark tasks return it: the items as JSON text (a list of {item_id, reason}).
_TRIGGER_SCHEMA = "campaign string, user_id string, triggered_at timestamp, items string"


def spark_audiences(
    events: DataFrame, *, now: datetime, rules: AudienceRules, settings: Settings, version: str | None
) -> pd.DataFrame:
    """`compute_audiences` run by Spark tasks over the look-back window's shoppers, a bucket of them
    (by a hash of the id) per call: only the triggered rows come to the driver, never the window's
    events. The tasks read `version`'s similar items and personal lists from Redis (`ListReader`, one
    per Python worker), so executors must reach Redis as the driver does."""
    since = now - timedelta(days=rules.lookback_days)
    window = events.where(
        F.col("user_id").isNotNull() & (F.col("ts") >= F.lit(since)) & (F.col("ts") < F.lit(now))
    ).select("user_id", "item_id", "event_type", "ts")
    bucket = F.pmod(F.xxhash64("user_id"), F.lit(AUDIENCE_BUCKETS)).alias("bucket")

    def bucket_rows(shoppers: pd.DataFrame) -> pd.DataFrame:
        lists = _worker_lists(settings, version)
        found = compute_audiences(
            shoppers.assign(ts=pd.to_datetime(shoppers["ts"], utc=True)),
            now=now,
            rules=rules,
            similar=lists.similar,
            personal=lists.personal,
        )
        return found.assign(
            items=found["items"].map(json.dumps), triggered_at=pd.to_datetime(found["triggered_at"], utc=True)
        )

    found = window.groupBy(bucket).applyInPandas(bucket_rows, _TRIGGER_SCHEMA).toPandas()
    found["items"] = found["items"].map(json.loads)
    found["triggered_at"] = pd.to_datetime(found["triggered_at"], utc=True)
    return found.sort_values(["campaign", "user_id"], kind="stable").reset_index(drop=True)


# The list reader of this Python worker: Spark reuses workers across tasks, so one connection and one
# cache of lists serve every shopper a worker handles (kept for the newest version asked only).
_WORKER_LISTS: dict[tuple[str, str | None], ListReader] = {}


def _worker_lists(settings: Settings, version: str | None) -> ListReader:
    key = (settings.redis_url, version)
    if key not in _WORKER_LISTS:
        _WORKER_LISTS.clear()
        _WORKER_LISTS[key] = ListReader(sync_client(settings), version)
    return _WORKER_LISTS[key]


def _triggers(
    user: str,
    own: pd.DataFrame,
    now: pd.Timestamp,
    rules: AudienceRules,
    similar: Callable[[str], list[str]],
    personal: Callable[[str], list[str]],
) -> list[dict[str, Any]]:
    out = []
    cart: dict[str, pd.Timestamp] = {}
    bought: dict[str, pd.Timestamp] = {}
    for kind, item, ts in zip(own["event_type"], own["item_id"], own["ts"], strict=True):
        if kind == "add_to_cart":
            cart[item] = ts
        elif kind == "remove_from_cart":
            cart.pop(item, None)
        elif kind == "purchase":
            cart.pop(item, None)
            bought[item] = ts
    n = rules.items_per_row
    waiting = {item: at.timestamp() for item, at in cart.items()}
    abandoned = abandoned_cart(waiting, bought, now=now.timestamp(), after_s=rules.cart_abandon_after_s)
    if abandoned:
        items = [_item(i, CART_REMINDER) for i in abandoned]
        items += [_item(s, COMPLETES_CART) for i in abandoned for s in similar(i)[:2]]
        out.append(_row("abandoned_cart", user, cart[abandoned[0]], items, n, exclude=set(bought)))
    window = [
        i
        for i, ts in bought.items()
        if pd.Timedelta(days=rules.post_purchase_after_days)
        <= now - ts
        <= pd.Timedelta(days=rules.post_purchase_until_days)
    ]
    if window:
        last = max(bought[i] for i in window)
        items = [_item(s, "bought_with") for i in window for s in similar(i)[:3]]
        items += [_item(p, "for_you") for p in personal(user)]
        out.append(_row("post_purchase", user, last, items, n, exclude=set(bought)))
    views = own[own["event_type"] == "view"].groupby("item_id")["ts"].agg(["count", "max"])
    touched = set(own.loc[own["event_type"].isin(["add_to_cart", "purchase"]), "item_id"])
    browsed = views[(views["count"] >= rules.browse_min_views) & ~views.index.isin(list(touched))]
    if len(browsed):
        top = browsed.sort_values(["count", "max"], ascending=False).index.tolist()
        items = [_item(i, "viewed_often") for i in top[:2]] + [
            _item(s, "similar_to_viewed") for i in top[:2] for s in similar(i)[:3]
        ]
        out.append(_row("browse_abandonment", user, browsed["max"].max(), items, n, exclude=set(bought)))
    return out


def _row(
    campaign: str, user: str, at: pd.Timestamp, items: list[dict[str, Any]], n: int, exclude: set[str]
) -> dict[str, Any]:
    seen: set[str] = set()
    unique = []
    for item in items:
        if item["item_id"] in seen or item["item_id"] in exclude:
            continue
        seen.add(item["item_id"])
        unique.append(item)
    return {"campaign": campaign, "user_id": user, "triggered_at": at, "items": unique[:n]}


def apply_rules(
    rows: pd.DataFrame,
    *,
    no_marketing: set[str],
    erased: Erasures,
    salt: str,
    holdout_percent: float,
    previous: Mapping[tuple[str, str], pd.Timestamp],
    cap_hours: float,
) -> pd.DataFrame:
    """Consent, erasure, holdout and the frequency cap. `previous` maps (campaign, user) to the trigger
    time of the row already in the audience; a newer trigger within `cap_hours` of it keeps that row."""
    if rows.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    keep = ~rows["user_id"].isin(no_marketing)
    keep &= ~rows["user_id"].isin(erased.erased(rows["user_id"].unique()))
    rows = rows[keep & rows["items"].map(bool)].copy()
    cap = pd.Timedelta(hours=cap_hours)
    times = []
    for campaign, user, at in zip(rows["campaign"], rows["user_id"], rows["triggered_at"], strict=True):
        before = previous.get((campaign, user))
        times.append(before if before is not None and abs(at - before) < cap else at)
    rows["triggered_at"] = pd.to_datetime(pd.Series(times, index=rows.index), utc=True)
    rows["variant"] = rows["user_id"].map(
        lambda u: assign_variant(str(u), salt=salt, holdout_percent=holdout_percent)
    )
    rows["held_out"] = rows["variant"] == HOLDOUT
    return (
        rows[ROW_COLUMNS]
        .sort_values(["campaign", "triggered_at", "user_id"], kind="stable")
        .reset_index(drop=True)
    )


class ListReader:
    """Similar items and personal lists of the live version, read once per id."""

    def __init__(self, client: SyncRedis, version: str | None) -> None:
        self._client, self._version = client, version
        self._item, self._user = versions.read_item_list, versions.read_user_list
        self._cache: dict[tuple[str, str], list[str]] = {}

    def _ids(self, kind: str, key: str) -> list[str]:
        if self._version is None:
            return []
        if (kind, key) not in self._cache:
            reader = self._item if kind == "i" else self._user
            payload = reader(self._client, self._version, key)
            self._cache[(kind, key)] = [i["item_id"] for i in decode_items(payload)] if payload else []
        return self._cache[(kind, key)]

    def similar(self, item_id: str) -> list[str]:
        return self._ids("i", item_id)

    def personal(self, user_id: str) -> list[str]:
        return self._ids("u", user_id)

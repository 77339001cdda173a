"""The small store the storefront-page tests share: a published version in the test Redis and the lake
tables (users for the shopper picker, items for titles and prices) that `/shop` reads.

A helper module of the e2e tests (imported by their conftest and test modules), not a test file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import redis

from carousel.lake import Lake
from carousel.rules.holdout import TREATMENT, assign_variant
from configs.settings import Settings
from jobs.publishing import loader

VERSION = "20261101T000000Z"
STORED = 30  # list_length 20 + overflow 10
ITEMS = [f"i{k:03d}" for k in range(120)]
GERMANY_ITEMS = ITEMS[60:90]


@dataclass(frozen=True)
class ShopStore:
    """What was published and written, for the tests to compare the pages with."""

    shoppers: list[str]  # consenting treatment shoppers with a personal list, in user_id order
    no_consent: str  # has a personal list but no personalization consent in the lake
    without_list: str  # in the users table, no personal list in the version
    lists: dict[str, list[str]]  # shopper -> stored list
    countries: dict[str, str]  # shopper -> country

    def title(self, item: str) -> str:
        return item_title(item)


def item_title(item: str) -> str:
    return f"{'Garden' if int(item[1:]) < 60 else 'Kitchen'} thing {item[1:]}"


def reason_text(item: str) -> str:
    return f"Picked for you ({item})"


def catalog(items: list[str]) -> pd.DataFrame:
    """A catalog for `items`: the first 60 in the garden department, the rest in the kitchen."""
    return pd.DataFrame(
        {
            "item_id": items,
            "title": [f"Item {k}" for k in range(len(items))],
            "category": ["garden/tools" if k < 60 else "kitchen/pans" for k in range(len(items))],
            "brand": None,
            "price": [10.0 + k for k in range(len(items))],
            "in_stock": True,
        }
    )


def _rows(owner_column: str, owner: str, items: list[str], code: str) -> list[dict[str, Any]]:
    return [
        {
            owner_column: owner,
            "rank": r,
            "item_id": it,
            "score": 1.0 - r / 100,
            "reason_code": code,
            "reason_text": reason_text(it) if code == "viewed" else code.replace("_", " "),
        }
        for r, it in enumerate(items, start=1)
    ]


def _treatment(settings: Settings, prefix: str, count: int) -> list[str]:
    found = [
        user
        for user in (f"{prefix}{k:02d}" for k in range(200))
        if assign_variant(user, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
        == TREATMENT
    ]
    assert len(found) >= count, "not enough treatment shoppers"
    return found[:count]


def publish_shop_store(settings: Settings, client: redis.Redis) -> ShopStore:
    """Shopper k's list is items 5k..5k+29, Germany's list items 60..89, the global list the last 30
    items, and each item's similar items are the next three; the lake holds the users and the items."""
    shoppers = _treatment(settings, "shopper-", 6)
    no_consent = _treatment(settings, "zz-no-consent-", 1)[0]
    lists = {user: ITEMS[5 * k : 5 * k + STORED] for k, user in enumerate([*shoppers, no_consent])}
    countries = {user: ("Germany" if k % 2 == 0 else "France") for k, user in enumerate(lists)}
    loader.publish_version(
        client,
        version=VERSION,
        user_lists=pd.DataFrame(
            [row for user, items in lists.items() for row in _rows("user_id", user, items, "viewed")]
        ),
        segment_lists=pd.DataFrame(
            _rows("segment", "global", ITEMS[-STORED:], "bestseller")
            + _rows("segment", "country:germany", GERMANY_ITEMS, "popular_in_country")
        ),
        item_lists=pd.DataFrame(
            [
                row
                for k, it in enumerate(ITEMS[:-3])
                for row in _rows("anchor_id", it, ITEMS[k + 1 : k + 4], "bought_together")
            ]
        ),
        manifest={"run_id": "e2e", "generated_at": datetime.now(UTC).isoformat()},
        catalog=catalog(ITEMS),
    )
    without_list = "ghost-shopper"
    lake = Lake(settings.lake_dir)
    lake.upsert_users(
        pd.DataFrame(
            {
                "user_id": [*lists, without_list],
                "country": [*countries.values(), "Spain"],
                "consent_personalization": [user != no_consent for user in lists] + [True],
                "consent_marketing": [False] * (len(lists) + 1),
            }
        ),
        source="e2e users",
    )
    lake.upsert_items(
        pd.DataFrame(
            {
                "item_id": ITEMS,
                "title": [item_title(it) for it in ITEMS],
                "category": ["garden/tools" if k < 60 else "kitchen/pans" for k in range(len(ITEMS))],
                "brand": ["Acme"] * len(ITEMS),
                "price": [2.5 + k / 4 for k in range(len(ITEMS))],
                "in_stock": [True] * len(ITEMS),
                "first_seen": [pd.Timestamp("2026-01-01", tz="UTC")] * len(ITEMS),
            }
        ),
        source="e2e items",
    )
    return ShopStore(
        shoppers=sorted(shoppers),
        no_consent=no_consent,
        without_list=without_list,
        lists=lists,
        countries=countries,
    )

"""A toy feature set for the ranking's tests: two taste clusters of shoppers and items, small enough to
check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.features.frames import POP_WINDOWS, FeatureSet


def toy_feature_set(n_users: int = 60, n_items: int = 40, seed: int = 3) -> FeatureSet:
    """Two taste clusters: even users buy even items, odd users odd items; item 'i0' is out of stock."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(np.arange(u % 2, n_items, 2), size=8, replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 4))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "weight"]).drop_duplicates(
        ["user_id", "item_id"]
    )
    user_item = inter.assign(
        ui_purchases=inter["weight"],
        ui_units=inter["weight"],
        ui_views=1.0,
        ui_carts=0.0,
        ui_days_since_purchase=5.0,
        ui_days_since_touch=5.0,
    ).drop(columns="weight")
    pop = inter.groupby("item_id").size()
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]})
    items["category"] = np.where(np.arange(n_items) % 2 == 0, "even", "odd")
    items["item_price"] = 10.0
    items["in_stock"] = items["item_id"] != "i0"
    for w in POP_WINDOWS:
        items[f"pop_{w}d"] = items["item_id"].map(pop).fillna(0).astype(float)
    items["pop_all"] = items["pop_90d"]
    items["pop_trend"] = 1.0
    items["item_age_days"] = 100.0
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)]})
    users = users.assign(
        u_orders=3.0, u_items=8.0, u_days_since_active=1.0, u_events=10.0, u_median_price=10.0
    )
    affinity = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "category": np.where(np.arange(n_users) % 2 == 0, "even", "odd"),
            "cat_affinity": 1.0,
        }
    )
    interest = inter.rename(columns={"weight": "interest"})
    return FeatureSet(
        pd.Timestamp("2026-11-29", tz="UTC"), inter, user_item, items, users, affinity, interest=interest
    )

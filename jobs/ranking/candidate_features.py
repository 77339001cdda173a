"""The ranker's features: what is joined onto every candidate (its sources and ranks, ALS and
co-visitation scores, the shopper's history with the item, item popularity and age, price against the
shopper's usual price, category affinity, re-buy rates, shopper activity), and the labels of training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.features.frames import POP_WINDOWS, FeatureSet
from jobs.ranking.als import AlsModel
from jobs.ranking.columns import Columns, columns_at, frame_of, pair_positions, positions

FEATURES: tuple[str, ...] = (
    "als_score",
    "als_rank",
    "src_als",
    "src_history",
    "src_pop",
    "pop_rank",
    "ui_purchases",
    "ui_units",
    "ui_views",
    "ui_carts",
    "ui_days_since_purchase",
    "ui_days_since_touch",
    "pop_7d",
    "pop_30d",
    "pop_90d",
    "pop_trend",
    "item_age_days",
    "price_ratio",
    "cat_affinity",
    "cooc_score",
    "cooc_rank",
    "src_cooc",
    "u_rebuy_rate",
    "i_rebuy_rate",
    "src_new",
    "src_catpop",
    "u_orders",
    "u_items",
    "u_days_since_active",
    "u_events",
)


def rebuy_rates(
    user_item: pd.DataFrame,
    prior_weight: float = 5.0,
    *,
    stored: tuple[pd.DataFrame, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How often shoppers buy an item again: per shopper (share of their items bought in 2+ sessions)
    and per item (share of its buyers who came back), both shrunk toward the overall rate so a
    shopper or item with one purchase does not look certain. This is what lets the ranker learn when
    to show re-buys and when to show discovery.

    With `stored` (item rates and the overall rate of a stored model), the item side and the prior come
    from it and only the shoppers' own rates are computed: an incremental run's `user_item` holds the
    active shoppers alone, too few to say how often an item is bought again.
    """
    bought = user_item[user_item["ui_purchases"] >= 1]
    again = (bought["ui_purchases"] >= 2).astype("float64")
    overall = stored[1] if stored is not None else (float(again.mean()) if len(again) else 0.0)
    frames = []
    for key, name in (("user_id", "u_rebuy_rate"), ("item_id", "i_rebuy_rate")):
        if stored is not None and key == "item_id":
            frames.append(stored[0][["item_id", "i_rebuy_rate"]])
            continue
        grouped = again.groupby(bought[key], observed=True).agg(["sum", "count"])
        rate = (grouped["sum"] + overall * prior_weight) / (grouped["count"] + prior_weight)
        frames.append(rate.rename(name).reset_index())
    return frames[0], frames[1]


def overall_rebuy_rate(user_item: pd.DataFrame) -> float:
    """The share of bought (shopper, item) pairs bought in two or more sessions: the rates' prior."""
    bought = user_item.loc[user_item["ui_purchases"] >= 1, "ui_purchases"]
    return float((bought >= 2).mean()) if len(bought) else 0.0


def add_features(cands: pd.DataFrame, fs: FeatureSet, als: AlsModel) -> pd.DataFrame:
    """Join every ranking feature onto the candidates; missing history stays NaN (LightGBM handles it).

    The joins are left joins on keys unique in each feature frame, done on integer codes: each string
    id is hashed once per distinct value rather than once per candidate and frame."""
    user_codes, user_ids = pd.factorize(cands["user_id"].to_numpy(object))
    item_codes, item_ids = pd.factorize(cands["item_id"].to_numpy(object))
    user_index, item_index = pd.Index(user_ids), pd.Index(item_ids)

    def per_user(frame: pd.DataFrame) -> Columns:
        at = positions(pd.Index(frame["user_id"]), user_ids)[user_codes]
        return columns_at(frame, at, skip=("user_id",))

    def per_item(frame: pd.DataFrame) -> Columns:
        at = positions(pd.Index(frame["item_id"]), item_ids)[item_codes]
        return columns_at(frame, at, skip=("item_id",))

    parts = [
        columns_at(cands, None),
        columns_at(
            fs.user_item,
            pair_positions(
                (user_index, fs.user_item["user_id"], user_codes),
                (item_index, fs.user_item["item_id"], item_codes),
            ),
            skip=("user_id", "item_id"),
        ),
    ]
    user_rebuy, item_rebuy = rebuy_rates(fs.user_item, stored=fs.item_rebuy)
    parts += [per_user(user_rebuy), per_item(item_rebuy)]
    item_cols = ["item_id", "category", "item_price", *[f"pop_{w}d" for w in POP_WINDOWS], "pop_all"]
    item_part = per_item(fs.items[[*item_cols, "pop_trend", "item_age_days"]])
    parts += [item_part, per_user(fs.users)]
    category_codes, categories = pd.factorize(np.asarray(item_part["category"], dtype=object))
    affinity_at = pair_positions(
        (user_index, fs.affinity["user_id"], user_codes),
        (pd.Index(categories), fs.affinity["category"], category_codes),
    )
    parts.append(columns_at(fs.affinity, affinity_at, skip=("user_id", "category")))
    out = frame_of(*parts)
    missing_als = out["als_score"].isna()
    if missing_als.any():
        out.loc[missing_als, "als_score"] = als.score_pairs(
            out.loc[missing_als, "user_id"], out.loc[missing_als, "item_id"]
        )
    out["price_ratio"] = out["item_price"] / out["u_median_price"].where(out["u_median_price"] > 0)
    for col in ("ui_purchases", "ui_units", "ui_views", "ui_carts", "cat_affinity"):
        out[col] = out[col].fillna(0.0)
    for col in FEATURES:
        # Only what is not float64 yet: a column set again is a copy, and most are float64 already.
        if out[col].dtype != np.float64:
            out[col] = out[col].astype("float64")
    return out


def label_candidates(cands: pd.DataFrame, future_purchases: pd.DataFrame) -> pd.DataFrame:
    """Mark candidates bought in the label window (`future_purchases`: user_id, item_id)."""
    bought = future_purchases[["user_id", "item_id"]].drop_duplicates().assign(label=1)
    out = cands.merge(bought, on=["user_id", "item_id"], how="left")
    out["label"] = out["label"].fillna(0).astype("int32")
    return out

"""Candidates: for each shopper, the union of ALS top-k, their own history, items co-visited with theirs,
new arrivals and bestsellers in their favourite categories and popular items, one row per (shopper,
item) with the sources that proposed it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.features.frames import FeatureSet
from jobs.ranking.als import AlsModel
from jobs.ranking.columns import Columns, columns_at, frame_of
from jobs.ranking.covisitation import CoVisitation


def new_in_favourite_categories(
    fs: FeatureSet, users: pd.Index, max_age_days: float, per_user: int, top_categories: int = 3
) -> pd.DataFrame:
    """(user_id, item_id): new arrivals in each shopper's favourite categories, so items without a
    history can reach personal lists (the ranker sees `src_new` and `item_age_days` and decides).
    """
    fresh = fs.items[fs.items["in_stock"] & (fs.items["item_age_days"] <= max_age_days)]
    fresh = fresh.sort_values(["pop_7d", "item_age_days"], ascending=[False, True])
    return _in_favourite_categories(fs, users, fresh, per_user, top_categories)


def popular_in_favourite_categories(
    fs: FeatureSet, users: pd.Index, per_user: int, top_categories: int = 3
) -> pd.DataFrame:
    """(user_id, item_id): the month's bestsellers of each shopper's favourite categories. An explore
    source for shoppers whose few purchases give ALS and co-visitation little to go on: the global
    bestsellers miss their categories, and their category's best items are the likeliest first buys."""
    stocked = fs.items[fs.items["in_stock"] & (fs.items["pop_30d"] > 0)]
    stocked = stocked.sort_values(["pop_30d", "pop_90d"], ascending=[False, False], kind="stable")
    return _in_favourite_categories(fs, users, stocked, per_user, top_categories)


def _in_favourite_categories(
    fs: FeatureSet, users: pd.Index, pool: pd.DataFrame, per_user: int, top_categories: int
) -> pd.DataFrame:
    """(user_id, item_id): the first `per_user` items of `pool` (in its order) in each shopper's
    `top_categories` categories by affinity, at most `per_user` per shopper."""
    if pool.empty or fs.affinity.empty:
        return pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object)})
    pool = pool.groupby("category", sort=False).head(per_user)[["category", "item_id"]]
    favourite = fs.affinity[fs.affinity["user_id"].isin(users)].sort_values(
        ["user_id", "cat_affinity"], ascending=[True, False]
    )
    favourite = favourite.groupby("user_id", sort=False).head(top_categories)[["user_id", "category"]]
    pairs = favourite.merge(pool, on="category")[["user_id", "item_id"]]
    return pairs.groupby("user_id", sort=False).head(per_user).reset_index(drop=True)


def build_candidates(
    fs: FeatureSet,
    als: AlsModel,
    users: np.ndarray,
    covis: CoVisitation,
    *,
    als_k: int,
    history_k: int = 50,
    popular_k: int = 50,
    cooc_k: int = 100,
    new_item_days: float = 14.0,
    new_k: int = 20,
    category_k: int = 20,
) -> pd.DataFrame:
    """The union of ALS top-k, the shopper's own history, items co-visited with theirs, new arrivals and
    bestsellers of their favourite categories, and popular items, one row per (user, item).

    Each row keeps its sources (`src_*` flags) and ranks; only in-stock catalog items are kept.
    """
    wanted = pd.Index(users)
    als_top = als.recommend(als_k)
    als_top = als_top[als_top["user_id"].isin(wanted)]
    als_top = als_top.assign(src_als=1.0)

    history = fs.user_item[fs.user_item["user_id"].isin(wanted)].sort_values(
        ["user_id", "ui_purchases", "ui_days_since_touch"], ascending=[True, False, True]
    )
    history = history.groupby("user_id", sort=False).head(history_k)[["user_id", "item_id"]]
    history = history.assign(src_history=1.0)

    cooc = covis.top(cooc_k).assign(src_cooc=1.0)
    fresh = new_in_favourite_categories(fs, wanted, new_item_days, new_k).assign(src_new=1.0)
    category = popular_in_favourite_categories(fs, wanted, category_k).assign(src_catpop=1.0)

    popular = fs.popular_items(popular_k)
    pop_pairs = pd.DataFrame(
        {
            "user_id": np.repeat(wanted.to_numpy(), len(popular)),
            "item_id": np.tile(popular["item_id"].to_numpy(), len(wanted)),
            "src_pop": 1.0,
        }
    )
    sources = [als_top, history, cooc, fresh, category, pop_pairs]
    # The union and the per-source flags are joined on integer (user, item) keys: the same rows and
    # values as a drop_duplicates and six left merges on the string ids, at a fraction of the cost.
    user_codes, user_ids = pd.factorize(np.concatenate([f["user_id"].to_numpy(object) for f in sources]))
    item_codes, item_ids = pd.factorize(np.concatenate([f["item_id"].to_numpy(object) for f in sources]))
    keys = user_codes.astype(np.int64) * max(1, len(item_ids)) + item_codes
    # First occurrences of in-stock catalog items: the rows and order of drop_duplicates, then the filter.
    in_stock = pd.Index(item_ids).isin(fs.in_stock_items())[item_codes]
    first = ~pd.Series(keys).duplicated().to_numpy() & in_stock
    cand_keys = pd.Index(keys[first])
    columns: list[Columns] = [
        {
            "user_id": np.asarray(user_ids, dtype=object)[user_codes[first]],
            "item_id": np.asarray(item_ids, dtype=object)[item_codes[first]],
        }
    ]
    offsets = np.cumsum([0, *(len(f) for f in sources)])
    for source, start, end in zip(sources, offsets[:-1], offsets[1:], strict=True):
        at = pd.Index(keys[start:end]).get_indexer(cand_keys)
        columns.append(columns_at(source, at, skip=("user_id", "item_id")))
    item_of_candidate = item_codes[first]
    popular_at = pd.Index(popular["item_id"]).get_indexer(item_ids)[item_of_candidate]
    columns.append(columns_at(popular, popular_at, skip=("item_id",)))
    cands = frame_of(*columns)
    for col in ("src_als", "src_history", "src_pop", "src_cooc", "src_new", "src_catpop"):
        cands[col] = cands[col].fillna(0.0)
    missing = cands["cooc_score"].isna()
    if missing.any():
        cands.loc[missing, "cooc_score"] = covis.lookup(
            cands.loc[missing, "user_id"], cands.loc[missing, "item_id"]
        )
    return cands

"""The feature set as of one moment: the Spark transforms run over the lake's events, as Spark frames
(`shopper_frames`, for scoring on the executors) or collected as sorted pandas frames
(`jobs.features.frames.FeatureSet`, for training on the driver)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.features import transforms
from jobs.features.frames import POP_WINDOWS, SHOPPER_FRAMES, FeatureSet, sorted_frame
from jobs.features.signals import CoocParams


def shopper_pairs(events: DataFrame, as_of: datetime, cooc: CoocParams) -> DataFrame:
    """The (shopper, item) statistics of `events` (`transforms.pair_stats`) that four shopper frames
    read."""
    return transforms.pair_stats(
        transforms.session_touches(events), as_of, cooc.half_life_days, cooc.cart_weight, cooc.view_weight
    )


def shopper_frames(
    events: DataFrame, items: DataFrame, pairs: DataFrame, as_of: datetime
) -> dict[str, DataFrame]:
    """The shopper-level frames (`SHOPPER_FRAMES`) of `events`, whose `shopper_pairs` are `pairs`."""
    return {
        "interactions": transforms.als_interactions(pairs),
        "user_item": transforms.user_item_stats(pairs),
        "users": transforms.user_stats(events, as_of),
        "affinity": transforms.user_category_affinity(pairs, items),
        "interest": transforms.shopper_interest(pairs),
    }


def basket_frame(events: DataFrame, as_of: datetime, half_life_days: float | None) -> pd.DataFrame:
    """Every session's weighted baskets, guests' included (`transforms.session_baskets`), collected in
    order: what the published similar-item lists are built from."""
    return sorted_frame(
        transforms.session_baskets(events, as_of, half_life_days).toPandas(), ["session_id", "item_id"]
    )


def item_frame(events: DataFrame, items: DataFrame, as_of: datetime) -> pd.DataFrame:
    """The items frame of a feature set: every catalog item's statistics over every event."""
    return sorted_frame(transforms.item_stats(events, items, as_of, POP_WINDOWS).toPandas(), ["item_id"])


def collect_feature_set(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    cooc: CoocParams | None = None,
    *,
    shoppers: DataFrame | None = None,
    baskets: bool = True,
    only: frozenset[str] | None = None,
) -> FeatureSet:
    """Every feature frame as of `as_of`. With `shoppers` (a frame of user_id), the shopper-level frames
    cover only them; item-level frames always cover every event. Without `baskets` the session baskets
    are skipped (a run scoring with a stored model takes the item-item similarity from it). With `only`,
    the other shopper-level frames are left empty (fitting the model's parts needs three of the five)."""
    cooc = cooc or CoocParams()
    # The given shoppers' events are read by several feature frames: kept once, they are a small share.
    own = events if shoppers is None else events.join(F.broadcast(shoppers), "user_id").cache()
    basket_frame = (
        transforms.session_baskets(events, as_of, cooc.basket_half_life).toPandas()
        if baskets
        else pd.DataFrame(columns=["session_id", "item_id", "weight"])
    )
    # Four frames read the pairs: kept once, they are aggregated once.
    pairs = shopper_pairs(own, as_of, cooc).cache()
    frames = {
        name: sorted_frame(frame.toPandas(), SHOPPER_FRAMES[name])
        if only is None or name in only
        else frame.limit(0).toPandas()
        for name, frame in shopper_frames(own, items, pairs, as_of).items()
    }
    feature_set = FeatureSet.of(
        pd.Timestamp(as_of),
        item_frame(events, items, as_of),
        frames,
        baskets=sorted_frame(basket_frame, ["session_id", "item_id"]),
    )
    pairs.unpersist()
    if shoppers is not None:
        own.unpersist()
    return feature_set

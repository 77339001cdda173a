"""The feature set as of one moment: the Spark transforms run over the lake's events, their results
collected as sorted pandas frames (`jobs.features.frames.FeatureSet`)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.features import transforms
from jobs.features.frames import POP_WINDOWS, FeatureSet, sorted_frame
from jobs.features.signals import CoocParams


# -- stage 1: compute ---------------------------------------------------------------------------------
def collect_feature_set(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    cooc: CoocParams | None = None,
    *,
    shoppers: DataFrame | None = None,
    baskets: bool = True,
) -> FeatureSet:
    """Every feature frame as of `as_of`. With `shoppers` (a frame of user_id), the shopper-level frames
    cover only them; item-level frames always cover every event. Without `baskets` the session baskets
    are skipped (a run scoring with a stored model takes the item-item similarity from it)."""
    cooc = cooc or CoocParams()
    # The given shoppers' events are read by several feature frames: kept once, they are a small share.
    own = events if shoppers is None else events.join(F.broadcast(shoppers), "user_id").cache()
    basket_frame = (
        transforms.session_baskets(events, as_of, cooc.basket_half_life).toPandas()
        if baskets
        else pd.DataFrame(columns=["session_id", "item_id", "weight"])
    )
    touches = transforms.session_touches(own).cache()
    feature_set = FeatureSet(
        as_of=pd.Timestamp(as_of),
        interactions=sorted_frame(transforms.als_interactions(touches).toPandas(), ["user_id", "item_id"]),
        user_item=sorted_frame(transforms.user_item_stats(touches, as_of).toPandas(), ["user_id", "item_id"]),
        items=sorted_frame(transforms.item_stats(events, items, as_of, POP_WINDOWS).toPandas(), ["item_id"]),
        users=sorted_frame(transforms.user_stats(own, as_of).toPandas(), ["user_id"]),
        affinity=sorted_frame(
            transforms.user_category_affinity(own, items).toPandas(), ["user_id", "category"]
        ),
        baskets=sorted_frame(basket_frame, ["session_id", "item_id"]),
        interest=sorted_frame(
            transforms.shopper_interest(
                touches, as_of, cooc.half_life_days, cooc.cart_weight, cooc.view_weight
            ).toPandas(),
            ["user_id", "item_id"],
        ),
    )
    touches.unpersist()
    if shoppers is not None:
        own.unpersist()
    return feature_set

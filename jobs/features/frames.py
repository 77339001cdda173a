"""The feature frames the ranking works on: pandas frames a Spark job computed from the lake as of one
moment (`jobs.features.collect`). Plain data, no Spark: scoring can run wherever the frames are."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The windows (days) item popularity is counted over: `pop_7d`, `pop_30d`, `pop_90d` of the items frame.
POP_WINDOWS = (7, 30, 90)

# The shopper-level frames of a feature set and the keys each is sorted by: a shopper's rows of all of
# them are what scoring that shopper needs, wherever it runs.
SHOPPER_FRAMES: dict[str, list[str]] = {
    "interactions": ["user_id", "item_id"],
    "user_item": ["user_id", "item_id"],
    "users": ["user_id"],
    "affinity": ["user_id", "category"],
    "interest": ["user_id", "item_id"],
}


@dataclass
class FeatureSet:
    """Everything the model needs, computed from events strictly before `as_of`."""

    as_of: pd.Timestamp
    interactions: pd.DataFrame  # user_id, item_id, weight
    user_item: pd.DataFrame  # user_id, item_id, ui_* columns
    items: pd.DataFrame  # item_id, category, item_price, in_stock, pop_*, pop_trend, item_age_days
    users: pd.DataFrame  # user_id, u_* columns
    affinity: pd.DataFrame  # user_id, category, cat_affinity
    baskets: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["session_id", "item_id", "weight"])
    )  # weighted session baskets (transforms.session_baskets)
    interest: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["user_id", "item_id", "interest"])
    )  # decayed shopper interest (transforms.shopper_interest)
    # Item re-buy rates and the overall rate, when they come from a stored model rather than from
    # `user_item` (an incremental run only holds the active shoppers' history).
    item_rebuy: tuple[pd.DataFrame, float] | None = None

    @classmethod
    def of(
        cls,
        as_of: pd.Timestamp,
        items: pd.DataFrame,
        shoppers: dict[str, pd.DataFrame],
        baskets: pd.DataFrame | None = None,
    ) -> FeatureSet:
        """A feature set from its items frame and its shopper-level frames (`SHOPPER_FRAMES`)."""
        return cls(
            as_of=as_of,
            items=items,
            interactions=shoppers["interactions"],
            user_item=shoppers["user_item"],
            users=shoppers["users"],
            affinity=shoppers["affinity"],
            interest=shoppers["interest"],
            baskets=pd.DataFrame(columns=["session_id", "item_id", "weight"]) if baskets is None else baskets,
        )

    def in_stock_items(self) -> np.ndarray:
        return self.items.loc[self.items["in_stock"], "item_id"].to_numpy()

    def popular_items(self, n: int) -> pd.DataFrame:
        return popular_items(self.items, n)


def popular_items(items: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` most bought in-stock items of an items frame (recent first, then all time) with their
    popularity rank."""
    ranked = items[items["in_stock"]].sort_values(
        ["pop_30d", "pop_90d", "pop_all", "item_id"], ascending=[False, False, False, True]
    )
    top = ranked.head(n)[["item_id"]].copy()
    top["pop_rank"] = np.arange(1, len(top) + 1, dtype="float64")
    return top


def sorted_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Spark returns rows in no fixed order; sorting makes every downstream step (and so a rerun of the
    same interval) reproducible to the byte."""
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)

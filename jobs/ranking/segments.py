"""Segment lists: the best sellers of each segment (`carousel.rules.segments`), topped up from the global
list when thin, with every few slots given to a new arrival so new products get exposure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from carousel.rules.segments import SEGMENT_REASONS, department


def new_arrivals(items: pd.DataFrame, max_age_days: float) -> pd.DataFrame:
    """In-stock items first seen in the last `max_age_days`, best early sellers first, then newest:
    the pool an exploration slot draws from, so new products get exposure before they have history.
    """
    fresh = items[items["in_stock"] & (items["item_age_days"] <= max_age_days)].copy()
    fresh["department"] = fresh["category"].astype(str).map(department)
    fresh = fresh.sort_values(["pop_7d", "item_age_days", "item_id"], ascending=[False, True, True])
    return fresh[["item_id", "department"]].reset_index(drop=True)


def segment_lists(
    popularity: pd.DataFrame, n: int, *, fresh: pd.DataFrame | None = None, explore_every: int = 5
) -> pd.DataFrame:
    """Top-n lists per segment from (segment, item_id, buyers).

    Thin segments are topped up from the global list, so every list has n items when the catalog allows,
    and every `explore_every`-th slot goes to a new arrival (`fresh`, from `new_arrivals`; for a
    category segment, one of that department) that the list does not already hold.
    """
    pop = popularity.sort_values(["segment", "buyers", "item_id"], ascending=[True, False, True])
    top = pop.groupby("segment", sort=False).head(n)
    global_top = top[top["segment"] == "global"]
    rows = [top]
    sizes = top.groupby("segment").size()
    for segment in sizes[sizes < n].index.difference(["global"]):
        have = set(top.loc[top["segment"] == segment, "item_id"])
        extra = global_top[~global_top["item_id"].isin(have)].assign(segment=segment, buyers=0)
        rows.append(extra)
    out = pd.concat(rows, ignore_index=True)
    # Segment buyers first, then global fill in global order (buyers 0 sorts after real counts).
    out["order"] = np.arange(len(out))
    out = out.sort_values(["segment", "buyers", "order"], ascending=[True, False, True], kind="stable")
    out = out.groupby("segment", sort=False).head(n).reset_index(drop=True)
    dimension = out["segment"].str.split(":", n=1).str[0]
    value = out["segment"].str.split(":", n=1).str[1].fillna("").str.title()
    out["reason_code"] = np.where(
        out["buyers"] == 0, "bestseller", dimension.map(lambda d: SEGMENT_REASONS[d][0])
    )
    templates = dimension.map(lambda d: SEGMENT_REASONS[d][1])
    out["reason_text"] = [t.format(value=v) for t, v in zip(templates, value, strict=True)]
    out.loc[out["buyers"] == 0, "reason_text"] = SEGMENT_REASONS["global"][1]
    out["slot_score"] = out["buyers"].astype("float64")
    if fresh is not None and not fresh.empty and explore_every > 0:
        out = _with_exploration(out, fresh, n, explore_every)
    out = out.reset_index(drop=True)
    out["rank"] = out.groupby("segment").cumcount() + 1
    # Scores fall with rank (the order the list is served in), scaled by the segment's best seller.
    out["score"] = (1.0 / out["rank"]).round(6)
    return out[["segment", "rank", "item_id", "score", "reason_code", "reason_text"]]


def _with_exploration(lists: pd.DataFrame, fresh: pd.DataFrame, n: int, every: int) -> pd.DataFrame:
    """Put one unseen new arrival at every `every`-th position of each list, keeping length n."""
    slots = n // every
    out = []
    for segment, group in lists.groupby("segment", sort=True):
        pool = fresh
        if str(segment).startswith("category:"):
            pool = fresh[fresh["department"] == str(segment).split(":", 1)[1]]
        picks = pool[~pool["item_id"].isin(group["item_id"])].head(slots)
        if picks.empty:
            out.append(group)
            continue
        regular = group.head(n - len(picks)).assign(pos=lambda g: np.arange(len(g), dtype="float64"))
        # The k-th pick sorts after k*(every-1) regular items and k-1 earlier picks: slot k*every.
        explore = picks.assign(
            segment=segment,
            buyers=0,
            reason_code="new_arrival",
            reason_text="New in: just arrived",
            pos=[k * (every - 1) - 0.5 for k in range(1, len(picks) + 1)],
        )
        merged = pd.concat(
            [regular, explore[regular.columns.intersection(explore.columns)]], ignore_index=True
        )
        out.append(merged.sort_values("pos", kind="stable").drop(columns="pos").head(n))
    return pd.concat(out, ignore_index=True)

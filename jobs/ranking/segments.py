"""Segment lists: the best sellers of each segment (`carousel.rules.segments`), topped up from the global
list when thin, with every few slots given to a new arrival so new products get exposure.

A context segment (country, device, referrer) ranks items by a credibility-weighted share: its own share
of purchases blended with the global share, trusted by how much it bought against how much the segments
of its dimension really differ (`credibility_constants`). A thin segment, or one of a dimension without
a taste of its own, gets the global order; a large distinct segment keeps its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from carousel.rules.segments import CONTEXT_DIMENSIONS, GLOBAL_SEGMENT, SEGMENT_REASONS, department


def new_arrivals(items: pd.DataFrame, max_age_days: float) -> pd.DataFrame:
    """In-stock items first seen in the last `max_age_days`, best early sellers first, then newest:
    the pool an exploration slot draws from, so new products get exposure before they have history.
    """
    fresh = items[items["in_stock"] & (items["item_age_days"] <= max_age_days)].copy()
    fresh["department"] = fresh["category"].astype(str).map(department)
    fresh = fresh.sort_values(["pop_7d", "item_age_days", "item_id"], ascending=[False, True, True])
    return fresh[["item_id", "department"]].reset_index(drop=True)


def credibility_constants(popularity: pd.DataFrame) -> dict[str, float]:
    """Per context dimension, the Bühlmann-Straub credibility constant k of its segments' item shares,
    from (segment, item_id, buyers): a segment with N purchases (buyer-item pairs) is trusted
    Z = N / (N + k), and the global share fills the rest.

    k is the within-segment variance over the variance of the segments' true shares. Shares are
    multinomial (variance p(1 - p) per purchase: I - 1 summed over I items); the between-segment
    variance is the Pearson chi-square of the dimension's segment x item table beyond its
    (S - 1)(I - 1) degrees of freedom, over N - sum(N_s^2) / N. With no excess (segments differ no more
    than their sizes explain) or a single segment, k is infinite: the dimension's lists are global.
    """
    dimension = popularity["segment"].str.split(":", n=1).str[0]
    out = {}
    for name in CONTEXT_DIMENSIONS:
        table = popularity.loc[dimension == name]
        item_total = table.groupby("item_id")["buyers"].sum()
        segment_total = table.groupby("segment")["buyers"].sum()
        total = float(segment_total.sum())
        items, segments = len(item_total), len(segment_total)
        if segments < 2 or items < 2:
            out[name] = np.inf
            continue
        expected = (
            table["segment"].map(segment_total).to_numpy(dtype="float64")
            * table["item_id"].map(item_total).to_numpy(dtype="float64")
            / total
        )
        # Pearson's statistic from the non-zero cells alone: sum((b - e)^2 / e) = sum(b^2 / e) - N.
        chi_square = float((table["buyers"].to_numpy(dtype="float64") ** 2 / expected).sum()) - total
        spread = total - float((segment_total**2).sum()) / total
        between = (chi_square - (segments - 1) * (items - 1)) / spread
        out[name] = (items - 1) / between if between > 0 else np.inf
    return out


def segment_lists(
    popularity: pd.DataFrame, n: int, *, fresh: pd.DataFrame | None = None, explore_every: int = 5
) -> pd.DataFrame:
    """Top-n lists per segment from (segment, item_id, buyers).

    Items rank by their credibility-weighted share ``Z * b / N + (1 - Z) * p``: b the segment's buyers
    of the item, N the segment's purchases, p the item's global share, ``Z = N / (N + k)`` with k of
    the segment's dimension from `credibility_constants` (category segments hold one department each
    and keep their own counts, Z = 1); ties go to global buyers. So thin segments are topped up from
    the global list, every list has n items when the catalog allows, and every `explore_every`-th slot
    goes to a new arrival (`fresh`, from `new_arrivals`; for a category segment, one of that
    department) that the list does not already hold. An item carries the segment's reason when the
    segment's own term is at least half its score, else the bestseller reason.
    """
    pop = popularity.sort_values(["segment", "buyers", "item_id"], ascending=[True, False, True])
    is_global = pop["segment"] == GLOBAL_SEGMENT
    global_buyers = pop.loc[is_global].set_index("item_id")["buyers"]
    global_top = pop.loc[is_global].head(n)
    own = pop.loc[~is_global]
    # A segment's own items and the global top n: no other item can reach a segment's top n.
    names = own["segment"].unique()
    fill = pd.DataFrame(
        {
            "segment": np.repeat(names, len(global_top)),
            "item_id": np.tile(global_top["item_id"].to_numpy(), len(names)),
            "buyers": 0,
        }
    )
    out = pd.concat([global_top, own, fill], ignore_index=True).drop_duplicates(["segment", "item_id"])
    dimension = out["segment"].str.split(":", n=1).str[0]
    k = dimension.map(credibility_constants(popularity)).fillna(0.0).to_numpy(dtype="float64")
    size = out.groupby("segment")["buyers"].transform("sum").to_numpy(dtype="float64")
    trust = np.zeros(len(out))
    finite = np.isfinite(k) & (size > 0)
    trust[finite] = size[finite] / (size[finite] + k[finite])
    out["own"] = trust * out["buyers"].to_numpy(dtype="float64") / np.maximum(size, 1.0)
    out["overall"] = out["item_id"].map(global_buyers).fillna(0).to_numpy(dtype="float64")
    out["prior"] = (1.0 - trust) * out["overall"] / max(float(global_buyers.sum()), 1.0)
    out["share"] = out["own"] + out["prior"]
    out = out.sort_values(
        ["segment", "share", "overall", "item_id"], ascending=[True, False, False, True], kind="stable"
    )
    out = out.groupby("segment", sort=False).head(n).reset_index(drop=True)
    from_segment = (out["buyers"] > 0) & (out["own"] >= out["prior"])
    dimension = out["segment"].str.split(":", n=1).str[0]
    value = out["segment"].str.split(":", n=1).str[1].fillna("").str.title()
    out["reason_code"] = np.where(
        from_segment, dimension.map(lambda d: SEGMENT_REASONS[d][0]), SEGMENT_REASONS[GLOBAL_SEGMENT][0]
    )
    templates = dimension.map(lambda d: SEGMENT_REASONS[d][1])
    out["reason_text"] = [t.format(value=v) for t, v in zip(templates, value, strict=True)]
    out.loc[~from_segment, "reason_text"] = SEGMENT_REASONS[GLOBAL_SEGMENT][1]
    out = out.drop(columns=["own", "overall", "prior", "share"])
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

"""How strongly an interaction says "this shopper wants this item": the weights behind ALS, basket
co-occurrence and co-visitation interest.

Each rule is written once and evaluated by two engines: Spark, on the lake's events for the pipeline
(`jobs.features.transforms`, with Spark's column functions), and NumPy, on the evaluation's history for
the baselines (`jobs.evaluation.baselines`). A formula takes the engine's `log1p` or `log2` where it needs
one; `+`, `*`, `/` and `**` work on Spark columns and NumPy arrays alike, so both engines compute the
same expression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A column of values: a Spark Column, a NumPy array or a pandas Series (or a plain number).
Values = Any

# ALS confidence of a cart session and a view session relative to a purchase session. Counting sessions,
# with browsing well below buying, keeps a browsing-heavy store's ALS from following views rather than
# purchases (fifty views of an item would otherwise outweigh buying it).
ALS_CART_WEIGHT = 0.5
ALS_VIEW_WEIGHT = 0.1


@dataclass
class CoocParams:
    """Co-visitation settings (the evaluation tunes them on its validation window)."""

    shrink: float = 3.0
    neighbours: int = 200
    basket_half_life: float | None = 30.0
    half_life_days: float | None = 14.0
    cart_weight: float = 0.5
    view_weight: float = 0.1


def als_weight(
    purchases: Values,
    carts: Values,
    views: Values,
    *,
    log1p: Callable[[Values], Values],
    cart_weight: float = ALS_CART_WEIGHT,
    view_weight: float = ALS_VIEW_WEIGHT,
) -> Values:
    """ALS confidence of a (shopper, item) pair from its purchase, cart and view session counts:
    log1p(purchases + cart_weight x carts + view_weight x views), log-damped so a shopper's hundredth
    re-order of one item does not drown everything else they like. Pairs whose sum is 0 are dropped."""
    raw = purchases + cart_weight * carts + view_weight * views
    return log1p(raw)


def decay(age_days: Values, half_life_days: float | None) -> Values:
    """0.5 ** (age / half_life): what an interaction `age_days` old still counts (1 without a half-life)."""
    if not half_life_days:
        return 1.0
    return 0.5 ** (age_days / half_life_days)


def basket_weight(
    size: Values, age_days: Values, half_life_days: float | None, *, log2: Callable[[Values], Values]
) -> Values:
    """A session basket's weight: 1 / log2(1 + size), so one wholesale order of hundreds of lines does
    not outweigh many ordinary ones, times the decay of its last line's age (what goes together changes
    with the season). Single-item baskets say nothing about pairs and are left out by the callers."""
    weight = 1.0 / log2(1.0 + size)
    if half_life_days:
        weight = weight * decay(age_days, half_life_days)
    return weight


def interest_type_weights(cart_weight: float, view_weight: float) -> dict[str, float]:
    """How much one (session, item) interaction of each event type counts toward a shopper's interest
    in the item: a purchase 1, a cart `cart_weight`, a view `view_weight`; other types 0."""
    return {"purchase": 1.0, "add_to_cart": float(cart_weight), "view": float(view_weight)}


def interest_weight(type_weight: Values, age_days: Values, half_life_days: float | None) -> Values:
    """One interaction's contribution to a shopper's interest: its type's weight times its decay
    (summed over the shopper's interactions with the item)."""
    if not half_life_days:
        return type_weight
    return type_weight * decay(age_days, half_life_days)

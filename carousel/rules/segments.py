"""Segment lists: their names and the reason each kind of segment gives.

Segments are `global` plus one per value of each context dimension: `country:<value>`,
`device:<value>`, `referrer:<value>` (from the event or the request) and `category:<department>` (the top
level of an item's category path). Values are trimmed and lower case, in the batch (`segment_popularity`)
and in the API (`context_segment`) alike.
"""

from __future__ import annotations

from collections.abc import Mapping

GLOBAL_SEGMENT = "global"
# The dimensions the batch computes lists for.
SEGMENT_DIMENSIONS = ("country", "device", "referrer", "category")
# The order in which an anonymous visitor's context picks a segment list (the first one stored wins).
CONTEXT_DIMENSIONS = ("country", "device", "referrer")
# How much each event adds to a visitor's interest in the item's department (the API's real-time state,
# and the evaluation's replay of a session): what `segment_order` picks the category list by.
INTEREST_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "remove_from_cart": 0.0, "purchase": 5.0}

# (reason code, text template) of each kind of segment list; `{value}` is the segment's value, title-cased.
SEGMENT_REASONS = {
    "global": ("bestseller", "Bestseller right now"),
    "country": ("popular_in_country", "Popular in {value}"),
    "device": ("popular_on_device", "Popular with shoppers on {value}"),
    "referrer": ("popular_with_referrer", "Popular with visitors from {value}"),
    "category": ("popular_in_category", "Popular in {value}"),
}


def context_segment(dimension: str, value: str) -> str:
    """The segment name for one context value, e.g. ("country", "Germany") -> "country:germany"."""
    return f"{dimension}:{value.strip().lower()}"


def department(category: str) -> str:
    """The department of a category path: its top level, e.g. "Home/Lighting" -> "home"."""
    return category.split("/")[0].strip().lower()


def segment_order(interest: Mapping[str, float], context: Mapping[str, str | None]) -> list[str]:
    """The segment lists that may fit a visitor, best first: the department they browse most (ties by
    name), then each context value in `CONTEXT_DIMENSIONS` order, then `global`. The API serves the
    first one that is stored; `carousel evaluate` picks the same way.

    Parameters
    ----------
    interest : mapping of department -> weight
        The visitor's real-time category interest.
    context : mapping of dimension -> value or None
        The request's country, device and referrer.
    """
    order = []
    if interest:
        order.append(context_segment("category", max(sorted(interest), key=lambda d: interest[d])))
    order += [context_segment(d, v) for d in CONTEXT_DIMENSIONS if (v := context.get(d))]
    order.append(GLOBAL_SEGMENT)
    return order

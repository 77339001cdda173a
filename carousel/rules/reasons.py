"""Why an item is in a list: every reason code and its standard text, for stored lists, the real-time
overlay and the marketing audiences alike. A stored list names a text only where it differs from the
code's standard one (e.g. "Goes with <title>")."""

from __future__ import annotations

REASON_TEXTS = {
    # Personal lists (jobs/ranking/lists.py).
    "buy_again": "You bought this before",
    "viewed": "You looked at this recently",
    "goes_with_yours": "Often bought together with items you chose",
    "similar_shoppers": "Shoppers with similar taste bought this",
    "popular": "Popular right now",
    "new_for_you": "New in a category you like",
    "popular_in_category": "Popular in a category you like",
    # Segment lists (jobs/ranking/segments.py).
    "popular_in_country": "Popular in your country",
    "bestseller": "Bestseller right now",
    "new_arrival": "New in: just arrived",
    # Similar-item lists.
    "bought_together": "Often bought or viewed together",
    # The real-time overlay and the marketing audiences.
    "cart_reminder": "Still in your cart",
    "completes_cart": "Goes with what is in your cart",
    "bought_with": "Goes with what you bought",
    "for_you": "Picked for you",
    "viewed_often": "You looked at this several times",
    "similar_to_viewed": "Similar to what you looked at",
    # Session lists (carousel/rules/sessions.py); stored texts name the anchor.
    "because_you_viewed": "Because of what you looked at",
}


def reason(code: str) -> dict[str, str]:
    """A reason in the served shape, with the code's standard text."""
    return {"code": code, "text": REASON_TEXTS[code]}

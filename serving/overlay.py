"""The real-time overlay on a stored list: what the shopper did since the batch ran changes what they see.

Pure functions over plain data (the stored list, the shopper's real-time state, complements read from
the similar-items lists), so the rules are tested without Redis:

* items bought recently are removed;
* a cart left alone longer than `cart_abandon_after_s` brings its items to the front (`cart_reminder`, the
  rule of `carousel.rules.carts`), followed by items that go with them (`completes_cart`);
* a recent purchase brings items that go with it (`bought_with`);
* duplicates are removed, unavailable items skipped, and the list cut to `n`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from carousel.rules.carts import CART_REMINDER, COMPLETES_CART, abandoned_cart
from carousel.rules.reasons import REASON_TEXTS


@dataclass(frozen=True)
class Triggers:
    """What the overlay acts on: item ids of an abandoned cart and of recent purchases, newest first."""

    abandoned_cart: list[str]
    recent_purchases: list[str]

    @property
    def anchors(self) -> list[str]:
        """Items whose complements are worth fetching (a few: each is one more list to read)."""
        return (self.abandoned_cart + self.recent_purchases)[:4]


EMPTY_TRIGGERS = Triggers([], [])


def triggers(
    cart: Mapping[str, float], purchases: Mapping[str, float], *, now: float, cart_abandon_after_s: float
) -> Triggers:
    """What fires now: the abandoned cart (`carousel.rules.carts`) and the recent purchases."""
    abandoned = abandoned_cart(cart, purchases, now=now, after_s=cart_abandon_after_s)
    bought = [item for item, _ in sorted(purchases.items(), key=lambda kv: -kv[1])]
    return Triggers(abandoned, bought)


def apply_overlay(
    items: Iterable[dict[str, Any]],
    *,
    fired: Triggers,
    purchased: Iterable[str],
    complements: Mapping[str, Sequence[dict[str, Any]]],
    unavailable: frozenset[str],
    n: int,
) -> list[dict[str, Any]]:
    """The served list: triggered items first, then the stored list, without bought, unavailable or
    repeated items, `n` long at most."""
    # Checked one by one, not merged: the unavailable items can be thousands, a request's few.
    bought = set(purchased)
    front: list[dict[str, Any]] = []
    for item_id in fired.abandoned_cart:
        front.append(_item(item_id, CART_REMINDER))
    for anchor in fired.abandoned_cart:
        front.extend(
            _item(c["item_id"], COMPLETES_CART, c.get("score")) for c in complements.get(anchor, [])[:2]
        )
    for anchor in fired.recent_purchases[:2]:
        front.extend(
            _item(c["item_id"], "bought_with", c.get("score")) for c in complements.get(anchor, [])[:2]
        )
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in chain(front, items):
        item_id = item["item_id"]
        # Cart items were not bought (a purchase clears them from the cart), so only `skip` applies.
        if item_id in seen or item_id in bought or item_id in unavailable:
            continue
        seen.add(item_id)
        out.append(item)
        if len(out) >= n:
            break
    return out


def _item(item_id: str, code: str, score: Any = None) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "score": float(score) if isinstance(score, int | float) else 1.0,
        "reason": {"code": code, "text": REASON_TEXTS[code]},
    }

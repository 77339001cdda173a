"""Cart abandonment: when a cart counts as abandoned and which of its items to bring back.

One rule for the three places that act on it: the storefront's real-time overlay (the items come back
first in the shopper's list), the API's promotion of fresh carts into the `abandoned_cart` audience
between batch runs, and the batch audiences. All use the reason code `CART_REMINDER` for the cart's
items and `COMPLETES_CART` for what goes with them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

CART_REMINDER = "cart_reminder"
COMPLETES_CART = "completes_cart"


def abandoned_cart(
    cart: Mapping[str, float], purchased: Collection[str], *, now: float, after_s: float
) -> list[str]:
    """The items of an abandoned cart, newest first; [] while the cart is not abandoned.

    Parameters
    ----------
    cart
        Item -> when it was last put in the cart (epoch seconds), for the items still in it.
    purchased
        Items the shopper bought: never brought back, even when they are in the cart again.
    now, after_s
        The cart is abandoned once its newest remaining item was added `after_s` seconds or more
        before `now`.
    """
    waiting = {item: at for item, at in cart.items() if item not in purchased}
    if not waiting or now - max(waiting.values()) < after_s:
        return []
    return sorted(waiting, key=lambda item: -waiting[item])

"""Who a storefront request speaks for. A shopper's events and personal list are the shopper's: the API
takes a `user_id` only from the store's own servers (the storefront token) or with a shopper token, a
short-lived signature the store's backend issues for one signed-in shopper and hands to their browser.

A shopper token is ``v1.<user id, base64url>.<expiry, epoch seconds>.<signature, base64url>``, the
signature being HMAC-SHA256 under the shopper-token secret (`CAROUSEL_SHOPPER_TOKEN_SECRET`) of everything
before it. Any backend can issue one with its language's HMAC; `shopper_token` is the reference (and
`carousel shopper-token USER_ID` prints one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

VERSION = "v1"
# The longest life a token may claim: one stolen from a browser is useless after this.
MAX_TTL_S = 7 * 86_400


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, message: str) -> str:
    return _b64(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest())


def shopper_token(user_id: str, secret: str, *, expires_at: int) -> str:
    """A token binding `user_id` until `expires_at` (epoch seconds), signed with `secret`."""
    message = f"{VERSION}.{_b64(user_id.encode())}.{int(expires_at)}"
    return f"{message}.{_signature(secret, message)}"


def verified_shopper(token: str, secret: str, *, now: float) -> str | None:
    """The shopper a token binds, or None when it is malformed, forged, expired or claims a life longer
    than `MAX_TTL_S`."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not parts[2].isdigit() or len(token) > 512:
        return None
    message = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3], _signature(secret, message)):
        return None
    expires_at = int(parts[2])
    if not now < expires_at <= now + MAX_TTL_S:
        return None
    try:
        return _unb64(parts[1]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None

"""The credentials in the test settings (`conftest.py`): the storefront token,
as the store's servers send it, and the shopper-token secret."""

from __future__ import annotations

STOREFRONT_TOKEN = "test-storefront-token-0123456789"
SHOPPER_TOKEN_SECRET = "test-shopper-token-secret-0123456789"
# Default headers of a test client that plays the store's servers.
STOREFRONT = {"Authorization": f"Bearer {STOREFRONT_TOKEN}"}
# The salt of erasure digests in the test settings.
ERASURE_SALT = "test-erasure-salt-0123456789"

"""Fixtures of the storefront-page tests: the shared small store (see `shop_store.py`)."""

from __future__ import annotations

import pytest
import redis
from shop_store import ShopStore, publish_shop_store

from configs.settings import Settings

# The cart abandonment delay of the served app: short, so a reminder takes seconds to show, not minutes.
CART_ABANDON_AFTER_S = 2


@pytest.fixture
def shop_store(settings: Settings, redis_client: redis.Redis) -> ShopStore:
    return publish_shop_store(settings, redis_client)


@pytest.fixture
def shop_settings(settings: Settings) -> Settings:
    """The app's settings for these tests. Redis timeouts are generous: the pages are under test, not
    latency, and a browser, uvicorn and Redis share two busy cores here (the default 50 ms socket
    timeout would turn a slow answer into a fallback list now and then)."""
    return settings.model_copy(
        update={
            "cart_abandon_after_s": CART_ABANDON_AFTER_S,
            "redis_socket_timeout_s": 1.0,
            "redis_connect_timeout_s": 1.0,
        }
    )

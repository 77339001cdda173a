"""`carousel publish migrate`: a Redis written with the old key layout is served after one command."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from carousel import cli
from carousel.cache import keys as layout
from carousel.cache import payload as list_format
from carousel.cache import versions
from carousel.cache.keys import consent_key
from carousel.rules.reasons import REASON_TEXTS
from configs.settings import get_settings
from jobs.publishing import loader
from jobs.publishing.migrate import migrate_keys
from serving.app import create_app

pytestmark = pytest.mark.integration

V1, V2 = "20261101T000000Z", "20261102T000000Z"


def _old_layout(client: Any) -> None:
    """What an older build left: untagged consent and list hashes, untagged version bookkeeping."""
    payload = list_format.encode_items([("i1", 1.0, "viewed", REASON_TEXTS["viewed"])])
    client.hset("carousel:consent:alice", mapping={"personalization": "0", "marketing": "1"})
    client.hset("carousel:consent:bob", mapping={"personalization": "1", "marketing": "0"})
    client.hset("carousel:u:carol", V1, payload)
    client.set("carousel:live", V1)
    client.rpush("carousel:history", V1)
    client.sadd("carousel:pending", V2)


def test_old_keys_move_to_the_current_layout_and_newer_values_win(redis_client: Any) -> None:
    _old_layout(redis_client)
    # Written by the new API after the upgrade, before the migration: it must not be overwritten.
    redis_client.hset(consent_key("bob"), mapping={"marketing": "1"})
    done = migrate_keys(redis_client)
    assert (done.consents, done.shopper_hashes, done.version_keys) == (2, 1, 3)
    assert redis_client.hgetall(consent_key("alice")) == {b"personalization": b"0", b"marketing": b"1"}
    assert redis_client.hgetall(consent_key("bob")) == {b"personalization": b"1", b"marketing": b"1"}
    assert redis_client.hget(layout.user_key("carol"), V1) is not None
    assert versions.live_version(redis_client) == V1
    assert versions.published_versions(redis_client) == [V1]
    assert redis_client.smembers(layout.PENDING_KEY) == {V2.encode()}
    left = [k for k in redis_client.scan_iter() if b"{" not in k]
    assert left == [], left
    assert migrate_keys(redis_client) == type(done)(0, 0, 0)  # a rerun has nothing left to do


def test_after_migrating_the_api_honours_the_old_consent(
    redis_client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice withdrew personalization under the old layout; after `carousel publish migrate` (and a
    publish) the API still does not personalize for her."""
    _old_layout(redis_client)
    users = pd.DataFrame(
        [
            {
                "user_id": u,
                "rank": 1,
                "item_id": f"{u}-item",
                "score": 1.0,
                "reason_code": "viewed",
                "reason_text": "x",
            }
            for u in ("alice", "dave")
        ]
    )
    segments = pd.DataFrame(
        [
            {
                "segment": "global",
                "rank": 1,
                "item_id": "g1",
                "score": 1.0,
                "reason_code": "bestseller",
                "reason_text": "y",
            }
        ]
    )
    monkeypatch.setenv("CAROUSEL_REDIS_URL", settings.redis_url)
    get_settings.cache_clear()  # the CLI reads the settings once per process
    try:
        assert cli.main(["publish", "migrate"]) == 0
    finally:
        get_settings.cache_clear()
    loader.publish_version(redis_client, version=V2, user_lists=users, segment_lists=segments, manifest={})
    with TestClient(create_app(settings), headers=STOREFRONT) as api:
        alice = api.get("/v1/recommendations", params={"user_id": "alice"}).json()
        dave = api.get("/v1/recommendations", params={"user_id": "dave"}).json()
    assert alice["source"] != "personal" and [i["item_id"] for i in alice["items"]] == ["g1"]
    assert dave["variant"] == "holdout" or dave["source"] == "personal"

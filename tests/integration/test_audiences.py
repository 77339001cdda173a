"""Marketing audiences through HTTP with a real Redis: abandoned carts join after the window, consent and
holdout are honoured, the cap holds, and JSON and CSV pages return every row exactly once."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from carousel.cache import audiences as audience_rows
from carousel.lake import Lake
from carousel.rules.holdout import HOLDOUT, TREATMENT, assign_variant
from configs.settings import Settings
from jobs.publishing import loader
from serving.app import create_app

pytestmark = pytest.mark.integration

MARKETING = {"Authorization": "Bearer test-marketing-token-0123456789"}
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def _pick(settings: Settings, variant: str, prefix: str) -> str:
    for k in range(10_000):
        user = f"{prefix}{k}"
        if (
            assign_variant(user, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
            == variant
        ):
            return user
    raise AssertionError(variant)


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return settings.model_copy(update={"cart_abandon_after_s": 2})


@pytest.fixture
def api(quick: Settings, redis_client: redis.Redis) -> Iterator[TestClient]:
    items = [f"i{k}" for k in range(40)]
    rows = [{"rank": r, "score": 1.0, "reason_code": "bestseller", "reason_text": "b"} for r in range(1, 31)]
    segments = pd.DataFrame([{**row, "segment": "global", "item_id": items[k]} for k, row in enumerate(rows)])
    similar = pd.DataFrame(
        [
            {
                "anchor_id": it,
                "rank": r,
                "item_id": items[(k + r) % 40],
                "score": 1.0,
                "reason_code": "bought_together",
                "reason_text": "t",
            }
            for k, it in enumerate(items)
            for r in (1, 2, 3)
        ]
    )
    empty_users = pd.DataFrame(columns=["user_id", "rank", "item_id", "score", "reason_code", "reason_text"])
    loader.publish_version(
        redis_client,
        version="20261101T000000Z",
        user_lists=empty_users,
        segment_lists=segments,
        item_lists=similar,
        manifest={"generated_at": datetime.now(UTC).isoformat()},
    )
    with TestClient(create_app(quick), headers=STOREFRONT) as client:
        yield client


def _cart(client: TestClient, user: str, item: str) -> None:
    event = {
        "user_id": user,
        "session_id": f"s-{user}",
        "item_id": item,
        "event_type": "add_to_cart",
        "ts": datetime.now(UTC).isoformat(),
        "quantity": 1,
        "price": 2.0,
    }
    assert client.post("/v1/events", json={"events": [event]}).status_code == 202


def _rows(client: TestClient, name: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/audiences/{name}", params=params, headers=MARKETING)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def test_abandoned_cart_audience_follows_the_rules(api: TestClient, quick: Settings) -> None:
    shopper = _pick(quick, TREATMENT, "buyer-")
    held = _pick(quick, HOLDOUT, "held-")
    no_mail = _pick(quick, TREATMENT, "quiet-")
    consent = {"personalization": True, "marketing": False}
    assert api.put(f"/v1/users/{no_mail}/consent", json=consent, headers=ADMIN).status_code == 200
    for user in (shopper, held, no_mail):
        _cart(api, user, "i5")
    assert _rows(api, "abandoned_cart") == []  # not abandoned yet
    time.sleep(2.3)
    rows = {r["user_id"]: r for r in _rows(api, "abandoned_cart")}
    assert set(rows) == {shopper}  # held out and without consent: not in the send list
    first = rows[shopper]
    assert first["items"][0] == {
        "item_id": "i5",
        "reason": {"code": "cart_reminder", "text": "Still in your cart"},
    }
    assert {i["item_id"] for i in first["items"][1:]} <= {"i6", "i7", "i8"}
    assert first["variant"] == TREATMENT and first["held_out"] is False
    everyone = {r["user_id"]: r for r in _rows(api, "abandoned_cart", include_held_out="true")}
    assert set(everyone) == {shopper, held} and everyone[held]["held_out"] is True
    assert everyone[held]["variant"] == HOLDOUT

    # The cap: a second abandonment within 24 h keeps the first row.
    _cart(api, shopper, "i9")
    time.sleep(2.3)
    again = [r for r in _rows(api, "abandoned_cart") if r["user_id"] == shopper]
    assert len(again) == 1 and again[0]["triggered_at"] == first["triggered_at"]


def test_an_erased_shopper_posted_again_stays_out_of_the_state_and_the_audience(
    api: TestClient, quick: Settings, redis_client: redis.Redis
) -> None:
    """After `DELETE /v1/users/{id}`, a storefront that still posts the shopper's cart has those events
    dropped (counted in the answer): no real-time state, no stream entry, no cart email."""
    shopper = _pick(quick, TREATMENT, "gone-")
    assert api.delete(f"/v1/users/{shopper}", headers=ADMIN).status_code == 200
    event = {
        "user_id": shopper,
        "session_id": "s-gone",
        "item_id": "i5",
        "event_type": "add_to_cart",
        "price": 2.0,
    }
    answer = api.post("/v1/events", json={"events": [event, {**event, "user_id": None}]})
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 1, "duplicates": 0, "erased_shoppers_dropped": 1}
    assert redis_client.keys(f"carousel:rt:{{u:{shopper}}}:*") == []
    assert [f.get(b"user_id") for _, f in redis_client.xrange("carousel:events")] == [None]
    time.sleep(2.3)
    assert shopper not in {r["user_id"] for r in _rows(api, "abandoned_cart", include_held_out="true")}


def test_pages_in_json_and_csv_return_every_row_exactly_once(
    api: TestClient, redis_client: redis.Redis
) -> None:
    at = pd.Timestamp("2026-11-01T10:00:00Z")
    rows = [
        {
            "user_id": f"u{k:04d}",
            # Many shoppers share a trigger time: the cursor must break ties by shopper.
            "triggered_at": at + pd.Timedelta(seconds=k // 7),
            "items": [{"item_id": f"i{k % 40}", "reason": {"code": "viewed_often", "text": "x"}}],
            "variant": TREATMENT,
            "held_out": False,
        }
        for k in range(1_234)
    ]
    audience_rows.replace_campaign(redis_client, "browse_abandonment", rows, no_marketing=set())
    seen_json: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        body = api.get("/v1/audiences/browse_abandonment", params=params, headers=MARKETING).json()
        seen_json += [r["user_id"] for r in body["rows"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    seen_csv: list[dict[str, str]] = []
    cursor = None
    while True:
        params = {"limit": 250, "format": "csv"}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/v1/audiences/browse_abandonment", params=params, headers=MARKETING)
        assert response.headers["content-type"].startswith("text/csv")
        seen_csv += list(csv.DictReader(io.StringIO(response.text)))
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            break
    expected = [r["user_id"] for r in rows]
    assert seen_json == expected  # every row once, in (triggered_at, user_id) order
    assert [r["user_id"] for r in seen_csv] == expected
    by_json = {r["user_id"]: r for r in _rows(api, "browse_abandonment", limit=5000)}
    for row in seen_csv:
        assert json.loads(row["items"]) == by_json[row["user_id"]]["items"]
        assert row["triggered_at"] == by_json[row["user_id"]]["triggered_at"]


def test_audiences_need_the_marketing_token_and_check_their_input(api: TestClient) -> None:
    assert api.get("/v1/audiences/abandoned_cart").status_code == 401
    assert api.get("/v1/audiences/abandoned_cart", headers=ADMIN).status_code == 200
    assert api.get("/v1/audiences/newsletter", headers=MARKETING).status_code == 422
    bad = api.get("/v1/audiences/post_purchase", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=MARKETING)
    assert bad.status_code == 422 and "cursor" in bad.text


def _lake_event(user: str, item: str, event_type: str, ts: datetime) -> dict[str, Any]:
    return {
        "user_id": user,
        "session_id": f"s-{user}",
        "item_id": item,
        "event_type": event_type,
        "ts": ts.isoformat(),
        "quantity": 1,
        "price": 2.0,
        "country": "France",
        "device": "mobile",
        "referrer": None,
    }


def test_the_audiences_stage_finds_each_trigger_in_the_lake_with_spark_and_serves_it(
    api: TestClient, quick: Settings
) -> None:
    """The refresh's last stage on the lake's events (Spark tasks, one call per shopper, reading the
    published similar items from Redis): each campaign's rows in the run's files and over HTTP, and
    the shoppers the rules leave out are absent."""
    from jobs.stages import run

    now = datetime.now(UTC).replace(microsecond=0)
    hours, days = pd.Timedelta(hours=1), pd.Timedelta(days=1)
    carter, buyer, looker = (_pick(quick, TREATMENT, p) for p in ("carter-", "buyer-", "looker-"))
    quiet, old = _pick(quick, TREATMENT, "quiet-"), _pick(quick, TREATMENT, "old-")
    events = [
        _lake_event(carter, "i5", "add_to_cart", now - 3 * hours),
        _lake_event(buyer, "i10", "purchase", now - 3 * days),
        *(_lake_event(looker, "i20", "view", now - k * hours) for k in (5, 4, 3)),
        _lake_event(looker, "i30", "view", now - 2 * hours),
        _lake_event(quiet, "i7", "add_to_cart", now - 3 * hours),
        _lake_event(old, "i8", "add_to_cart", now - 30 * days),  # before the look-back
        {**_lake_event(carter, "i9", "add_to_cart", now - 2 * hours), "user_id": None},  # a guest
    ]
    Lake(quick.lake_dir).append_events(pd.DataFrame(events), now=now, source="test events")
    consent = {"personalization": True, "marketing": False}
    assert api.put(f"/v1/users/{quiet}/consent", json=consent, headers=ADMIN).status_code == 200

    run_id = "manual__audiences"
    result = run.run_stage("audiences", run.StageRun(quick, run_id, now))
    counts = result.value.counts
    assert {c: n["send"] for c, n in counts.items()} == {
        "abandoned_cart": 1,
        "post_purchase": 1,
        "browse_abandonment": 1,
    }

    def ids(row: dict[str, Any]) -> list[str]:
        return [i["item_id"] for i in row["items"]]

    (cart,) = _rows(api, "abandoned_cart")
    assert cart["user_id"] == carter and ids(cart) == ["i5", "i6", "i7"]
    assert cart["items"][0]["reason"]["code"] == "cart_reminder"
    assert pd.Timestamp(cart["triggered_at"]) == now - 3 * hours
    (bought,) = _rows(api, "post_purchase")
    assert bought["user_id"] == buyer and ids(bought) == ["i11", "i12", "i13"]
    (browsed,) = _rows(api, "browse_abandonment")
    assert browsed["user_id"] == looker and ids(browsed) == ["i20", "i21", "i22", "i23"]
    files = quick.var_dir / "audiences" / run_id
    written = pd.read_parquet(files / "post_purchase.parquet")
    assert written["user_id"].tolist() == [buyer] and json.loads(written["items"][0])[0]["item_id"] == "i11"

"""The storefront API through HTTP with a real Redis: the real-time overlay, consent, holdout, the stock
guard, erasure, protected routes and similar items. Every test that talks to Redis runs twice: on a
single Redis and on a three-primary Redis Cluster (same key layout, `redis_cluster = true`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from shop_store import catalog
from storefront_auth import SHOPPER_TOKEN_SECRET, STOREFRONT

from carousel.rules.holdout import HOLDOUT, TREATMENT, assign_variant
from carousel.rules.identity import shopper_token
from configs.settings import Settings
from jobs.publishing import loader
from serving.app import create_app

# Every test runs on a single Redis and on a three-primary Redis Cluster.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True),
]

VERSION = "20261101T000000Z"
STORED = 30  # list_length 20 + overflow 10
ITEMS = [f"i{k:03d}" for k in range(120)]


def _rows(owner_column: str, owner: str, items: list[str], code: str) -> list[dict[str, Any]]:
    return [
        {
            owner_column: owner,
            "rank": r,
            "item_id": it,
            "score": 1.0 - r / 100,
            "reason_code": code,
            "reason_text": code,
        }
        for r, it in enumerate(items, start=1)
    ]


def _publish_store(client: Any, shoppers: list[str]) -> None:
    """A version where shopper k's list is items k..k+29, the global list the last 30 items, and each
    item's similar items are the next three items."""
    users = pd.DataFrame(
        [
            row
            for k, u in enumerate(shoppers)
            for row in _rows("user_id", u, ITEMS[k % 50 : k % 50 + STORED], "viewed")
        ]
    )
    segments = pd.DataFrame(
        _rows("segment", "global", ITEMS[-STORED:], "bestseller")
        + _rows("segment", "country:germany", ITEMS[60:90], "popular_in_country")
        + _rows("segment", "category:garden", ITEMS[20:50], "popular_in_category")
    )
    similar = pd.DataFrame(
        [
            row
            for k, it in enumerate(ITEMS[:-3])
            for row in _rows("anchor_id", it, ITEMS[k + 1 : k + 4], "bought_together")
        ]
    )
    loader.publish_version(
        client,
        version=VERSION,
        user_lists=users,
        segment_lists=segments,
        item_lists=similar,
        manifest={"run_id": "t", "generated_at": datetime.now(UTC).isoformat()},
        catalog=catalog(ITEMS),
    )


def _treatment(settings: Settings, prefix: str, count: int = 1) -> list[str]:
    found = []
    for k in range(10_000):
        user = f"{prefix}{k}"
        if (
            assign_variant(user, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
            == TREATMENT
        ):
            found.append(user)
            if len(found) == count:
                return found
    raise AssertionError("no treatment shopper found")


ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


@pytest.fixture
def quick_cart(settings: Settings) -> Settings:
    return settings.model_copy(update={"cart_abandon_after_s": 2})


@pytest.fixture
def api(quick_cart: Settings, redis_client: Any) -> Iterator[tuple[TestClient, list[str]]]:
    shoppers = _treatment(quick_cart, "shopper-", 20)
    _publish_store(redis_client, shoppers)
    with TestClient(create_app(quick_cart), headers=STOREFRONT) as client:
        yield client, shoppers


def _event(user: str, item: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "session_id": f"sess-{user}",
        "item_id": item,
        "event_type": kind,
        "ts": datetime.now(UTC).isoformat(),
        "quantity": 1,
        "price": 4.5,
        **extra,
    }


def _ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def _get(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/recommendations", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_purchase_removes_the_item_from_the_very_next_response(api: tuple[TestClient, list[str]]) -> None:
    client, shoppers = api
    user = shoppers[0]
    before = _get(client, user_id=user, n=10)
    assert before["source"] == "personal" and len(before["items"]) == 10
    bought = _ids(before)[0]
    assert client.post("/v1/events", json={"events": [_event(user, bought, "purchase")]}).status_code == 202
    after = _get(client, user_id=user, n=10)
    assert bought not in _ids(after)
    assert len(after["items"]) == 10
    # ... and the purchase brings what goes with it to the front, with its reason.
    reasons = {i["item_id"]: i["reason"]["code"] for i in after["items"]}
    complements = [it for it, code in reasons.items() if code == "bought_with"]
    assert complements and set(complements) <= {ITEMS[ITEMS.index(bought) + k] for k in (1, 2, 3)}


def test_a_cart_left_past_the_window_comes_back_with_reasons(api: tuple[TestClient, list[str]]) -> None:
    client, shoppers = api
    user = shoppers[1]
    carted = ITEMS[100]  # not in the shopper's stored list
    assert (
        client.post("/v1/events", json={"events": [_event(user, carted, "add_to_cart")]}).status_code == 202
    )
    fresh = _get(client, user_id=user, n=10)
    assert carted not in _ids(fresh)  # a cart a second old is not abandoned
    time.sleep(2.3)
    later = _get(client, user_id=user, n=10)
    assert later["items"][0]["item_id"] == carted
    assert later["items"][0]["reason"]["code"] == "cart_reminder"
    completing = [i for i in later["items"] if i["reason"]["code"] == "completes_cart"]
    assert completing and {i["item_id"] for i in completing} <= {ITEMS[101], ITEMS[102], ITEMS[103]}


def test_without_personalization_consent_the_list_is_not_personal(api: tuple[TestClient, list[str]]) -> None:
    client, shoppers = api
    user = shoppers[2]
    assert _get(client, user_id=user)["source"] == "personal"
    consent = {"personalization": False, "marketing": True}
    assert client.put(f"/v1/users/{user}/consent", json=consent, headers=ADMIN).status_code == 200
    body = _get(client, user_id=user, country="Germany")
    assert body["source"] == "segment" and len(body["items"]) == 10


def test_holdout_share_is_within_one_point_of_the_setting(
    api: tuple[TestClient, list[str]], quick_cart: Settings
) -> None:
    client, _ = api
    variants = [_get(client, user_id=f"visitor-{k}", n=1)["variant"] for k in range(4_000)]
    share = variants.count(HOLDOUT) / len(variants) * 100
    assert abs(share - quick_cart.holdout_percent) <= 1.0, share


def test_an_unavailable_item_disappears_and_the_list_keeps_its_length(
    api: tuple[TestClient, list[str]],
) -> None:
    client, shoppers = api
    user = shoppers[3]
    first = _ids(_get(client, user_id=user, n=20))
    gone = first[4]
    response = client.put(f"/v1/items/{gone}", json={"in_stock": False}, headers=ADMIN)
    assert response.status_code == 200
    after = _ids(_get(client, user_id=user, n=20))
    assert gone not in after and len(after) == 20
    assert after[:4] == first[:4] and after[4:19] == first[5:20]  # refilled from the overflow
    assert gone not in _ids(_get(client, session_id="anon-1", country="Germany", n=30))


def test_after_erasure_no_key_or_member_names_the_shopper(
    api: tuple[TestClient, list[str]], redis_client: Any
) -> None:
    client, shoppers = api
    user = shoppers[4]
    events = [
        _event(user, ITEMS[1], "view"),
        _event(user, ITEMS[2], "add_to_cart"),
        _event(user, ITEMS[3], "purchase"),
    ]
    assert client.post("/v1/events", json={"events": events}).status_code == 202
    consent = {"personalization": True, "marketing": True}
    assert client.put(f"/v1/users/{user}/consent", json=consent, headers=ADMIN).status_code == 200
    assert _names(redis_client, user), "the setup should have stored something about the shopper"
    response = client.delete(f"/v1/users/{user}", headers=ADMIN)
    assert response.status_code == 200 and response.json()["erased"]
    assert _names(redis_client, user) == []
    assert _get(client, user_id=user)["source"] == "global"


def test_a_shopper_keeps_their_newest_sessions_and_an_older_ones_keys_go_with_it(
    settings: Settings, redis_client: Any
) -> None:
    """Session ids come from clients: a shopper's list of sessions keeps the newest
    `realtime_sessions_max`, and a session that leaves it takes its keys with it, its owner claim (which
    names the shopper) included, since nothing else would lead an erasure there. Erasing the shopper
    then leaves no key naming them."""
    user = "shopper-many-devices"
    kept = settings.model_copy(update={"realtime_sessions_max": 3})
    start = datetime.now(UTC).timestamp() - 600
    with TestClient(create_app(kept), headers=STOREFRONT) as client:
        for k in range(5):
            guest = {"session_id": f"device-{k}", "item_id": ITEMS[k], "event_type": "view", "price": 1.0}
            signed_in = {**guest, "user_id": user, "item_id": ITEMS[10 + k], "ts": start + 10 * k + 1}
            for event in ({**guest, "ts": start + 10 * k}, signed_in):
                assert client.post("/v1/events", json={"events": [event]}).status_code == 202
        sessions = redis_client.zrange(f"carousel:rt:{{u:{user}}}:sessions", 0, -1)
        assert sessions == [b"device-2", b"device-3", b"device-4"]
        owners = [redis_client.get(f"carousel:rt:{{s:device-{k}}}:owner") for k in range(5)]
        assert owners == [None, None, *[user.encode()] * 3]
        assert not any("device-0" in key or "device-1" in key for key in _names(redis_client, user))
        # A guest event of a dropped session stays the session's, and names nobody.
        late = {"session_id": "device-0", "item_id": ITEMS[20], "event_type": "view", "price": 1.0}
        assert client.post("/v1/events", json={"events": [late]}).status_code == 202
        assert client.delete(f"/v1/users/{user}", headers=ADMIN).status_code == 200
    assert _names(redis_client, user) == []


def _names(client: Any, user: str) -> list[str]:
    """Every key whose name, field, member or value mentions the shopper (a full SCAN of the db)."""
    token = user.encode()
    hits = []
    for key in client.scan_iter(count=1_000):
        kind = client.type(key).decode()
        if kind == "string":
            blobs = [client.get(key) or b""]
        elif kind == "hash":
            blobs = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "zset":
            blobs = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            blobs = list(client.smembers(key))
        elif kind == "list":
            blobs = client.lrange(key, 0, -1)
        elif kind == "stream":
            blobs = [v for _, fields in client.xrange(key) for pair in fields.items() for v in pair]
        else:
            blobs = []
        if token in key or any(token in blob for blob in blobs):
            hits.append(key.decode())
    return hits


def test_every_protected_route_answers_401_without_a_valid_token(api: tuple[TestClient, list[str]]) -> None:
    client, shoppers = api
    calls = [
        ("PUT", f"/v1/users/{shoppers[0]}/consent", {"personalization": True, "marketing": True}),
        ("DELETE", f"/v1/users/{shoppers[0]}", None),
        ("PUT", f"/v1/items/{ITEMS[0]}", {"in_stock": False}),
    ]
    for method, path, body in calls:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": "Basic abc"},
        ):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
    assert _get(client, user_id=shoppers[0])["source"] == "personal"  # nothing was erased


def test_similar_items_are_the_published_neighbours(api: tuple[TestClient, list[str]]) -> None:
    client, _ = api
    body = client.get(f"/v1/items/{ITEMS[10]}/similar", params={"n": 3}).json()
    assert body["source"] == "similar" and _ids(body) == ITEMS[11:14]
    assert all(i["reason"]["code"] == "bought_together" for i in body["items"])
    unknown = client.get("/v1/items/never-seen/similar").json()
    assert unknown["source"] == "global" and len(unknown["items"]) == 10


def test_bad_bodies_and_parameters_get_4xx_naming_the_field(api: tuple[TestClient, list[str]]) -> None:
    client, shoppers = api
    bad_item = client.put(f"/v1/items/{ITEMS[0]}", json={"in_stock": "maybe"}, headers=ADMIN)
    assert bad_item.status_code == 422 and "in_stock" in bad_item.text
    extra = client.put(
        f"/v1/users/{shoppers[0]}/consent",
        json={"personalization": True, "marketing": True, "sms": True},
        headers=ADMIN,
    )
    assert extra.status_code == 422 and "sms" in extra.text
    bad_id = client.get("/v1/items/bad id!/similar")
    assert bad_id.status_code == 422 and "item_id" in bad_id.text


def test_the_api_refuses_to_start_without_tokens_outside_the_demo(settings: Settings) -> None:
    from serving.auth import MissingTokens

    open_doors = settings.model_copy(
        update={"admin_token": None, "marketing_token": None, "storefront_token": None}
    )
    with pytest.raises(
        MissingTokens,
        match="CAROUSEL_ADMIN_TOKEN, CAROUSEL_MARKETING_TOKEN, CAROUSEL_STOREFRONT_TOKEN not set",
    ):
        create_app(open_doors)
    create_app(open_doors.model_copy(update={"demo": True}))  # the demo generates its own


def test_an_anonymous_session_gets_the_similar_items_of_what_it_viewed(
    api: tuple[TestClient, list[str]],
) -> None:
    """Three minimal views (no price, quantity or time... but an order) turn a visitor's country list
    into a session list: the viewed items' neighbours weighted by recency, named in the reasons, then
    the list of the department browsed (category:garden), never the viewed items themselves."""
    client, _ = api
    session = "anon-browser-7"
    assert _get(client, session_id=session, country="Germany")["source"] == "segment"  # the country list
    start = datetime.now(UTC).timestamp() - 60
    views = [
        {"session_id": session, "item_id": ITEMS[k], "event_type": "view", "ts": start + i}
        for i, k in enumerate((3, 5, 7))
    ]
    assert client.post("/v1/events", json={"events": views}).status_code == 202
    body = _get(client, session_id=session, country="Germany", n=10)
    assert body["source"] == "session"
    # Each item's similar items are the next three (scores 0.99, 0.98, 0.97); the newest view (7) weighs
    # 1, then 0.75 (5) and 0.5625 (3): i008 = 1 + 0.75 * 0.98/0.99, i006 = 0.75 + 0.5625 * 0.98/0.99, ...
    assert _ids(body)[:5] == [ITEMS[8], ITEMS[6], ITEMS[9], ITEMS[10], ITEMS[4]]
    assert _ids(body)[5:] == ITEMS[20:25]  # then category:garden, the department all three are in
    reasons = [i["reason"] for i in body["items"]]
    assert reasons[0] == {"code": "because_you_viewed", "text": "Because you viewed Item 7"}
    assert reasons[4] == {"code": "because_you_viewed", "text": "Because you viewed Item 3"}
    assert {r["code"] for r in reasons[5:]} == {"popular_in_category"}


def test_a_visitors_whole_basket_shapes_the_session_list(api: tuple[TestClient, list[str]]) -> None:
    """A 40-line cart filled at one time (a wholesale basket) makes every line an anchor: the list
    starts with what follows the basket's last lines (i040, then i041, i042), which the first 30
    anchors alone never reach, and holds none of the basket."""
    client, _ = api
    session = "anon-wholesale"
    # A minute ahead (within the API's clock skew), so nothing in the cart counts as abandoned here.
    at = datetime.now(UTC).timestamp() + 60
    cart = [
        {"session_id": session, "item_id": item, "event_type": "add_to_cart", "ts": at, "quantity": 1}
        for item in ITEMS[:40]
    ]
    assert client.post("/v1/events", json={"events": cart}).status_code == 202
    body = _get(client, session_id=session, n=10)
    assert body["source"] == "session"
    assert _ids(body)[:3] == ITEMS[40:43]
    assert not set(_ids(body)) & set(ITEMS[:40])
    assert body["items"][0]["reason"]["code"] == "completes_cart"


def test_an_anonymous_visitor_with_a_cart_gets_the_overlay_not_a_fallback(
    api: tuple[TestClient, list[str]],
) -> None:
    """A session's cart lives in the session's keys; reading it must not trip the Redis read (it once
    passed the cart key where the script expects a hash, so the visitor got the fallback list)."""
    client, _ = api
    event = {**_event("ignored", ITEMS[100], "add_to_cart"), "user_id": None, "session_id": "anon-cart"}
    assert client.post("/v1/events", json={"events": [event]}).status_code == 202
    time.sleep(2.3)
    body = _get(client, session_id="anon-cart", country="Germany", n=10)
    assert body["source"] == "session"  # the cart's similar items, then the country list
    assert body["items"][0]["item_id"] == ITEMS[100]
    assert body["items"][0]["reason"]["code"] == "cart_reminder"
    assert [i["item_id"] for i in body["items"][1:4]] == ITEMS[101:104]
    assert {i["item_id"] for i in body["items"][4:]} <= set(ITEMS[60:90])


def test_signing_in_joins_the_sessions_state_to_the_shopper_once(
    api: tuple[TestClient, list[str]], redis_client: Any
) -> None:
    """A visitor views and carts as a guest, then signs in: at once the shopper's list carries the
    session's cart and views (reminder, session neighbours), the session's keys are gone, and one link
    waits for the drain. A second shopper signing in on the same session later takes nothing."""
    client, shoppers = api
    alice, bob = shoppers[0], shoppers[1]
    session = "guest-browser-1"
    start = datetime.now(UTC).timestamp() - 600
    guest = [
        {"session_id": session, "item_id": ITEMS[110], "event_type": "view", "ts": start},
        {"session_id": session, "item_id": ITEMS[100], "event_type": "add_to_cart", "ts": start + 1},
    ]
    assert client.post("/v1/events", json={"events": guest}).status_code == 202
    assert _get(client, user_id=alice)["items"][0]["item_id"] != ITEMS[100]

    sign_in = [{"user_id": alice, "session_id": session, "item_id": ITEMS[111], "event_type": "view"}]
    assert client.post("/v1/events", json={"events": sign_in}).status_code == 202
    body = _get(client, user_id=alice, n=10)
    assert body["source"] == "personal"
    # The guest cart is now the shopper's, and older than the 2 s abandonment window: a reminder.
    assert body["items"][0] == {**body["items"][0], "item_id": ITEMS[100]}
    assert body["items"][0]["reason"]["code"] == "cart_reminder"
    # The newest view (i111, signed in) and the guest's view (i110) both pull in their neighbours.
    assert ITEMS[112] in _ids(body) and ITEMS[113] in _ids(body)
    assert redis_client.keys(f"carousel:rt:{{s:{session}}}:*") == [
        f"carousel:rt:{{s:{session}}}:owner".encode()
    ]
    assert redis_client.zrange(f"carousel:rt:{{u:{alice}}}:sessions", 0, -1) == [session.encode()]
    links = redis_client.xrange("carousel:links")
    assert [(f[b"session_id"], f[b"user_id"]) for _, f in links] == [(session.encode(), alice.encode())]

    # Another shopper on the same device: their own events count, the guest's stay Alice's.
    again = [{"user_id": bob, "session_id": session, "item_id": ITEMS[5], "event_type": "view"}]
    assert client.post("/v1/events", json={"events": again}).status_code == 202
    assert ITEMS[100] not in _ids(_get(client, user_id=bob, n=20))
    assert len(redis_client.xrange("carousel:links")) == 1


def test_fields_adds_the_catalogs_attributes_and_the_current_price(
    api: tuple[TestClient, list[str]],
) -> None:
    """`fields=` adds the published catalog's attributes to each item (null where the catalog has none),
    the price as overridden now; the default answer stays without them; an unknown field is a 422
    naming it and the fields there are."""
    client, shoppers = api
    plain = _get(client, user_id=shoppers[2], n=5)
    assert all(set(i) == {"item_id", "score", "reason"} for i in plain["items"])
    first = plain["items"][0]["item_id"]
    assert client.put(f"/v1/items/{first}", json={"price": 99.5}, headers=ADMIN).status_code == 200
    time.sleep(1.1)  # the overrides are re-read at most once a second
    body = _get(client, user_id=shoppers[2], n=5, fields="title,price,category,brand")
    assert _ids(body) == _ids(plain)
    for item in body["items"]:
        k = ITEMS.index(item["item_id"])
        expected_price = 99.5 if item["item_id"] == first else 10.0 + k
        assert item["title"] == f"Item {k}" and item["price"] == expected_price and item["brand"] is None
        assert item["category"] == ("garden/tools" if k < 60 else "kitchen/pans")
    bad = client.get("/v1/recommendations", params={"user_id": shoppers[2], "fields": "title,url"})
    assert bad.status_code == 422
    assert "unknown field(s) url" in bad.json()["problems"][0]["problem"]


NO_TOKEN = {"Authorization": ""}


def _token(user: str, *, ttl: int = 600, secret: str = SHOPPER_TOKEN_SECRET) -> dict[str, str]:
    return {"X-Shopper-Token": shopper_token(user, secret, expires_at=int(time.time()) + ttl), **NO_TOKEN}


def test_nobody_posts_a_shoppers_events_without_the_storefront_or_their_token(
    api: tuple[TestClient, list[str]], redis_client: Any
) -> None:
    """Without a credential, a forged token, another shopper's token or an expired one, events naming a
    shopper are refused whole (401, nothing stored); the shopper's own token and the storefront token
    are taken; anonymous events need neither; a price beyond the items' cap is refused."""
    client, shoppers = api
    victim, stranger = shoppers[0], shoppers[1]
    cart = [{"user_id": victim, "session_id": "s-v", "item_id": ITEMS[7], "event_type": "add_to_cart"}]
    for headers in (
        NO_TOKEN,
        _token(stranger),
        _token(victim, secret="not-the-secret-at-all-0123"),
        _token(victim, ttl=-5),
        {"X-Shopper-Token": "v1.garbage", **NO_TOKEN},
    ):
        refused = client.post("/v1/events", json={"events": cart}, headers=headers)
        assert refused.status_code == 401 and "events.0.user_id" in refused.json()["error"], headers
    assert redis_client.exists("carousel:events") == 0
    assert client.post("/v1/events", json={"events": cart}, headers=_token(victim)).status_code == 202
    assert client.post("/v1/events", json={"events": cart}).status_code == 202  # the storefront token
    guest = [{"session_id": "s-g", "item_id": ITEMS[7], "event_type": "view"}]
    assert client.post("/v1/events", json={"events": guest}, headers=NO_TOKEN).status_code == 202
    huge = [{"session_id": "s-g", "item_id": ITEMS[7], "event_type": "view", "price": 1e308}]
    assert client.post("/v1/events", json={"events": huge}).status_code == 422


def test_a_shoppers_list_is_read_only_with_the_storefront_or_their_token(
    api: tuple[TestClient, list[str]],
) -> None:
    """Asked for without a credential, `user_id` gets the non-personal list (no reasons drawn from the
    shopper's history); the storefront token, the shopper's token as a header or as `shopper_token`
    get the personal one."""
    client, shoppers = api
    shopper = shoppers[3]
    personal = _get(client, user_id=shopper)
    assert personal["source"] == "personal"
    stranger = client.get("/v1/recommendations", params={"user_id": shopper}, headers=NO_TOKEN).json()
    assert stranger["source"] == "global" and _ids(stranger) != _ids(personal)
    assert all(i["reason"]["code"] == "bestseller" for i in stranger["items"])
    other = client.get("/v1/recommendations", params={"user_id": shopper}, headers=_token(shoppers[4])).json()
    assert other["source"] == "global"
    own = client.get("/v1/recommendations", params={"user_id": shopper}, headers=_token(shopper)).json()
    assert own["source"] == "personal" and _ids(own) == _ids(personal)
    link = shopper_token(shopper, SHOPPER_TOKEN_SECRET, expires_at=int(time.time()) + 600)
    by_link = client.get(
        "/v1/recommendations", params={"user_id": shopper, "shopper_token": link}, headers=NO_TOKEN
    ).json()
    assert by_link["source"] == "personal"

"""The `/shop` page's own helpers through HTTP with a real Redis: the shopper picker offers exactly the
lake's shoppers whose list resolves in the live version, item details come from the lake, and only the
page's own files are served."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from shop_store import VERSION, ShopStore, item_title
from storefront_auth import STOREFRONT

from configs.settings import Settings
from serving.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def client(shop_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(shop_settings), headers=STOREFRONT) as test_client:
        yield test_client


def test_the_picker_offers_the_shoppers_with_a_list_consenting_first(
    client: TestClient, shop_store: ShopStore, shop_settings: Settings
) -> None:
    """Exactly the lake's shoppers whose list resolves are offered, consenting ones first, with `limit`."""
    body = client.get("/shop/api/shoppers").json()
    assert body["version"] == VERSION
    assert [s["user_id"] for s in body["shoppers"]] == [*shop_store.shoppers, shop_store.no_consent]
    by_id = {s["user_id"]: s for s in body["shoppers"]}
    assert by_id[shop_store.no_consent]["consent_personalization"] is False
    assert all(by_id[u]["country"] == shop_store.countries[u] for u in shop_store.shoppers)
    assert {s["variant"] for s in body["shoppers"]} == {"treatment"}
    # Countries most common first; the shopper without a list still counts as a visitor's country.
    assert body["countries"][:2] == ["Germany", "France"] and "Spain" in body["countries"]
    assert body["cart_abandon_after_s"] == shop_settings.cart_abandon_after_s
    limited = client.get("/shop/api/shoppers", params={"limit": 2}).json()
    assert [s["user_id"] for s in limited["shoppers"]] == shop_store.shoppers[:2]


def test_without_users_or_version_the_picker_is_empty_not_an_error(client: TestClient) -> None:
    """Before any publish or import the helper answers 200 with nothing to pick."""
    body = client.get("/shop/api/shoppers").json()
    assert body["version"] is None and body["shoppers"] == [] and body["countries"] == []


def test_item_details_come_from_the_lake_and_unknown_ids_are_left_out(
    client: TestClient, shop_store: ShopStore
) -> None:
    """Known ids get the lake's title, category and price; unknown ones are absent; bad ids get 422."""
    response = client.get("/shop/api/items", params=[("id", "i001"), ("id", "i070"), ("id", "nope")])
    assert response.status_code == 200
    items = response.json()["items"]
    assert set(items) == {"i001", "i070"}
    assert items["i070"] == {
        "title": item_title("i070"),
        "category": "kitchen/pans",
        "price": 20.0,
        "in_stock": True,
    }
    assert client.get("/shop/api/items", params={"id": "bad id!"}).status_code == 422
    assert client.get("/shop/api/items").status_code == 422


def test_only_the_pages_own_files_are_served(client: TestClient) -> None:
    """The page, its script and stylesheet are served; no other file is reachable by name."""
    page = client.get("/shop")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/shop/static/shop.js"' in page.text
    for name, kind in (("shop.js", "text/javascript"), ("shop.css", "text/css")):
        asset = client.get(f"/shop/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    for name in ("index.html", "..%2Fapp.py", "fallback_list.json"):
        assert client.get(f"/shop/static/{name}").status_code == 404

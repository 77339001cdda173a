"""The operations pages, the API docs and the metrics are closed to strangers (issue 19, point 4), an
address that guesses tokens is locked out, and the demo storefront with its shopper list exists only in
the demo; through HTTP against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from http_server import served
from pydantic import SecretStr
from storefront_auth import STOREFRONT

from carousel.cache import keys as layout
from configs.settings import Settings
from serving.app import create_app

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html,application/xhtml+xml"}
PAGES = ["/ops", "/ops/lift", "/docs", "/redoc", "/openapi.json", "/metrics"]


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    metrics = settings.model_copy(update={"metrics_token": SecretStr("test-metrics-token-0123456789")})
    (settings.quality_dir / "runs" / "r1").mkdir(parents=True, exist_ok=True)
    (settings.quality_dir / "runs" / "r1" / "index.html").write_text("<html>docs of r1</html>")
    with TestClient(create_app(metrics), headers=STOREFRONT, follow_redirects=False) as client:
        yield client


def test_strangers_get_401_and_the_admin_token_opens_every_page(api: TestClient) -> None:
    for path in [*PAGES, "/ops/quality/r1/index.html"]:
        assert api.get(path).status_code == 401, path
        assert api.get(path, headers={"Authorization": "Bearer not-the-token-at-all"}).status_code == 401
        assert api.get(path, headers=ADMIN).status_code == 200, path
    assert "docs of r1" in api.get("/ops/quality/r1/index.html", headers=ADMIN).text


def test_a_browser_logs_in_with_the_admin_token_and_keeps_a_cookie(api: TestClient) -> None:
    """A page asked for by a browser redirects to the login form; a wrong token is refused; the right
    one sets an HttpOnly cookie that opens the pages and the Data Docs, and logging out closes them."""
    redirect = api.get("/ops/lift", headers=HTML)
    assert redirect.status_code == 303 and redirect.headers["location"] == "/ops/login?next=/ops/lift"
    docs = api.get("/ops/quality/r1/index.html", headers=HTML)
    assert (
        docs.status_code == 303 and docs.headers["location"] == "/ops/login?next=/ops/quality/r1/index.html"
    )
    assert 'name="token"' in api.get("/ops/login").text
    wrong = api.post("/ops/login", data={"token": "guess-guess-guess-guess", "next": "/ops/lift"})
    assert wrong.status_code == 401 and "carousel_ops" not in wrong.headers.get("set-cookie", "")
    right = api.post("/ops/login", data={"token": TOKEN, "next": "/ops/lift"})
    assert right.status_code == 303 and right.headers["location"] == "/ops/lift"
    cookie = right.headers["set-cookie"]
    assert "carousel_ops=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie
    assert api.get("/ops/lift").status_code == 200
    assert api.get("/ops/quality/r1/index.html").status_code == 200
    api.post("/ops/logout")
    assert api.get("/ops").status_code == 401


def test_the_login_never_redirects_off_the_site(api: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = api.post("/ops/login", data={"token": TOKEN, "next": target})
        assert answer.headers["location"] == "/ops", target


def test_the_metrics_token_opens_the_metrics_only(api: TestClient) -> None:
    scrape = {"Authorization": "Bearer test-metrics-token-0123456789"}
    assert api.get("/metrics", headers=scrape).status_code == 200
    assert api.get("/ops", headers=scrape).status_code == 401
    assert (
        api.get("/metrics", headers={"Authorization": "Bearer test-marketing-token-0123456789"}).status_code
        == 401
    )


def test_the_demo_storefront_exists_in_the_demo_only(settings: Settings) -> None:
    with TestClient(create_app(settings), headers=STOREFRONT) as client:
        assert client.get("/shop").status_code == 404
        assert client.get("/shop/api/shoppers").status_code == 404
    with TestClient(create_app(settings.model_copy(update={"demo": True})), headers=STOREFRONT) as client:
        assert client.get("/shop").status_code == 200
        assert client.get("/shop/api/shoppers").status_code == 200


@pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True)
def test_an_address_that_guesses_tokens_is_locked_out_the_right_token_too(
    settings: Settings, redis_client: Any
) -> None:
    """Past `auth_failures_per_minute` wrong tokens from one client address (the address the trusted proxy
    forwards), counted in Redis on a single Redis and on a Redis Cluster, every token that address
    presents gets 429 with Retry-After on every route that judges one (admin, marketing, metrics, the
    login form, the storefront's reads and events), the right ones too; the ops cookie still opens the
    pages, a request without a token still gets its 401, and other addresses go on. Another role's
    token sent to the wrong route is a caller's mistake, not a guess, and locks nobody out."""
    import httpx

    from serving.metrics import AUTH_REFUSED

    guarded = settings.model_copy(update={"auth_failures_per_minute": 3})
    guesser, shop_guesser, neighbour, shop_servers = (
        {"X-Forwarded-For": f"198.51.100.{k}"} for k in (7, 8, 9, 10)
    )
    wrong = {"Authorization": "Bearer guess-guess-guess-guess"}
    locked_before = AUTH_REFUSED.labels(reason="locked_out")._value.get()
    with (
        served(create_app(guarded)) as base_url,
        httpx.Client(base_url=base_url, timeout=10, follow_redirects=False) as http,
    ):
        login = http.post("/ops/login", data={"token": TOKEN}, headers=guesser)
        assert login.status_code == 303
        cookie = {"Cookie": f"carousel_ops={login.cookies['carousel_ops']}"}
        http.cookies.clear()

        assert [http.get("/ops", headers={**guesser, **wrong}).status_code for _ in range(3)] == [401] * 3
        over = http.get("/v1/audiences/cart_abandoners", headers={**guesser, **wrong})
        assert over.status_code == 429 and "too many wrong tokens" in over.json()["error"]
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        for path in ("/ops", "/metrics", "/ops/quality/r1/index.html"):
            assert http.get(path, headers={**guesser, **ADMIN}).status_code == 429, path
        erase = http.delete("/v1/users/u1", headers={**guesser, **ADMIN})
        assert erase.status_code == 429
        form = http.post("/ops/login", data={"token": TOKEN}, headers=guesser)
        assert form.status_code == 429 and "try again in" in form.text and "carousel_ops" not in form.cookies
        assert http.get("/ops", headers={**guesser, **cookie}).status_code == 200
        assert http.get("/ops", headers=guesser).status_code == 401
        assert http.get("/ops", headers={**neighbour, **ADMIN}).status_code == 200

        # The storefront's routes judge the storefront token the same way, the recommendations' fast path
        # included.
        recommendations = "/v1/recommendations?user_id=u1"
        for _ in range(3):
            assert http.get(recommendations, headers={**shop_guesser, **wrong}).status_code != 429
        assert http.get(recommendations, headers={**shop_guesser, **wrong}).status_code == 429
        assert http.get(recommendations, headers={**shop_guesser, **STOREFRONT}).status_code == 429
        view = {"events": [{"session_id": "s1", "item_id": "i1", "event_type": "view", "price": 1.0}]}
        posted = http.post("/v1/events", json=view, headers={**shop_guesser, **STOREFRONT})
        assert posted.status_code == 429 and "Retry-After" in posted.headers

        # The store's servers sending their own token to an admin route: 401s, never a lockout.
        assert [http.get("/ops", headers={**shop_servers, **STOREFRONT}).status_code for _ in range(6)] == [
            401
        ] * 6
        assert http.get("/ops", headers={**shop_servers, **ADMIN}).status_code == 200
        assert http.post("/v1/events", json=view, headers={**shop_servers, **STOREFRONT}).status_code == 202
    assert redis_client.xlen(layout.EVENTS_STREAM) == 1
    # Six refusals to the guesser, three to the storefront guesser.
    assert AUTH_REFUSED.labels(reason="locked_out")._value.get() == locked_before + 9

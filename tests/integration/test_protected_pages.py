"""The operations pages, the API docs and the metrics are closed to strangers (issue 19, point 4), and the
demo storefront with its shopper list exists only in the demo; through HTTP against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from storefront_auth import STOREFRONT

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

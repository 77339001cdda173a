"""Publishing into a real Redis and reading through the HTTP API, on a single Redis and on a cluster."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from storefront_auth import ERASURE_SALT as SALT
from storefront_auth import STOREFRONT

from carousel.cache import keys as layout
from carousel.cache import payload as list_format
from carousel.cache import scripts, versions
from carousel.cache.keys import ERASURES_KEY
from carousel.rules.erasure import erasure_digest
from jobs.publishing import PublishError, loader, retention
from jobs.publishing.lists_file import SortedListsFile
from serving.app import CarouselApp, create_app

# Every test runs on a single Redis and on a three-primary Redis Cluster.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True),
]


def _lists(version_tag: str, users: list[str], n: int = 12) -> tuple[pd.DataFrame, pd.DataFrame]:
    user_rows = [
        {
            "user_id": u,
            "rank": r,
            "item_id": f"{version_tag}-{u}-{r}",
            "score": 1.0 - r / 100,
            "reason_code": "buy_again",
            "reason_text": "You bought this before",
        }
        for u in users
        for r in range(1, n + 1)
    ]
    seg_rows = [
        {
            "segment": seg,
            "rank": r,
            "item_id": f"{version_tag}-{seg}-{r}",
            "score": 1.0 - r / 100,
            "reason_code": "bestseller",
            "reason_text": "Bestseller right now",
        }
        for seg in ("global", "country:france", "device:mobile")
        for r in range(1, n + 1)
    ]
    return pd.DataFrame(user_rows), pd.DataFrame(seg_rows)


def _publish(client: object, version: str, tag: str) -> loader.PublishResult:
    users, segments = _lists(tag, ["u1", "u2", "u3"])
    return loader.publish_version(
        client,
        version=version,
        user_lists=users,
        segment_lists=segments,
        manifest={"run_id": tag, "generated_at": "2026-11-29T00:00:00+00:00"},
        keep_versions=2,
    )


@pytest.fixture
def api(settings: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=STOREFRONT) as client:  # type: ignore[arg-type]
        yield client


def test_publish_switches_pointer_and_keeps_previous(redis_client: object) -> None:
    """A second publish becomes live and the first stays available for rollback."""
    _publish(redis_client, "20261101T000000Z", "a")
    _publish(redis_client, "20261102T000000Z", "b")
    assert versions.live_version(redis_client) == "20261102T000000Z"
    assert versions.published_versions(redis_client) == ["20261102T000000Z", "20261101T000000Z"]
    previous = versions.read_user_list(redis_client, "20261101T000000Z", "u1")
    assert previous is not None and list_format.decode_items(previous)[0]["item_id"].startswith("a-")


def test_retention_unlinks_versions_beyond_two(redis_client: object) -> None:
    """After three publishes only the newest two versions keep keys in Redis."""
    for day, tag in ((1, "a"), (2, "b"), (3, "c")):
        _publish(redis_client, f"202611{day:02d}T000000Z", tag)
    leftovers = list(redis_client.scan_iter(match=layout.version_prefix("20261101T000000Z") + "*"))  # type: ignore[attr-defined]
    assert leftovers == []
    assert versions.published_versions(redis_client) == ["20261103T000000Z", "20261102T000000Z"]
    # Shoppers' hashes keep only the fields of the retained versions.
    for user in ("u1", "u2", "u3"):
        fields = sorted(f.decode() for f in redis_client.hkeys(layout.user_key(user)))  # type: ignore[attr-defined]
        assert fields == ["20261102T000000Z", "20261103T000000Z"]


def test_older_version_cannot_replace_newer(redis_client: object) -> None:
    """Publishing an interval older than the live one is refused and the pointer stays."""
    _publish(redis_client, "20261105T000000Z", "new")
    with pytest.raises(PublishError, match="not newer"):
        _publish(redis_client, "20261104T000000Z", "old")
    assert versions.live_version(redis_client) == "20261105T000000Z"


def test_rollback_returns_to_previous_version(redis_client: object) -> None:
    """Rollback points live at the previous complete version."""
    _publish(redis_client, "20261101T000000Z", "a")
    _publish(redis_client, "20261102T000000Z", "b")
    assert retention.rollback(redis_client) == ("20261102T000000Z", "20261101T000000Z")
    assert versions.live_version(redis_client) == "20261101T000000Z"
    with pytest.raises(PublishError, match="no earlier"):
        retention.rollback(redis_client)


def test_start_up_loads_the_scripts_before_any_request(redis_client: object, settings: object) -> None:
    """The scripts are on every primary before the first request, so no request pays for loading
    them (or, on a cluster, for learning the slot map) inside its deadline."""
    redis_client.script_flush()  # type: ignore[attr-defined]
    shas = [
        hashlib.sha1(source.encode()).hexdigest()
        for source in (scripts.READ_SHOPPER, scripts.RESOLVE_USER_LIST)
    ]
    assert redis_client.script_exists(*shas) == [False, False]  # type: ignore[attr-defined]
    with TestClient(create_app(settings), headers=STOREFRONT):  # type: ignore[arg-type]
        assert redis_client.script_exists(*shas) == [True, True]  # type: ignore[attr-defined]


def test_fast_path_answers_as_the_routed_handler_does(redis_client: object, settings: object) -> None:
    """The app's fast path for GET /v1/recommendations, ahead of FastAPI, gives the same status and
    body as the FastAPI route it stands in front of, for good and bad queries alike."""
    _publish(redis_client, "20261101T000000Z", "a")
    routed = create_app(settings)  # type: ignore[arg-type]
    assert isinstance(routed, CarouselApp) and routed.fast_path
    routed.fast_path = False
    queries: list[dict[str, object]] = [
        {"user_id": "u2", "n": 5},
        {"session_id": "s-1", "country": "France"},
        {},
        {"n": 0},
        {"n": "many", "user_id": "bad id!"},
        {"user_id": "u1", "placement": "Home Page"},
    ]
    with (
        TestClient(create_app(settings), headers=STOREFRONT) as fast,
        TestClient(routed, headers=STOREFRONT) as slow,
    ):  # type: ignore[arg-type]
        for params in queries:
            a, b = (
                fast.get("/v1/recommendations", params=params),
                slow.get("/v1/recommendations", params=params),
            )
            assert (a.status_code, a.json()) == (b.status_code, b.json()), params
            assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        assert fast.get("/v1/recommendations", params={"n": 0}).json()["problems"][0]["field"] == "n"


def test_an_unexpected_error_on_the_fast_path_is_a_json_500_and_reaches_the_server(
    redis_client: object, settings: object
) -> None:
    """The fast path stands where Starlette's server-error middleware did: the client gets a 500 with
    a JSON body, and the exception goes on to the server (which logs it)."""
    _publish(redis_client, "20261101T000000Z", "a")

    class BrokenAvailability:
        async def get(self, call: object) -> object:
            raise RuntimeError("availability exploded")

    app = create_app(settings)  # type: ignore[arg-type]
    with TestClient(app, headers=STOREFRONT, raise_server_exceptions=False) as api:
        app.state.availability = BrokenAvailability()
        response = api.get("/v1/recommendations", params={"user_id": "u2"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    with TestClient(app, headers=STOREFRONT) as api:
        app.state.availability = BrokenAvailability()
        with pytest.raises(RuntimeError, match="availability exploded"):
            api.get("/v1/recommendations", params={"user_id": "u2"})


def test_known_user_gets_personal_list(redis_client: object, api: TestClient) -> None:
    """A shopper with a stored list gets it, cut to n, with reasons and the live version."""
    _publish(redis_client, "20261101T000000Z", "a")
    body = api.get("/v1/recommendations", params={"user_id": "u2", "n": 10}).json()
    if body["variant"] == "holdout":
        pytest.fail("u2 fell in the holdout: pick another test shopper")
    assert body["source"] == "personal"
    assert [i["item_id"] for i in body["items"]] == [f"a-u2-{r}" for r in range(1, 11)]
    assert all(i["reason"]["code"] == "buy_again" and i["reason"]["text"] for i in body["items"])
    assert body["version"] == "20261101T000000Z"


def test_anonymous_with_country_gets_segment_then_global(redis_client: object, api: TestClient) -> None:
    """No user: the first context segment stored (country, then device), else the global list."""
    _publish(redis_client, "20261101T000000Z", "a")
    fr = api.get("/v1/recommendations", params={"session_id": "s-1", "country": "France"}).json()
    assert fr["source"] == "segment"
    assert fr["items"][0]["item_id"] == "a-country:france-1"
    mobile = api.get(
        "/v1/recommendations", params={"session_id": "s-1", "country": "Atlantis", "device": "Mobile"}
    )
    assert mobile.json()["source"] == "segment"
    assert mobile.json()["items"][0]["item_id"] == "a-device:mobile-1"
    xx = api.get("/v1/recommendations", params={"session_id": "s-1", "country": "Atlantis"}).json()
    assert xx["source"] == "global"
    assert xx["items"][0]["item_id"] == "a-global-1"


def test_bad_parameters_get_4xx_naming_the_field(redis_client: object, api: TestClient) -> None:
    """Out-of-range n and malformed ids are refused with 422 naming the parameter."""
    _publish(redis_client, "20261101T000000Z", "a")
    bad_n = api.get("/v1/recommendations", params={"user_id": "u1", "n": 0})
    assert bad_n.status_code == 422 and "n" in bad_n.json()["error"]
    bad_id = api.get("/v1/recommendations", params={"user_id": "u1\n<script>"})
    assert bad_id.status_code == 422 and "user_id" in bad_id.json()["error"]


def test_readiness_follows_live_version(redis_client: object, api: TestClient) -> None:
    """Ready only once a version is live; liveness always."""
    assert api.get("/health/live").status_code == 200
    assert api.get("/health/ready").status_code == 503
    _publish(redis_client, "20261101T000000Z", "a")
    api.app.state.store._pointer = (-1e9, None)  # type: ignore[attr-defined]  # skip the 1 s pointer cache
    ready = api.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["live_version"] == "20261101T000000Z"


def test_a_version_id_published_again_is_served_with_its_new_content(
    redis_client: object, settings: object
) -> None:
    """The API keeps a version's segment lists in memory; a rollback and a rerun of the same interval
    (same version id, other lists) must still be served fresh, not from that memory."""
    app = create_app(settings.model_copy(update={"stale_after_s": 10**9}))  # type: ignore[attr-defined]
    _publish(redis_client, "20261101T000000Z", "a")
    _publish(redis_client, "20261102T000000Z", "b")
    with TestClient(app, headers=STOREFRONT) as api:
        app.state.store._pointer_ttl_s = 0.0  # see every pointer move at once
        first = api.get("/v1/recommendations", params={"session_id": "s-1"}).json()
        assert first["items"][0]["item_id"] == "b-global-1"
        retention.rollback(redis_client)
        assert (
            api.get("/v1/recommendations", params={"session_id": "s-1"}).json()["version"]
            == "20261101T000000Z"
        )
        _publish(redis_client, "20261102T000000Z", "c")
        again = api.get("/v1/recommendations", params={"session_id": "s-1"}).json()
    assert again["version"] == "20261102T000000Z"
    assert again["items"][0]["item_id"] == "c-global-1"


def test_a_sorted_lists_file_is_published_block_by_block(redis_client: object, tmp_path: Path) -> None:
    """The loader's streaming path: lists read from a sorted Parquet file in blocks smaller than a list
    are stored whole, an erased shopper's list is left out, and the digest is the frame path's."""
    users, segments = _lists("a", [f"u{k}" for k in range(1, 8)])
    users.to_parquet(tmp_path / "user_lists.parquet", index=False)
    redis_client.sadd(ERASURES_KEY, erasure_digest("u3", SALT))  # type: ignore[attr-defined]
    streamed = loader.publish_version(
        redis_client,
        version="20261101T000000Z",
        user_lists=SortedListsFile(tmp_path / "user_lists.parquet", block_rows=5),
        segment_lists=segments,
        manifest={"run_id": "a"},
        erasure_salt=SALT,
    )
    kept = users[users["user_id"] != "u3"]
    assert streamed.user_lists == 6
    assert streamed.digest == loader.content_digest(kept, segments)
    stored = versions.read_user_list(redis_client, "20261101T000000Z", "u7")
    assert stored is not None
    assert [i["item_id"] for i in list_format.decode_items(stored)] == [f"a-u7-{r}" for r in range(1, 13)]
    assert versions.read_user_list(redis_client, "20261101T000000Z", "u3") is None

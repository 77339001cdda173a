"""What a hostile or broken client can make one request cost, through HTTP against a real Redis: cheap
checks before element validation, bounded error bodies, a clear answer for malformed JSON and for a body
that is not JSON, a body that never finishes arriving, and a request past its time budget."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from http_server import served
from storefront_auth import SHOPPER_TOKEN_SECRET, STOREFRONT

from carousel.cache import keys as layout
from configs.settings import Settings
from serving.app import create_app

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}
JSON = {"Content-Type": "application/json"}
# Unknown fields per event: 600 such events are just under the 1 MB body cap.
JUNK = 48


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=STOREFRONT) as client:
        yield client


def _view(**extra: Any) -> dict[str, Any]:
    return {"session_id": "s1", "item_id": "i1", "event_type": "view", "price": 1.0, **extra}


def test_malformed_json_names_the_line_and_column(api: TestClient) -> None:
    body = b'{"events": [\n  {"session_id": "s1",, "item_id": "i1"}]}'
    events = api.post("/v1/events", content=body, headers=JSON)
    assert events.status_code == 400
    assert events.json()["error"].startswith("malformed JSON at line 2, column 23")
    item = api.put("/v1/items/i1", content=b'{"price": 3,\n\n "in_stock": tru}', headers={**ADMIN, **JSON})
    assert item.status_code == 400 and "line 3, column 14" in item.json()["error"]


def test_a_body_that_is_not_json_gets_415(api: TestClient) -> None:
    text = orjson.dumps({"events": [_view()]})
    events = api.post("/v1/events", content=text, headers={"Content-Type": "text/plain"})
    assert events.status_code == 415 and "application/json" in events.json()["error"]
    consent = api.put(
        "/v1/users/u1/consent",
        content=b"personalization=false",
        headers={**ADMIN, "Content-Type": "text/plain"},
    )
    assert consent.status_code == 415


def test_a_megabyte_of_unknown_fields_gets_a_short_answer_and_stores_nothing(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """A 1 MB body is refused by its size (413) under the default cap. With a cap that lets it in, events
    over the count cap are refused by count before any is validated, and under it unknown fields are
    named by a cheap check, 20 of them and a count of the rest: never an answer larger than the input."""
    padding = {f"junk_{k}": "x" * 20 for k in range(JUNK)}
    too_many = orjson.dumps({"events": [_view(**padding) for _ in range(600)]})
    assert 900_000 < len(too_many) < 1_048_576
    assert api.post("/v1/events", content=too_many, headers=JSON).status_code == 413
    roomy = settings.model_copy(update={"events_max_body_bytes": 1_048_576})
    with TestClient(create_app(roomy), headers=STOREFRONT) as roomy_api:
        _refused_cheaply(roomy_api, too_many, padding)
    assert redis_client.exists(layout.EVENTS_STREAM) == 0


def _refused_cheaply(api: TestClient, too_many: bytes, padding: dict[str, str]) -> None:
    refused = api.post("/v1/events", content=too_many, headers=JSON)
    assert (
        refused.status_code == 422 and "at most 500 per request" in refused.json()["problems"][0]["problem"]
    )
    assert len(refused.content) < 2_000

    under_cap = orjson.dumps({"events": [_view(**padding) for _ in range(450)]})
    refused = api.post("/v1/events", content=under_cap, headers=JSON)
    assert refused.status_code == 422
    body = refused.json()
    assert len(body["problems"]) == 20 and body["more_problems"] == 450 * JUNK - 20
    assert body["problems"][0] == {"field": "events.0.junk_0", "problem": "unknown field"}
    assert len(refused.content) < 5_000


def test_a_body_shorter_than_its_content_length_is_cut_off_with_408(settings: Settings) -> None:
    """A client that declares more bytes than it sends gets 408 once `events_body_timeout_s` has passed,
    instead of holding the request open; the server answers others meanwhile."""
    app = create_app(settings.model_copy(update={"events_body_timeout_s": 0.5}))
    with served(app) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"events": ['
            )
            started = time.monotonic()
            reply = conn.recv(4096)
            waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5s" in reply
        assert waited < 5


def test_a_request_past_its_budget_gets_503(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"request_budget_s": 0.2}))

    async def stalled() -> dict[str, str]:
        await asyncio.sleep(2)
        return {"never": "sent"}

    app.add_api_route("/test/stalled", stalled)
    with TestClient(app, headers=STOREFRONT) as client:
        response = client.get("/test/stalled")
    assert response.status_code == 503 and "budget of 0.2s" in response.json()["error"]


def test_a_retry_after_a_dropped_answer_is_taken_once_in_the_stream_and_the_lake(
    settings: Settings, redis_client: Any
) -> None:
    """A client posts events with ids and loses the connection before the 202; it retries the batch, and
    once more with one new event: the stream, and the lake after the drain, hold each event once."""
    from datetime import UTC, datetime, timedelta

    import pyarrow.parquet as pq

    from carousel.lake import Lake
    from jobs.ingest.drain import drain_events

    batch = [_view(event_id=f"e-{k}", item_id=f"i{k}") for k in range(3)]
    payload = orjson.dumps({"events": batch})
    with served(create_app(settings)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        # The connection is gone before the answer was read; wait until the server has handled it.
        deadline = time.monotonic() + 5
        while redis_client.xlen(layout.EVENTS_STREAM) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        import httpx

        retry = httpx.post(f"{base_url}/v1/events", json={"events": batch})
        assert retry.status_code == 202 and retry.json() == {"accepted": 0, "duplicates": 3}
        more = httpx.post(
            f"{base_url}/v1/events", json={"events": [*batch, _view(event_id="e-3", item_id="i3")]}
        )
        assert more.json() == {"accepted": 1, "duplicates": 3}
    assert redis_client.xlen(layout.EVENTS_STREAM) == 4
    assert drain_events(settings, interval_end=datetime.now(UTC) + timedelta(seconds=1)).written == 4
    lake = pq.read_table(Lake(settings.lake_dir).events_dir).to_pandas()
    assert sorted(lake["item_id"]) == ["i0", "i1", "i2", "i3"]


def test_a_request_that_failed_gives_its_event_ids_back(
    api: TestClient, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When storing fails (503), the retry of the same events is taken, not skipped as a duplicate."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from serving import realtime

    real = realtime.record_events

    async def failing(*args: Any, **kwargs: Any) -> int:
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(realtime, "record_events", failing)
    events = {"events": [_view(event_id="again-1")]}
    assert api.post("/v1/events", json=events).status_code == 503
    monkeypatch.setattr(realtime, "record_events", real)
    assert api.post("/v1/events", json=events).json() == {"accepted": 1, "duplicates": 0}
    assert redis_client.xlen(layout.EVENTS_STREAM) == 1


def test_a_request_uvicorn_cannot_parse_gets_the_json_error_shape(settings: Settings) -> None:
    """A malformed request line never reaches the app; the server still answers in the API's shape."""
    with served(create_app(settings)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"GET /v1/recommendations HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
            reply = conn.recv(4096)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head
    assert orjson.loads(body)["error"].startswith("malformed HTTP request")


@pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True)
def test_a_browser_over_its_rate_gets_429_and_the_stores_servers_do_not(
    settings: Settings, redis_client: Any
) -> None:
    """Requests without the storefront token are counted per client address in Redis (on a single Redis
    and on a Redis Cluster), the address a trusted proxy forwards: past `events_browser_requests_per_minute`
    they get 429 with Retry-After and record nothing, signed-in browsers included; the store's servers
    and other addresses go on."""
    import httpx

    from carousel.rules.identity import shopper_token
    from serving.metrics import RATE_LIMITED

    limited = settings.model_copy(update={"events_browser_requests_per_minute": 3})
    refused_before = RATE_LIMITED._value.get()
    # uvicorn believes 127.0.0.1's X-Forwarded-For (`forwarded_allow_ips`' default): the test is the proxy.
    browser, neighbour = ({"X-Forwarded-For": address} for address in ("198.51.100.7", "198.51.100.8"))
    with served(create_app(limited)) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:

        def post(item_id: str, headers: dict[str, str], **extra: str) -> httpx.Response:
            return http.post(
                "/v1/events", json={"events": [_view(item_id=item_id, **extra)]}, headers=headers
            )

        assert [post(f"i{k}", browser).status_code for k in range(3)] == [202] * 3
        over = post("i9", browser)
        assert over.status_code == 429
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        assert "3 event requests a minute" in over.json()["error"]
        token = shopper_token("u1", SHOPPER_TOKEN_SECRET, expires_at=int(time.time()) + 600)
        assert post("i8", {**browser, "X-Shopper-Token": token}, user_id="u1").status_code == 429
        # The store's servers speak for every shopper from one address: never limited here.
        assert [post(f"j{k}", {**browser, **STOREFRONT}).status_code for k in range(5)] == [202] * 5
        assert post("n1", neighbour).status_code == 202
    assert redis_client.xlen(layout.EVENTS_STREAM) == 3 + 5 + 1
    assert RATE_LIMITED._value.get() == refused_before + 2


@pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True)
def test_a_browsers_request_counts_once_per_session_it_names(settings: Settings, redis_client: Any) -> None:
    """Without the storefront token one body must not open hundreds of visitor sessions: a request counts
    against the address's limit once per session it names, and one naming more than a minute allows is
    refused whole (422) since it could never pass; the store's servers post any number."""
    limited = settings.model_copy(update={"events_browser_requests_per_minute": 4})

    def visits(*sessions: str) -> dict[str, Any]:
        return {"events": [_view(session_id=s, item_id=f"i{k}") for k, s in enumerate(sessions)]}

    with TestClient(create_app(limited)) as browser:
        too_many = browser.post("/v1/events", json=visits("a", "b", "c", "d", "e", "a"))
        assert too_many.status_code == 422
        assert "names 5 sessions" in too_many.json()["problems"][0]["problem"]
        assert browser.post("/v1/events", json=visits("a", "b", "a", "c")).status_code == 202
        over = browser.post("/v1/events", json=visits("d", "e"))
        assert over.status_code == 429 and "once per session" in over.json()["error"]
        assert redis_client.xlen(layout.EVENTS_STREAM) == 4
        served = browser.post("/v1/events", json=visits(*"abcdefgh"), headers=STOREFRONT)
        assert served.status_code == 202
    assert redis_client.xlen(layout.EVENTS_STREAM) == 4 + 8


@pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True)
def test_wrong_tokens_lock_one_address_for_at_most_the_window_and_the_lock_table_stays_bounded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`FailedCredentials` against the real Redis: the failure over the limit locks that address (its
    IPv6 /64) and no other for at most a minute, and a worker remembers a bounded number of locks."""
    from carousel.cache.client import async_client
    from serving import ratelimit

    async def run() -> None:
        client = async_client(settings)
        guard = ratelimit.failed_credentials(
            settings.model_copy(update={"auth_failures_per_minute": 2}), client
        )
        assert guard is not None
        try:
            assert [await guard.failed("198.51.100.7") for _ in range(2)] == [None, None]
            assert guard.locked("198.51.100.7") is None
            wait_s = await guard.failed("198.51.100.7")
            assert wait_s is not None and 1 <= wait_s <= 60
            assert guard.locked("198.51.100.7") == wait_s
            assert guard.locked("198.51.100.8") is None
            for _ in range(3):
                await guard.failed("2001:db8:1:2::1")
            assert guard.locked("2001:db8:1:2:aaaa::9") is not None

            monkeypatch.setattr(ratelimit, "_LOCKS_KEPT", 3)
            for k in range(10):
                for _ in range(3):
                    await guard.failed(f"203.0.113.{k}")
            assert guard.locked("203.0.113.9") is not None and guard.locked("203.0.113.0") is None
            assert sum(guard.locked(f"203.0.113.{k}") is not None for k in range(10)) == 3
        finally:
            await guard.aclose()
            await client.aclose()

    asyncio.run(run())


def test_a_browser_over_its_limit_is_told_to_wait_for_the_window_not_a_second(settings: Settings) -> None:
    """Thirty fresh addresses each over a limit of 1 right after their first request: each must wait
    most of the minute. (`limits`' estimate reads "now" when the window's time left is read as exactly a
    minute: 20 to 25 of 30 such addresses in three runs before `_over` corrected it.)"""
    from carousel.cache.client import async_client
    from serving import ratelimit

    async def run() -> list[int]:
        client = async_client(settings)
        limit = ratelimit.browser_limit(
            settings.model_copy(update={"events_browser_requests_per_minute": 1}), client
        )
        assert limit is not None
        waits = []
        try:
            for k in range(30):
                assert await limit.retry_after(f"192.0.2.{k}") is None
                waits.append(await limit.retry_after(f"192.0.2.{k}"))
        finally:
            await limit.aclose()
            await client.aclose()
        return waits

    waits = asyncio.run(run())
    assert all(wait is not None and 50 <= wait <= 60 for wait in waits), waits

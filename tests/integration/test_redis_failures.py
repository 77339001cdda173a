"""With Redis stopped, or accepting connections but not answering, the API keeps answering non-empty
200s quickly from its fallbacks, and readiness stays green while it can."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from configs.settings import Settings
from infra.redis_server import free_port, start_server, stop_server
from jobs.publishing import loader
from serving.app import create_app

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server this test may stop or freeze without disturbing the others."""
    data = tmp_path / "redis"
    url = start_server(data, free_port())
    yield url, data
    try:
        os.kill(int((data / "redis.pid").read_text()), signal.SIGCONT)
    except (FileNotFoundError, ProcessLookupError):
        return  # already stopped
    stop_server(url)


def _publish(url: str) -> None:
    client = redis.Redis.from_url(url)
    n = 30
    lists = pd.DataFrame(
        {
            "user_id": np.repeat(["u1", "u2"], n),
            "rank": np.tile(np.arange(1, n + 1), 2),
            "item_id": [f"i{k}" for k in range(2 * n)],
            "score": 1.0,
            "reason_code": "viewed",
            "reason_text": "viewed",
        }
    )
    segments = lists[lists["user_id"] == "u1"].drop(columns="user_id").assign(segment="global")
    loader.publish_version(
        client,
        version="20261101T000000Z",
        user_lists=lists,
        segment_lists=segments,
        manifest={"generated_at": datetime.now(UTC).isoformat()},
    )


def _hammer(client: TestClient, requests: int) -> tuple[list[float], set[str]]:
    latencies, sources = [], set()
    for k in range(requests):
        started = time.perf_counter()
        response = client.get("/v1/recommendations", params={"user_id": f"u{k % 3}", "n": 10})
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) == 10
        sources.add(body["source"])
    return latencies, sources


@pytest.mark.parametrize("failure", ["stopped", "not answering"])
def test_api_keeps_answering_from_fallbacks(
    settings: Settings, own_redis: tuple[str, Path], failure: str
) -> None:
    url, data = own_redis
    _publish(url)
    served = settings.model_copy(update={"redis_url": url})
    with TestClient(create_app(served), headers=STOREFRONT) as client:
        warm, _ = _hammer(client, 20)  # the process has now seen the live global list
        if failure == "stopped":
            stop_server(url)
        else:
            # Frozen: the kernel still accepts connections, the server answers nothing.
            os.kill(int((data / "redis.pid").read_text()), signal.SIGSTOP)
        latencies, sources = _hammer(client, 300)
        assert sources == {"fallback"}
        p99 = float(np.percentile(latencies, 99))
        print(
            f"Redis {failure}: p50 {np.percentile(latencies, 50):.2f} ms, p99 {p99:.2f} ms over 300 requests"
        )
        # Until the breaker opens, `failures` reads wait out the socket timeout; once open, it lets one
        # trial read through per `reset_after_s`, which waits it out again while Redis is frozen. Every
        # other request is answered from the fallback at once: how many may be slow follows from how long
        # the requests took, not from how fast this machine is.
        breaker = client.app.state.store.breaker
        slow = [i for i, ms in enumerate(latencies) if ms >= 100.0]
        opened = slow[breaker.failures - 1] + 1 if len(slow) >= breaker.failures else len(latencies)
        trials = math.ceil(sum(latencies[opened:]) / 1000 / breaker.reset_after_s)
        assert len(slow) <= breaker.failures + trials, (
            f"{len(slow)} requests over 100 ms with Redis {failure} (p99 {p99:.1f} ms), "
            f"{breaker.failures} + {trials} trials allowed"
        )
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        metrics = client.get("/metrics", headers=ADMIN).text
        assert 'carousel_fallbacks_total{kind="last_global"}' in metrics
        opened = [line for line in metrics.splitlines() if line.startswith("carousel_breaker_opened_total ")]
        assert opened and float(opened[0].split()[1]) >= 1
        served_items = client.get("/v1/recommendations", params={"user_id": "u1"}).json()["items"]
        assert [i["item_id"] for i in served_items] == [
            f"i{k}" for k in range(10)
        ]  # the store's own global list


def test_api_started_while_redis_is_down_serves_fallbacks_then_lists(
    settings: Settings, own_redis: tuple[str, Path], tmp_path: Path
) -> None:
    """The start-up warm-up (cluster slots, scripts) is best effort: with Redis down the API still
    comes up and answers from fallbacks, and it reads the stored lists once Redis is back."""
    url, _ = own_redis
    stop_server(url)
    served = settings.model_copy(update={"redis_url": url})
    with TestClient(create_app(served), headers=STOREFRONT) as client:
        down = client.get("/v1/recommendations", params={"user_id": "u1", "n": 5})
        assert down.status_code == 200 and down.json()["source"] == "fallback"
        # Redis back on the same port, a version published: once the breaker lets a read through
        # (after its reset delay) the shopper's own list is served.
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        start_server(tmp_path / "redis", port)
        _publish(url)
        deadline = time.monotonic() + 10
        body = down.json()
        while body["source"] != "personal" and time.monotonic() < deadline:
            time.sleep(0.2)
            body = client.get("/v1/recommendations", params={"user_id": "u1", "n": 5}).json()
        assert body["source"] == "personal", body
        assert [i["item_id"] for i in body["items"]] == [f"i{k}" for k in range(5)]

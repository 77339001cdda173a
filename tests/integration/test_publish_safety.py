"""Publishing under failure: a killed loader, a full Redis. The live version must stay whole."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import redis

from carousel.cache import keys as layout
from carousel.cache import payload as list_format
from carousel.cache import versions
from jobs.publishing import PublishError, loader

pytestmark = pytest.mark.integration

OLD = "20261101T000000Z"
NEW = "20261102T000000Z"

WORKER = """
import sys, numpy as np, pandas as pd, redis
from jobs.publishing.loader import publish_version
users, n = int(sys.argv[2]), 20
lists = pd.DataFrame({
    "user_id": np.repeat([f"u{i}" for i in range(users)], n),
    "rank": np.tile(np.arange(1, n + 1), users),
    "item_id": [f"new-{i % 997}" for i in range(users * n)],
    "score": 1.0, "reason_code": "buy_again", "reason_text": "You bought this before",
})
segments = lists[lists["user_id"] == "u0"].drop(columns="user_id").assign(segment="global")
publish_version(redis.Redis.from_url(sys.argv[1]), version=sys.argv[3], user_lists=lists,
                segment_lists=segments, manifest={"generated_at": "2026-11-02T00:00:00+00:00"})
"""


def _lists(tag: str, users: int, n: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    lists = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(users) for _ in range(n)],
            "rank": [r for _ in range(users) for r in range(1, n + 1)],
            "item_id": [f"{tag}-{r}" for _ in range(users) for r in range(1, n + 1)],
            "score": 1.0,
            "reason_code": "buy_again",
            "reason_text": "You bought this before",
        }
    )
    segments = lists[lists["user_id"] == "u0"].drop(columns="user_id").assign(segment="global")
    return lists, segments


def _publish_old(client: redis.Redis) -> None:
    users, segments = _lists("old", 200)
    loader.publish_version(
        client, version=OLD, user_lists=users, segment_lists=segments, manifest={"generated_at": "x"}
    )


def _served_version_is_whole(client: redis.Redis, version: str, users: int) -> None:
    assert versions.live_version(client) == version
    for u in range(users):
        payload = versions.read_user_list(client, version, f"u{u}")
        assert payload is not None, f"u{u} lost its list"
        assert {i["item_id"].split("-")[0] for i in list_format.decode_items(payload)} == {"old"}
    # Shoppers only the half-written version knows have no list in the served one: never a mix.
    for u in (users, users + 1, 39_999):
        assert versions.read_user_list(client, version, f"u{u}") is None


def _fields_of(client: redis.Redis, version: str) -> int:
    return sum(
        1
        for key in client.scan_iter(match=layout.USER_PREFIX + "*", count=10_000)
        if client.hexists(key, version)
    )


@pytest.mark.parametrize("kill_after_keys", [200, 5_000, 25_000])
def test_sigkill_mid_publish_leaves_previous_version_served(
    redis_url: str, redis_client: redis.Redis, kill_after_keys: int
) -> None:
    """A loader killed with SIGKILL at any point leaves the old version live and whole; the next
    publish sweeps the half-written version away and goes live."""
    _publish_old(redis_client)
    baseline = redis_client.dbsize()
    worker = subprocess.Popen([sys.executable, "-c", WORKER, redis_url, "40000", NEW])
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline and worker.poll() is None:
        # Every shopper beyond the old version's 200 is a new key: the key count tracks the load.
        written = redis_client.dbsize() - baseline
        if written >= kill_after_keys:
            break
        time.sleep(0.05)
    assert worker.poll() is None, "the loader finished before it could be killed: raise the list count"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert written >= kill_after_keys
    _served_version_is_whole(redis_client, OLD, 200)
    assert redis_client.get(layout.meta_key(NEW)) is None

    users, segments = _lists("next", 50)
    result = loader.publish_version(
        redis_client, version="20261103T000000Z", user_lists=users, segment_lists=segments, manifest={}
    )
    assert result.switched and versions.live_version(redis_client) == "20261103T000000Z"
    assert list(redis_client.scan_iter(match=layout.version_prefix(NEW) + "*", count=10_000)) == []
    assert _fields_of(redis_client, NEW) == 0


def test_memory_check_refuses_a_version_that_does_not_fit(redis_client: redis.Redis) -> None:
    """Under a small maxmemory the load is refused before writing, and the live version stays."""
    _publish_old(redis_client)
    before = redis_client.config_get("maxmemory")["maxmemory"]
    used = int(redis_client.info("memory")["used_memory"])
    users, segments = _lists("big", 20_000)
    try:
        redis_client.config_set("maxmemory", used + 200_000)
        with pytest.raises(PublishError, match="maxmemory"):
            loader.publish_version(
                redis_client, version=NEW, user_lists=users, segment_lists=segments, manifest={}
            )
    finally:
        redis_client.config_set("maxmemory", before)
    _served_version_is_whole(redis_client, OLD, 200)
    assert list(redis_client.scan_iter(match=layout.version_prefix(NEW) + "*")) == []
    assert _fields_of(redis_client, NEW) == 0

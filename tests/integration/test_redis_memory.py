"""Redis memory as an operator sees it: the API's start and `/ops` warn about a policy that may evict the
live lists or a node nearly full, `/ops` shows every primary's memory and policy, and the loader's check
reserves a new version's share on every primary of a cluster; against a real Redis and a real Redis
Cluster. (The publish stage's warning is checked in `test_refresh.py`, on a real run.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from carousel.cache.memory import every_primary, read_memory
from configs.settings import Settings
from jobs.publishing import PublishError
from jobs.publishing.loader import check_memory
from serving.app import create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True),
]

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


@contextmanager
def _configured(client: Any, **values: str | int) -> Iterator[None]:
    """CONFIG SET on every primary for the block, then the values as they were."""
    names = list(values)
    before = {name: client.config_get(name, **every_primary(client)) for name in names}
    try:
        for name, value in values.items():
            client.config_set(name, value, **every_primary(client))
        yield
    finally:
        for name in names:
            old = before[name]
            # A cluster client answers per node when asked every primary; they were all alike here.
            value = old[name] if name in old else next(iter(old.values()))[name]
            client.config_set(name, value, **every_primary(client))


def test_ops_shows_every_primarys_memory_and_warns_about_evicting_policies_and_full_nodes(
    settings: Settings, redis_client: Any, redis_kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    primaries = 3 if redis_kind == "cluster" else 1
    with _configured(redis_client, **{"maxmemory-policy": "allkeys-lfu"}), TestClient(create_app(settings)):
        pass
    started = [line for line in capfd.readouterr().err.splitlines() if "WARNING Redis memory" in line]
    assert len(started) == primaries and all("maxmemory-policy allkeys-lfu may evict" in w for w in started)
    with TestClient(create_app(settings)) as api:
        assert "WARNING Redis memory" not in capfd.readouterr().err
        page = api.get("/ops", headers=ADMIN)
        assert page.status_code == 200
        section = page.text.split("<h2>Redis memory</h2>", 1)[1].split("<h2>", 1)[0]
        assert section.count("<td><code>noeviction</code></td>") == primaries
        # Each node by its address, a single server as a cluster's nodes are.
        assert section.count("<tr><td><code>127.0.0.1:") == primaries
        assert 'class="bad"' not in section

        with _configured(redis_client, **{"maxmemory-policy": "allkeys-lru"}):
            section = (
                api.get("/ops", headers=ADMIN).text.split("<h2>Redis memory</h2>", 1)[1].split("<h2>", 1)[0]
            )
        assert section.count("maxmemory-policy allkeys-lru may evict any key") == primaries

        nodes = read_memory(redis_client)
        # A limit just above what the busiest primary holds now: that node reads as nearly full.
        nearly = int(max(n.used for n in nodes) / 0.95)
        with _configured(redis_client, maxmemory=nearly):
            section = (
                api.get("/ops", headers=ADMIN).text.split("<h2>Redis memory</h2>", 1)[1].split("<h2>", 1)[0]
            )
        assert "the next version may be refused" in section
        assert "allkeys" not in section


def test_the_loaders_check_reserves_a_versions_share_on_every_primary(
    redis_client: Any, redis_kind: str
) -> None:
    """A version that fits under maxmemory on paper but not in the share one primary gets is refused,
    naming that node on a cluster; one that fits everywhere passes."""
    nodes = read_memory(redis_client)
    room = 4_000_000
    limit = max(n.used for n in nodes) + room
    with _configured(redis_client, maxmemory=limit):
        check_memory(redis_client, needed_bytes=len(nodes) * room // 2)
        with pytest.raises(PublishError, match="maxmemory") as refused:
            check_memory(redis_client, needed_bytes=len(nodes) * room)
    if redis_kind == "cluster":
        assert " node 127.0.0.1:" in str(refused.value)

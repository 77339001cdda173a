"""Delta versions in a real Redis (single and cluster): a 15-minute run writes only its shoppers, stays
atomic and reversible."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from carousel.cache import keys as layout
from carousel.cache import payload as list_format
from carousel.cache import versions
from jobs.publishing import PublishError, loader, retention
from serving.app import create_app

# Every test runs on a single Redis and on a three-primary Redis Cluster.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True),
]

F1, D2, D3, F4 = "20261101T000000Z", "20261101T001500Z", "20261101T003000Z", "20261102T000000Z"


def _lists(tag: str, users: list[str], n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    user_rows = pd.DataFrame(
        {
            "user_id": [u for u in users for _ in range(n)],
            "rank": [r for _ in users for r in range(1, n + 1)],
            "item_id": [f"{tag}-{u}-{r}" for u in users for r in range(1, n + 1)],
            "score": 1.0,
            "reason_code": "buy_again",
            "reason_text": "You bought this before",
        }
    )
    segments = pd.DataFrame(
        {"segment": "global", "rank": range(1, n + 1), "item_id": [f"{tag}-g-{r}" for r in range(1, n + 1)]}
    ).assign(score=1.0, reason_code="bestseller", reason_text="Bestseller right now")
    return user_rows, segments


def _publish(
    client: redis.Redis, version: str, tag: str, users: list[str], kind: str
) -> loader.PublishResult:
    user_lists, segments = _lists(tag, users)
    return loader.publish_version(
        client,
        version=version,
        user_lists=user_lists,
        segment_lists=segments,
        manifest={"run_id": tag, "generated_at": "2026-11-01T00:00:00+00:00"},
        kind=kind,  # type: ignore[arg-type]
    )


def _tag(client: redis.Redis, version: str, user: str) -> str | None:
    payload = versions.read_user_list(client, version, user)
    return None if payload is None else str(list_format.decode_items(payload)[0]["item_id"]).split("-")[0]


@pytest.fixture
def api(settings: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=STOREFRONT) as client:  # type: ignore[arg-type]
        yield client


def test_delta_writes_only_its_shoppers_and_the_rest_resolve_to_the_base(
    redis_client: redis.Redis, api: TestClient
) -> None:
    """After a delta for u1, u1 is served the delta's list and u2/u3 their base list; u2's and u3's
    keys are not touched by the delta."""
    _publish(redis_client, F1, "a", ["u1", "u2", "u3"], "full")
    before = {u: redis_client.hgetall(layout.user_key(u)) for u in ("u2", "u3")}
    result = _publish(redis_client, D2, "b", ["u1"], "delta")
    assert (result.kind, result.base, result.user_lists) == ("delta", F1, 1)
    assert {u: redis_client.hgetall(layout.user_key(u)) for u in ("u2", "u3")} == before
    assert [_tag(redis_client, D2, u) for u in ("u1", "u2", "u3")] == ["b", "a", "a"]
    served = {u: api.get("/v1/recommendations", params={"user_id": u, "n": 3}).json() for u in ("u1", "u2")}
    assert served["u1"]["items"][0]["item_id"].startswith("b-") and served["u1"]["version"] == D2
    assert served["u2"]["items"][0]["item_id"].startswith("a-") and served["u2"]["source"] == "personal"


def test_rollback_of_a_delta_never_resurfaces_under_a_later_one(redis_client: redis.Redis) -> None:
    """Rolling a delta back serves the base again; a later delta does not bring the rolled-back lists
    back for shoppers it does not write."""
    _publish(redis_client, F1, "a", ["u1", "u2"], "full")
    _publish(redis_client, D2, "b", ["u1"], "delta")
    assert retention.rollback(redis_client) == (D2, F1)
    assert _tag(redis_client, F1, "u1") == "a"
    _publish(redis_client, D3, "c", ["u2"], "delta")
    assert [_tag(redis_client, D3, u) for u in ("u1", "u2")] == ["a", "c"]
    assert not any(redis_client.hexists(layout.user_key(u), D2) for u in ("u1", "u2"))


def test_a_full_version_drops_shoppers_it_does_not_list(redis_client: redis.Redis) -> None:
    """A shopper absent from a newer full version gets no personal list from it, and once no retained
    version resolves to their old fields the hash is gone."""
    _publish(redis_client, F1, "a", ["u1", "u2"], "full")
    _publish(redis_client, D2, "b", ["u2"], "delta")
    _publish(redis_client, F4, "d", ["u1"], "full")
    assert _tag(redis_client, F4, "u1") == "d"
    assert _tag(redis_client, F4, "u2") is None
    assert _tag(redis_client, D2, "u2") == "b"  # still there for a rollback to D2
    _publish(redis_client, "20261103T000000Z", "e", ["u1"], "full")
    assert not redis_client.exists(layout.user_key("u2"))


def test_a_delta_needs_a_live_version(redis_client: redis.Redis) -> None:
    with pytest.raises(PublishError, match="needs a live version"):
        _publish(redis_client, D2, "b", ["u1"], "delta")
    assert versions.live_version(redis_client) is None


def test_rerun_of_the_live_interval_reports_whether_content_is_identical(redis_client: redis.Redis) -> None:
    first = _publish(redis_client, F1, "a", ["u1", "u2"], "full")
    same = _publish(redis_client, F1, "a", ["u1", "u2"], "full")
    other = _publish(redis_client, F1, "z", ["u1", "u2"], "full")
    assert not same.switched and same.identical is True and same.digest == first.digest
    assert other.identical is False
    assert _tag(redis_client, F1, "u1") == "a"

"""Schema-driven fuzzing of the HTTP API (schemathesis over the app's own OpenAPI document): whatever
the generated parameters and bodies, valid or not, with or without a token, no request gets a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pandas as pd
import pytest
import redis
import schemathesis
from http_server import served

from configs.settings import Settings
from jobs.publishing import loader
from serving.app import create_app

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def _publish(client: redis.Redis) -> None:
    rows = [
        {
            "user_id": f"u{u}",
            "rank": r,
            "item_id": f"i{(u + r) % 40}",
            "score": 1.0,
            "reason_code": "viewed",
            "reason_text": "viewed",
        }
        for u in range(5)
        for r in range(1, 31)
    ]
    users = pd.DataFrame(rows)
    segments = users[users["user_id"] == "u0"].drop(columns="user_id").assign(segment="global")
    similar = users.rename(columns={"user_id": "anchor_id"}).assign(
        anchor_id=lambda f: f["anchor_id"].str.replace("u", "i")
    )
    loader.publish_version(
        client,
        version="20261101T000000Z",
        user_lists=users,
        segment_lists=segments,
        item_lists=similar,
        manifest={"generated_at": datetime.now(UTC).isoformat()},
    )


@pytest.fixture
def api_schema(settings: Settings, redis_client: redis.Redis) -> Iterator[Any]:
    """The API served by uvicorn on a free port (lifespan and all), and its OpenAPI schema."""
    _publish(redis_client)
    with served(create_app(settings)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json", headers=ADMIN)


def test_no_request_gets_a_server_error(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
            database=None,
        )
        def no_server_error(case: Any) -> None:
            for headers in (ADMIN, {}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )

        no_server_error()

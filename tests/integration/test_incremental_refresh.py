"""The 15-minute incremental run against the real stack: only active shoppers are rescored and written,
new shoppers get personal lists, and reruns of an interval give identical content."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from carousel.cache import keys as layout
from carousel.cache import payload as list_format
from carousel.cache import versions
from carousel.lake import Lake
from configs.settings import Settings
from jobs.publishing import loader
from jobs.ranking.store import ModelStore
from jobs.stages import refresh, run
from jobs.stages.manifest import RunManifest

pytestmark = pytest.mark.integration

FULL_END = datetime(2026, 11, 1, tzinfo=UTC)
DELTA_START = FULL_END
DELTA_END = datetime(2026, 11, 1, 0, 15, tzinfo=UTC)


def _new_events(users: pd.DataFrame, items: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A few minutes of activity: two known consenting shoppers and one brand-new shopper."""
    known = users.loc[users["consent_personalization"], "user_id"].head(2).tolist()
    rows = []
    for n, user in enumerate([*known, "newcomer-1"]):
        for k, (kind, item) in enumerate(
            [("view", items[n]), ("view", items[n + 5]), ("add_to_cart", items[n + 5])]
        ):
            rows.append(
                {
                    "user_id": user,
                    "session_id": f"late-{user}",
                    "item_id": item,
                    "event_type": kind,
                    "ts": pd.Timestamp("2026-11-01T00:05:00Z") + pd.Timedelta(seconds=30 * k),
                    "quantity": 1,
                    "price": 5.0,
                    "country": "Germany",
                    "device": "mobile",
                    "referrer": "direct",
                }
            )
    rows.append({**rows[1], "event_type": "purchase", "ts": pd.Timestamp("2026-11-01T00:07:00Z")})
    return pd.DataFrame(rows), [*known, "newcomer-1"]


def test_incremental_run_rescores_only_active_shoppers(
    settings: Settings, redis_client: object, small_store: Callable[..., pd.DataFrame]
) -> None:
    users = small_store(settings)
    full = refresh.run_refresh(settings, interval_end=FULL_END, run_id="full-1", mode="full")
    assert full.published.kind == "full"
    assert ModelStore(settings.models_dir).latest() == 1
    full_users = full.published.user_lists

    lake = Lake(settings.lake_dir)
    items = lake.read_items()
    assert items is not None
    events, active = _new_events(users, items.loc[items["in_stock"], "item_id"].tolist())
    lake.append_events(events, now=pd.Timestamp(DELTA_END), source="late events")
    untouched = [u for u in users["user_id"] if u not in active][:50]
    before = {u: redis_client.hgetall(layout.user_key(u)) for u in untouched}  # type: ignore[attr-defined]

    delta = refresh.run_refresh(
        settings, interval_start=DELTA_START, interval_end=DELTA_END, run_id="delta-1", mode="auto"
    )
    assert (delta.published.kind, delta.published.base) == ("delta", full.version)
    assert delta.published.user_lists == len(active) < full_users
    manifest = RunManifest.read(run.run_dir(settings, "delta-1"), "delta-1")
    assert manifest.mode == "incremental" and manifest.model.number == 1
    # The input gate read only the new part; its counts still cover the whole lake.
    inputs = (run.history(settings).get("delta-1") or {})["inputs"]
    assert (inputs["parts_scanned"], inputs["rows_scanned"]) == (1, len(events))
    assert inputs["rows"] == (run.history(settings).get("full-1") or {})["inputs"]["rows"] + len(events)
    # The output gate compared the delta's lists with the live ones (drift) and kept the figures.
    verdict = json.loads((run.run_dir(settings, "delta-1") / "validation.json").read_text())
    gate = json.loads(Path(verdict["results_path"]).read_text())
    assert gate["statistics"]["drift_compared_users"] == len(active) - 1  # the newcomer has no live list
    assert gate["validations"]["list_drift"]["success"]
    # Nobody else's key was rewritten, and every shopper is still served.
    assert {u: redis_client.hgetall(layout.user_key(u)) for u in untouched} == before  # type: ignore[attr-defined]
    for user in active:
        payload = versions.read_user_list(redis_client, delta.version, user)
        assert payload is not None and len(list_format.decode_items(payload)) == settings.stored_list_length
    assert versions.read_user_list(redis_client, delta.version, untouched[0]) == versions.read_user_list(
        redis_client, full.version, untouched[0]
    )
    # The newcomer's list follows what they looked at: the carted item's category leads.
    newcomer = list_format.decode_items(
        versions.read_user_list(redis_client, delta.version, "newcomer-1") or b"[]"
    )
    assert {i["reason"]["code"] for i in newcomer} & {"viewed", "goes_with_yours", "similar_shoppers"}

    # A retry of the interval (new run id, as Airflow's clear-and-rerun gives) computes the same bytes.
    again = refresh.run_refresh(
        settings,
        interval_start=DELTA_START,
        interval_end=DELTA_END,
        run_id="delta-1-retry",
        mode="incremental",
    )
    assert not again.published.switched and again.published.identical is True
    first = pd.read_parquet(run.run_dir(settings, "delta-1") / "user_lists.parquet")
    second = pd.read_parquet(run.run_dir(settings, "delta-1-retry") / "user_lists.parquet")
    pd.testing.assert_frame_equal(first, second)


def test_full_compute_rerun_is_byte_identical(
    settings: Settings, small_store: Callable[..., pd.DataFrame]
) -> None:
    """Two full computes of the same interval (each retraining its model) write identical lists."""
    small_store(settings, users=300)
    digests = []
    for run_id in ("again-1", "again-2"):
        run.run_stage("compute", run.StageRun(settings, run_id, FULL_END, mode="full"))
        out = run.run_dir(settings, run_id)
        digests.append(
            loader.content_digest(
                pd.read_parquet(out / "user_lists.parquet"), pd.read_parquet(out / "segment_lists.parquet")
            )
        )
    assert digests[0] == digests[1]
    store = ModelStore(settings.models_dir)
    assert store.numbers() == [1, 2]
    assert store.describe(1)["windows"] == store.describe(2)["windows"]


def test_batch_leaves_out_shoppers_erased_or_opted_out_through_the_api(
    settings: Settings, redis_client: object, small_store: Callable[..., pd.DataFrame]
) -> None:
    """Consent withdrawn and erasures recorded by the API (Redis) are honoured by the next run, even
    though the lake's users table still lists those shoppers as consenting."""
    from carousel.cache.keys import ERASURES_KEY, consent_key
    from carousel.rules.erasure import erasure_digest

    users = small_store(settings, users=250, seed=8)
    consenting = users.loc[users["consent_personalization"], "user_id"].tolist()
    withdrawn, erased = consenting[0], consenting[1]
    redis_client.hset(consent_key(withdrawn), mapping={"personalization": "0", "marketing": "0"})  # type: ignore[attr-defined]
    redis_client.sadd(ERASURES_KEY, erasure_digest(erased, settings.erasure_salt_value()))  # type: ignore[attr-defined]
    result = refresh.run_refresh(settings, interval_end=FULL_END, run_id="respect-1", mode="full")
    lists = pd.read_parquet(run.run_dir(settings, "respect-1") / "user_lists.parquet")
    assert not lists["user_id"].isin([withdrawn, erased]).any()
    assert lists["user_id"].isin(consenting[2:]).any()
    for user in (withdrawn, erased):
        assert versions.read_user_list(redis_client, result.version, user) is None

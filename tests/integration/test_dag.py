"""The Airflow DAG: its invariants (DagBag) and one real `airflow dags test` run end to end."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from carousel.cache import versions
from carousel.lake import Lake
from carousel.runs import RunHistory, folder_name
from configs.settings import Settings
from infra.airflow_runner import ROOT, DagRunFailed, run_dag_once
from infra.stage_runner import runner_answers, stop_runner
from jobs.ranking.store import ModelStore

pytestmark = pytest.mark.integration

# dag id -> (cron schedule, longest run allowed, tasks)
DAGS = {
    "carousel_refresh": (
        "*/15 * * * *",
        timedelta(minutes=15),
        {"drain_events", "check_inputs", "compute", "validate", "publish", "audiences"},
    ),
    "carousel_retrain": ("0 2 * * *", timedelta(hours=4), {"compact_erased", "check_inputs", "train"}),
}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> object:
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.models import DagBag

    retries = os.environ.pop("CAROUSEL_DAG_RETRIES", None)  # check the production defaults
    try:
        return DagBag(dag_folder=str(ROOT / "dags"))
    finally:
        if retries is not None:
            os.environ["CAROUSEL_DAG_RETRIES"] = retries


def test_dags_import_without_errors(dagbag: object) -> None:
    """Every DAG file imports cleanly and every expected DAG is there."""
    assert dagbag.import_errors == {}  # type: ignore[attr-defined]
    assert set(DAGS) <= set(dagbag.dags)  # type: ignore[attr-defined]


def test_publish_task_runs_the_loader_without_numpy_huge_pages(dagbag: object) -> None:
    """The loader shares its host with the API; its huge-page faults stalled the API (jobs.publish)."""
    publish_task = dagbag.dags["carousel_refresh"].get_task("publish")  # type: ignore[attr-defined]
    assert publish_task.env == {"NUMPY_MADVISE_HUGEPAGE": "0"} and publish_task.append_env
    compute = dagbag.dags["carousel_refresh"].get_task("compute")  # type: ignore[attr-defined]
    assert not compute.env


@pytest.mark.parametrize("dag_id", sorted(DAGS))
def test_dag_scheduling_invariants(dagbag: object, dag_id: str) -> None:
    """On data intervals (refresh every 15 minutes, retrain nightly), no catch-up, one run at a time, a
    run shorter than its period, retries and per-task timeouts within the run's."""
    from airflow.sdk import CronDataIntervalTimetable

    schedule, longest, tasks = DAGS[dag_id]
    dag = dagbag.dags[dag_id]  # type: ignore[attr-defined]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == schedule
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout <= longest
    assert set(dag.task_ids) == tasks
    for task in dag.tasks:
        assert "data_interval_end" in task.bash_command and "data_interval_start" in task.bash_command
        assert task.retries >= 1, task.task_id
        assert task.execution_timeout is not None and task.execution_timeout < dag.dagrun_timeout


@pytest.fixture
def runner_stopped(settings: Settings) -> Iterator[None]:
    """The DAG's Spark stages run on the store's stage runner, as in production; stopped afterwards."""
    yield
    stop_runner(settings)


def _point_at(store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**store_env, "CAROUSEL_STAGE_RUNNER": "true"}.items():
        monkeypatch.setenv(key, value)


def test_retrain_then_refresh_runs_through_airflow(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: object,
    small_store: Callable[..., object],
    store_env: dict[str, str],
    runner_stopped: None,
) -> None:
    """`airflow dags test`: the retrain stores model 1 and publishes nothing; the next refresh rescores
    every shopper with it (a full version); the one after, with new events, publishes a delta of the
    active shoppers only. The refreshes' Spark stages ran on one warm stage runner."""
    small_store(settings, users=300, seed=3)
    _point_at(store_env, monkeypatch)
    home = tmp_path / "airflow"
    run_dag_once("carousel_retrain", datetime(2026, 11, 1, 2, tzinfo=UTC), airflow_home=home)
    model = ModelStore(settings.models_dir).describe(1)
    assert model["windows"] and model["train_rows"] > 0 and "ndcg@10" in model["evaluation"]
    assert versions.live_version(redis_client) is None

    # The logical date is the interval end: this run covers [2026-11-01 01:45, 02:00).
    run_dag_once("carousel_refresh", datetime(2026, 11, 1, 2, tzinfo=UTC), airflow_home=home)
    full = versions.read_meta(redis_client, "20261101T020000Z")
    assert full is not None and full["kind"] == "full" and full["model"]["number"] == 1
    assert full["user_lists"] > 0 and full["run_id"].startswith("manual__")
    record = RunHistory(settings.runs_dir / "history.sqlite").get(full["run_id"])
    assert record is not None and record["inputs"]["success"] and record["inputs"]["rows"] > 0
    assert record["mode"] == "rescore" and set(record["stages"]) >= {"compute", "validate", "publish"}

    lake = Lake(settings.lake_dir)
    shopper = str(lake.read_users()["user_id"].iloc[0])  # type: ignore[index]
    item = str(lake.read_items()["item_id"].iloc[0])  # type: ignore[index]
    late = pd.DataFrame(
        [
            {
                "user_id": shopper,
                "session_id": "late",
                "item_id": item,
                "event_type": kind,
                "quantity": 1,
                "price": 3.0,
                "country": "France",
                "device": "desktop",
                "referrer": "email",
                "ts": pd.Timestamp("2026-11-01T02:05:00Z") + pd.Timedelta(minutes=k),
            }
            for k, kind in enumerate(["view", "add_to_cart", "purchase"])
        ]
    )
    lake.append_events(late, now=pd.Timestamp("2026-11-01T02:15:00Z"), source="late events")
    started = time.perf_counter()
    run_dag_once("carousel_refresh", datetime(2026, 11, 1, 2, 15, tzinfo=UTC), airflow_home=home)
    print(f"incremental carousel_refresh through Airflow: {time.perf_counter() - started:.1f}s")
    delta = versions.read_meta(redis_client, "20261101T021500Z")
    assert delta is not None and (delta["kind"], delta["base"]) == ("delta", "20261101T020000Z")
    assert delta["user_lists"] == 1
    assert versions.read_user_list(redis_client, "20261101T021500Z", shopper) is not None
    # The last stage wrote this run's audience files for email tools.
    for campaign in ("abandoned_cart", "post_purchase", "browse_abandonment"):
        assert (settings.var_dir / "audiences" / folder_name(delta["run_id"]) / f"{campaign}.csv").exists()
    # Both refreshes' input gate, compute and audiences (the retrain's stages run in their own
    # applications).
    runner = runner_answers(settings)
    assert runner is not None and runner["stages_run"] == 6


def test_dag_run_with_bad_inputs_fails_and_keeps_live_version(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: object,
    small_store: Callable[..., object],
    store_env: dict[str, str],
    runner_stopped: None,
) -> None:
    """Events duplicated wholesale into the lake fail the input checkpoint: the Airflow run fails,
    nothing is computed or published, and the input Data Docs show the failure."""
    small_store(settings, users=200, seed=4)
    _point_at(store_env, monkeypatch)
    # A second copy of the same events (a replayed export) under another part name.
    part = next((settings.lake_dir / "events").glob("part-*.parquet"))
    shutil.copy(part, part.with_name("part-replayed-copy.parquet"))
    with pytest.raises(DagRunFailed):
        run_dag_once("carousel_refresh", datetime(2026, 11, 1, tzinfo=UTC), airflow_home=tmp_path / "airflow")
    assert versions.live_version(redis_client) is None
    runs = RunHistory(settings.runs_dir / "history.sqlite").recent(5)
    assert runs and runs[0]["status"] == "failed" and runs[0]["failed_stage"] == "check_inputs"
    assert "duplicate" in " ".join(runs[0]["inputs"]["failures"])
    docs = Path(runs[0]["inputs"]["docs_index"]).read_text()
    assert "Failed" in docs

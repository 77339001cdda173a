"""The Airflow DAG: its invariants (DagBag) and one real `airflow dags test` run end to end."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from configs.settings import Settings
from infra.airflow_runner import ROOT, DagRunFailed, run_dag_once
from jobs import publish
from jobs.run_history import RunHistory

pytestmark = pytest.mark.integration

DAGS = {"carousel_refresh": {"check_inputs", "compute", "validate", "publish"}}


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


@pytest.mark.parametrize("dag_id", sorted(DAGS))
def test_dag_scheduling_invariants(dagbag: object, dag_id: str) -> None:
    """Every 15 minutes on data intervals, no catch-up, one run at a time, retries and timeouts set."""
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags[dag_id]  # type: ignore[attr-defined]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "*/15 * * * *"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout <= timedelta(minutes=15)
    assert set(dag.task_ids) == DAGS[dag_id]
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.execution_timeout is not None and task.execution_timeout < dag.dagrun_timeout


def test_dag_run_publishes_through_airflow(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: object,
    small_store: Callable[..., object],
) -> None:
    """`airflow dags test carousel_refresh` computes, validates and publishes the interval's version."""
    small_store(settings, users=300, seed=3)
    for key, value in {
        "CAROUSEL_REDIS_URL": settings.redis_url,
        "CAROUSEL_VAR_DIR": str(settings.var_dir),
        "CAROUSEL_LAKE_DIR": str(settings.lake_dir),
        "CAROUSEL_SPARK_MASTER": settings.spark_master,
        "CAROUSEL_SPARK_DRIVER_MEMORY": settings.spark_driver_memory,
    }.items():
        monkeypatch.setenv(key, value)
    # The logical date is the interval end: this run covers [23:45, 00:00) of 2026-10-31.
    run_dag_once("carousel_refresh", datetime(2026, 11, 1, tzinfo=UTC), airflow_home=tmp_path / "airflow")
    assert publish.live_version(redis_client) == "20261101T000000Z"
    meta = publish.read_meta(redis_client, "20261101T000000Z")
    assert meta is not None and meta["user_lists"] > 0 and meta["run_id"].startswith("manual__")
    record = RunHistory(settings.runs_dir / "history.sqlite").get(meta["run_id"])
    assert record is not None and record["inputs"]["success"] and record["inputs"]["rows"] > 0
    assert set(record["stages"]) == {"compute", "validate", "publish"}


def test_dag_run_with_bad_inputs_fails_and_keeps_live_version(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: object,
    small_store: Callable[..., object],
) -> None:
    """Events duplicated wholesale into the lake fail the input checkpoint: the Airflow run fails,
    nothing is computed or published, and the input Data Docs show the failure."""
    small_store(settings, users=200, seed=4)
    for key, value in {
        "CAROUSEL_REDIS_URL": settings.redis_url,
        "CAROUSEL_VAR_DIR": str(settings.var_dir),
        "CAROUSEL_LAKE_DIR": str(settings.lake_dir),
        "CAROUSEL_SPARK_MASTER": settings.spark_master,
    }.items():
        monkeypatch.setenv(key, value)
    # A second copy of the same events (a replayed export) under another part name.
    part = next((settings.lake_dir / "events").glob("part-*.parquet"))
    shutil.copy(part, part.with_name("part-replayed-copy.parquet"))
    with pytest.raises(DagRunFailed):
        run_dag_once("carousel_refresh", datetime(2026, 11, 1, tzinfo=UTC), airflow_home=tmp_path / "airflow")
    assert publish.live_version(redis_client) is None
    runs = RunHistory(settings.runs_dir / "history.sqlite").recent(5)
    assert runs and runs[0]["status"] == "failed" and runs[0]["failed_stage"] == "inputs"
    assert "duplicate" in " ".join(runs[0]["inputs"]["failures"])
    docs = Path(runs[0]["inputs"]["docs_index"]).read_text()
    assert "Failed" in docs

"""The refresh DAG on a real Spark standalone cluster (a master and two workers on 127.0.0.1, started
from PySpark's launcher classes): Airflow runs every stage against `spark://...`, the executors on the
workers score the shoppers, and the published lists are the ones a `local[2]` run publishes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from carousel.cache import versions
from carousel.cache.keys import meta_key
from configs.settings import Settings
from infra.airflow_runner import run_dag_once
from infra.output_snapshot import differing_lists, dump
from infra.spark_cluster import StandaloneCluster, start_cluster
from jobs.stages import REFRESH, SPARK_STAGES, refresh

pytestmark = pytest.mark.integration

INTERVAL_END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    started = start_cluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1, memory="2g")
    yield started
    started.stop()


def test_refresh_dag_on_a_standalone_cluster_publishes_the_local_runs_lists(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    small_store: Callable[..., object],
    cluster: StandaloneCluster,
    short_spark_apps: dict[str, str],
) -> None:
    small_store(settings, users=300, seed=3)
    local = refresh.run_refresh(settings, interval_end=INTERVAL_END, mode="auto", run_id="local-run")
    assert local.version == "20261101T000000Z"
    dump(settings.redis_url, tmp_path / "local.jsonl")
    redis_client.flushdb()

    # The same lake; a var folder (models, runs) of its own, so the cluster's run trains its own model.
    for key, value in {
        "CAROUSEL_REDIS_URL": settings.redis_url,
        "CAROUSEL_VAR_DIR": str(tmp_path / "cluster-var"),
        "CAROUSEL_LAKE_DIR": str(settings.lake_dir),
        "CAROUSEL_SPARK_MASTER": cluster.master_url,
        "CAROUSEL_SPARK_DRIVER_MEMORY": "1g",
        # One application per stage, as spark-submit runs them (the stage runner: test_stage_runner).
        "CAROUSEL_STAGE_RUNNER": "false",
        "SPARK_LOCAL_IP": "127.0.0.1",
        **short_spark_apps,
    }.items():
        monkeypatch.setenv(key, value)
    run_dag_once("carousel_refresh", INTERVAL_END, airflow_home=tmp_path / "airflow")
    meta = versions.read_meta(redis_client, "20261101T000000Z")
    assert meta is not None and meta["run_id"].startswith("manual__") and meta["user_lists"] > 200
    dump(settings.redis_url, tmp_path / "cluster.jsonl")

    # Every Spark stage's application ran executors on both workers.
    spark_stages = SPARK_STAGES.intersection(REFRESH)
    for work in cluster.worker_folders():
        assert len(list(work.glob("app-*"))) == len(spark_stages), work
    # The same lists, similar items and segments; the version's meta differs only in the run's id.
    differing = differing_lists(tmp_path / "local.jsonl", tmp_path / "cluster.jsonl")
    assert differing == [meta_key(local.version)]
    local_meta, cluster_meta = (
        _meta(tmp_path / name, local.version) for name in ("local.jsonl", "cluster.jsonl")
    )
    assert local_meta["run_id"] == "local-run"
    assert {**local_meta, "run_id": None} == {**cluster_meta, "run_id": None}


def _meta(dumped: Path, version: str) -> dict[str, Any]:
    rows = (json.loads(line) for line in dumped.read_text().splitlines() if line)
    value = next(row["value"] for row in rows if row["key"] == meta_key(version))
    return dict(orjson.loads(bytes.fromhex(value)))

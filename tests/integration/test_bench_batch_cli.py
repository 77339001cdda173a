"""`carousel bench batch` end to end at a toy size: it generates a store, imports it into its own lake,
starts its own Redis, runs every stage of a full and an incremental run as a job of its own and writes
the contract's JSON. Only that the work was done and measured is checked; how fast is what it prints."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson
import psutil
import pytest
import redis

from carousel import cli
from configs.settings import get_settings

pytestmark = pytest.mark.integration


def test_bench_batch_writes_the_contract_report(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    short_spark_apps: dict[str, str],
) -> None:
    # As under `make test`, this process's environment points at a Redis of its own: the bench must
    # publish into its private Redis all the same, not here (its publish job once inherited this URL).
    monkeypatch.setenv("CAROUSEL_REDIS_URL", redis_url)
    # As the DAG runs them by default: the Spark stages on a warm stage runner.
    monkeypatch.setenv("CAROUSEL_STAGE_RUNNER", "true")
    for key, value in short_spark_apps.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "batch.json"
    argv = ["bench", "batch", "--users", "400", "--items", "80", "--events", "30000", "--out", str(out)]
    argv += ["--scoring-masters", "local[1]"]
    get_settings.cache_clear()  # the CLI reads the settings once per process
    try:
        assert cli.main(argv) == 0
    finally:
        get_settings.cache_clear()
    report = orjson.loads(out.read_bytes())
    assert report["mode"] == "full" and report["users"] == 400 and report["items"] == 80
    assert abs(report["events"] - 30_000) <= 3_000
    stages = ["inputs", "compute", "validate", "publish"]
    assert list(report["stages"]) == stages and list(report["incremental_stages"]) == stages
    assert report["total_s"] == pytest.approx(sum(report["stages"].values()), abs=0.05)
    assert report["incremental_total_s"] == pytest.approx(
        sum(report["incremental_stages"].values()), abs=0.05
    )
    assert report["incremental_active_users"] == 4 and report["stage_runner"] is True
    # Two 15-minute runs: the figures of the one after the other, and of the first after the full run.
    assert list(report["incremental_first_stages"]) == stages
    assert report["incremental_first_total_s"] == pytest.approx(
        sum(report["incremental_first_stages"].values()), abs=0.05
    )
    # The bench stopped the runner it used.
    assert not any(
        str(environment.get("CAROUSEL_VAR_DIR", "")).startswith(
            tempfile.gettempdir() + "/carousel-bench-batch-"
        )
        for environment in _environments()
    )
    assert report["full_counts"]["user_lists"] > 0 and report["ranker_train_rows"] >= 0
    assert 0 < report["redis_bytes_per_list"] < 10_000
    assert redis_client.dbsize() == 0
    # Every job was sampled, each with its own process tree and the stage runner's it handed its stage to;
    # the reported peak is the biggest job's, a Spark stage's with its JVM.
    jobs = report["jobs_peak_rss_mb"]
    assert list(jobs["full"]) == stages and all(mb > 0 for mb in jobs["full"].values())
    assert report["peak_rss_mb"] == max(mb for run in jobs.values() for mb in run.values())
    run, stage = report["peak_job"].split()
    assert jobs[run][stage] == report["peak_rss_mb"]
    # Which stage peaks is the data's business (on this small store validate can top compute); every
    # stage runs in the runner's process tree, JVM included.
    assert stage in stages and report["peak_rss_mb_spark_jvm"] > 0 and report["peak_rss_mb_python"] > 0
    assert report["seconds_per_million_events"] == pytest.approx(
        report["total_s"] / (report["events"] / 1e6), rel=0.01
    )
    # The driver's own Python is part of a job's memory; Spark's Python workers scored the shoppers.
    assert 0 < report["driver_peak_rss_mb"] <= report["peak_rss_mb"]
    full_scoring = report["scoring"]
    assert full_scoring["cores"] >= 1 and full_scoring["shoppers"] == report["full_counts"]["modelled_users"]
    assert full_scoring["shoppers_per_core_s"] == pytest.approx(
        full_scoring["shoppers"] / full_scoring["seconds"] / full_scoring["cores"], rel=0.01
    )
    assert report["incremental_scoring"]["shoppers"] == 4
    # Rescored on the one master asked for, with one core.
    assert list(report["scoring_by_master"]) == ["local[1]"]
    assert report["scoring_by_master"]["local[1]"]["cores"] == 1
    assert report["scoring_by_master"]["local[1]"]["shoppers"] == full_scoring["shoppers"]


def _environments() -> list[dict[str, str]]:
    """The environments of this user's processes that can still be read."""
    found = []
    for process in psutil.process_iter():
        try:
            found.append(process.environ())
        except psutil.Error:
            continue
    return found


def test_bench_batch_refuses_a_master_it_cannot_name(tmp_path: Path) -> None:
    argv = ["bench", "batch", "--scoring-masters", "local[1];bogus://x", "--out", str(tmp_path / "b.json")]
    assert cli.main(argv) == 1
    assert not (tmp_path / "b.json").exists()


def test_bench_batch_refuses_more_local_cores_than_the_machine_gives_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `local[N]` rescore runs on N CPUs: asking for more is refused before any run, not after."""
    too_many = len(os.sched_getaffinity(0)) + 1
    argv = ["bench", "batch", "--scoring-masters", f"local[{too_many}]", "--out", str(tmp_path / "b.json")]
    assert cli.main(argv) == 1
    assert f"local[{too_many}]" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()

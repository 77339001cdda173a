"""Configuration that reaches Spark is checked when it is read, a Spark task's native kernels use the
task's share of the cores, and carousel's processes run without NumPy's huge pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from carousel import NUMPY_HUGE_PAGES
from configs.settings import Settings
from jobs.ranking.threads import native_threads


@pytest.mark.parametrize(
    "master",
    ["local", "local[*]", "local[4]", "local[2,3]", "spark://10.0.0.5:7077", "spark://a:7077,b:7077", "yarn"],
)
def test_spark_masters_spark_accepts_are_accepted(master: str) -> None:
    assert Settings(spark_master=master).spark_master == master


@pytest.mark.parametrize("master", ["", "local[x]", "spark://nohost", "spark://h:7077; rm -rf /", "bogus"])
def test_a_spark_master_spark_cannot_use_is_refused_by_name(master: str) -> None:
    with pytest.raises(ValidationError, match="spark_master"):
        Settings(spark_master=master)


@pytest.mark.parametrize("memory", ["4g", "512m", "2048"])
def test_driver_memory_in_spark_units(memory: str) -> None:
    assert Settings(spark_driver_memory=memory).spark_driver_memory == memory


def test_driver_memory_with_a_typo_is_refused() -> None:
    with pytest.raises(ValidationError, match="spark_driver_memory"):
        Settings(spark_driver_memory="4 GB")


def test_jvm_options_reach_the_driver_and_the_executors_after_carousels_own() -> None:
    from jobs.entry import spark_submit_command
    from jobs.features.session import DRIVER_JAVA_OPTIONS, java_options

    quick = Settings(spark_java_options=" -XX:TieredStopAtLevel=1 -Xss4m ")
    assert java_options(quick) == (
        f"{DRIVER_JAVA_OPTIONS} -XX:TieredStopAtLevel=1 -Xss4m",
        "-XX:TieredStopAtLevel=1 -Xss4m",
    )
    command = spark_submit_command(quick, "app.py", ["compute"])
    assert command[command.index("--driver-java-options") + 1] == java_options(quick)[0]
    assert "spark.executor.extraJavaOptions=-XX:TieredStopAtLevel=1 -Xss4m" in command
    assert command[-2:] == ["app.py", "compute"]
    # None given: carousel's own for the driver, nothing more for the executors.
    plain = Settings(spark_java_options="")
    assert java_options(plain) == (DRIVER_JAVA_OPTIONS, "")
    assert not any("extraJavaOptions" in word for word in spark_submit_command(plain, "app.py", []))


@pytest.mark.parametrize("options", ["TieredStopAtLevel=1", "-Xss4m rm", "-Xmx1g\n'; echo"])
def test_jvm_options_that_are_not_options_are_refused(options: str) -> None:
    with pytest.raises(ValidationError, match="spark_java_options"):
        Settings(spark_java_options=options)


def test_als_engine_is_implicit_or_spark() -> None:
    assert Settings().als_engine == "implicit" and Settings(als_engine="spark").als_engine == "spark"
    with pytest.raises(ValidationError, match="als_engine"):
        Settings(als_engine="mllib")  # type: ignore[arg-type]


def test_native_threads_follow_the_tasks_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert native_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert native_threads() == 3
    for unusable in ("0", "two", ""):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert native_threads() == (os.cpu_count() or 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert native_threads() == (os.cpu_count() or 1)


@pytest.mark.parametrize("name", ["lake_dir", "var_dir"])
def test_storage_is_a_path_or_a_file_uri(name: str) -> None:
    assert getattr(Settings(**{name: "/data/store/lake"}), name) == Path("/data/store/lake")
    assert getattr(Settings(**{name: "relative/lake"}), name) == Path("relative/lake")
    assert getattr(Settings(**{name: "file:///mnt/nfs/my%20lake"}), name) == Path("/mnt/nfs/my lake")


@pytest.mark.parametrize(
    "uri", ["s3a://bucket/lake", "hdfs://nn:8020/lake", "gs://b/l", "file://host/lake", "  "]
)
def test_storage_a_stage_cannot_reach_as_files_is_refused_by_name(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAROUSEL_LAKE_DIR", uri)
    with pytest.raises(ValidationError, match="CAROUSEL_LAKE_DIR"):
        Settings()


@pytest.mark.parametrize("proxies", ["127.0.0.1", "*", "10.0.0.0/8, 192.168.1.5", "::1,fd00::/8"])
def test_trusted_proxies_uvicorn_can_read_are_accepted(proxies: str) -> None:
    assert Settings(forwarded_allow_ips=proxies).forwarded_allow_ips == proxies


@pytest.mark.parametrize(
    ("proxies", "named"),
    [("10.0.0.1/8", "10.0.0.1/8"), ("lb.internal", "lb.internal"), ("127.0.0.1,*", "*"), ("", "")],
)
def test_trusted_proxies_uvicorn_would_ignore_are_refused_by_name(proxies: str, named: str) -> None:
    """uvicorn skips what it cannot read, which would leave every client with the proxy's address."""
    with pytest.raises(ValidationError, match="forwarded_allow_ips") as refused:
        Settings(forwarded_allow_ips=proxies)
    assert repr(named) in str(refused.value) or not named


@pytest.mark.parametrize("name", ["events_browser_requests_per_minute", "auth_failures_per_minute"])
def test_the_per_address_limits_are_bounded_and_zero_turns_them_off(name: str) -> None:
    assert getattr(Settings(**{name: 0}), name) == 0
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: -1})


def _new_process(**env: str) -> subprocess.CompletedProcess[str]:
    """A fresh process that starts as the `carousel` command does, printing whether NumPy asks for huge
    pages."""
    environment = {k: v for k, v in os.environ.items() if k != NUMPY_HUGE_PAGES} | env
    code = "import carousel.cli, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)


def _numpy_huge_pages_in_a_new_process(**env: str) -> str:
    done = _new_process(**env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_carousel_processes_run_without_numpy_huge_pages_unless_the_environment_says_otherwise() -> None:
    """NumPy reads the variable once, when it is imported: a fresh process shows what the command gets."""
    assert _numpy_huge_pages_in_a_new_process() == "False"
    assert _numpy_huge_pages_in_a_new_process(**{NUMPY_HUGE_PAGES: "1"}) == "True"
    # What carousel starts (spark-submit, the stage runner, local Spark workers) inherits the setting
    # (this process's: "0" unless the developer's environment says otherwise).
    from jobs.entry import spark_submit_env

    assert spark_submit_env()[NUMPY_HUGE_PAGES] == os.environ[NUMPY_HUGE_PAGES] in ("0", "1")


def test_a_huge_pages_setting_numpy_cannot_read_is_refused_by_name() -> None:
    done = _new_process(**{NUMPY_HUGE_PAGES: "yes"})
    assert done.returncode != 0
    assert "NUMPY_MADVISE_HUGEPAGE must be 0 or 1, not 'yes'" in done.stderr

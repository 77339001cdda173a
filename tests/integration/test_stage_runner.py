"""The stage runner (`jobs.stage_server`, `infra.stage_runner`) through `carousel submit`, as the DAG runs
it: stages served warm by one application write the lists a spark-submit writes, a failing stage leaves
the runner serving, other settings get a fresh runner, a runner over its memory bound ends after its
stage, and a client killed mid-stage takes the runner and its jobs down with it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from configs.settings import Settings
from infra.stage_runner import runner_answers, runner_pid_file, stop_runner
from jobs.stage_server import runner_socket

pytestmark = pytest.mark.integration

CAROUSEL = str(Path(sys.executable).parent / "carousel")
INTERVAL_END = "2026-11-01T00:00:00+00:00"


@pytest.fixture
def store(
    settings: Settings, small_store: Callable[..., object], store_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """A small store and the environment `carousel submit` reads its settings from (runner on)."""
    small_store(settings, users=300, seed=3)
    yield {**os.environ, **store_env, "CAROUSEL_STAGE_RUNNER": "true"}
    stop_runner(settings)


def _submit(env: dict[str, str], stage: str, run_id: str, mode: str = "rescore", **changes: str) -> str:
    """`carousel submit` of one stage; its output (stdout and stderr), failing the test when it fails."""
    done = _run(env, stage, run_id, mode, **changes)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def _run(
    env: dict[str, str],
    stage: str,
    run_id: str,
    mode: str,
    interval_end: str = INTERVAL_END,
    **changes: str,
) -> subprocess.CompletedProcess[str]:
    command = [CAROUSEL, "submit", stage, "--run-id", run_id, "--mode", mode, "--interval-end", interval_end]
    return subprocess.run(
        command,
        env={**env, **changes},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )


def _lists(settings: Settings, run_id: str) -> pd.DataFrame:
    lists = pd.read_parquet(settings.runs_dir / run_id / "user_lists.parquet")
    return lists.sort_values(["user_id", "rank"]).reset_index(drop=True)


def _runner_pid(settings: Settings) -> int:
    answer = runner_answers(settings)
    assert answer is not None, "no stage runner answers"
    return int(answer["pong"])


def _ask(path: Path, request: bytes) -> dict[str, object]:
    """The runner's one-line answer to `request`, as sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(request)
        answer: dict[str, object] = json.loads(conn.makefile("rb").readline())
        return answer


def _gone(pid: int, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.5)
    return False


def test_runner_serves_stages_as_spark_submit_would(settings: Settings, store: dict[str, str]) -> None:
    """Training gets its own application; rescores served warm by one runner equal spark-submit's; a
    failed stage leaves the runner serving; other settings get a fresh runner; a runner over its memory
    bound ends after its stage; a client killed mid-stage takes the runner and its Spark jobs down."""
    _submit(store, "compute", "trained", mode="train")
    assert not runner_pid_file(settings.var_dir).exists(), "training went to the runner"
    _submit({**store, "CAROUSEL_STAGE_RUNNER": "false"}, "compute", "plain")
    assert not runner_pid_file(settings.var_dir).exists()

    first = _submit(store, "check_inputs", "warm-1")
    pid = _runner_pid(settings)
    _submit(store, "compute", "warm-1")
    second = _submit(store, "compute", "warm-2")
    assert "stage runner: 1 stages served" in first and "stage runner: 3 stages served" in second
    assert "compute: rescore run with model 1" in second
    assert _runner_pid(settings) == pid
    plain = _lists(settings, "plain")
    assert len(plain) > 0
    pd.testing.assert_frame_equal(_lists(settings, "warm-1"), plain)
    pd.testing.assert_frame_equal(_lists(settings, "warm-2"), plain)

    # A stage that fails reports its error and exit code; the runner stays and serves the next one.
    failed = _run(store, "compute", "early", "rescore", interval_end="2020-01-01T00:00:00+00:00")
    assert failed.returncode == 1 and "holds no events before 2020-01-01" in failed.stdout
    assert _runner_pid(settings) == pid
    # Requests that are not one JSON object with string arguments are refused, and serving goes on.
    answer = runner_answers(settings)
    assert answer is not None
    bad_argv = json.dumps({"fingerprint": answer["fingerprint"], "argv": [1]}).encode() + b"\n"
    for junk in (b"not json\n", b"[1, 2]\n", bad_argv, b"\n"):
        assert "error" in _ask(runner_socket(settings), junk)
    assert _runner_pid(settings) == pid

    # Other settings: a fresh runner. Its memory bound is below what any runner holds, so it ends
    # after the stage and the next stage starts another.
    out = _submit(store, "check_inputs", "bounded", CAROUSEL_STAGE_RUNNER_MAX_RSS_MB="500")
    assert "stage runner: 1 stages served" in out
    assert _gone(pid), "the runner with the old settings kept running"
    bounded = int(runner_pid_file(settings.var_dir).read_text())
    assert _gone(bounded), "the runner over its memory bound kept running"

    # Airflow killing a task: the stage's Spark work ends with it, and the next stage gets a new runner.
    command = [CAROUSEL, "submit", "compute", "--run-id", "killed", "--mode", "rescore"]
    client = subprocess.Popen(
        [*command, "--interval-end", INTERVAL_END],
        env=store,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert client.stdout is not None
    for line in client.stdout:
        if "compute ..." in line:
            break
    # The runner is busy with the stage (it serves one request at a time): its JVM's pid from its file.
    killed = int(runner_pid_file(settings.var_dir).read_text())
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert _gone(killed), "the runner went on with a killed client's stage"
    assert not (settings.runs_dir / "killed" / "manifest.json").exists()
    _submit(store, "check_inputs", "after")
    assert int(runner_pid_file(settings.var_dir).read_text()) not in (bounded, killed)
    assert _runner_pid(settings) != pid
    assert stop_runner(settings) and runner_answers(settings) is None

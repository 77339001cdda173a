"""Start and use the stage runner (`jobs.stage_server`): a warm Spark application per store.

`run_on_runner` sends one stage to the store's runner and prints its progress lines as a `spark-submit`
of the stage would; it starts the runner when none answers (one at a time: a lock in the store's run
folder), and a fresh one when the running one was started with other settings or code. `carousel
submit` calls it for the Spark stages when `CAROUSEL_STAGE_RUNNER` is on; `stop_runner` ends a store's
runner (tests, `carousel infra down`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jobs.stage_server
from configs.settings import Settings
from jobs.entry import spark_submit_command, spark_submit_env
from jobs.stage_server import runner_fingerprint, runner_socket

# A cold runner's JVM, session and first classes take seconds; a machine under load, more.
START_TIMEOUT_S = 180.0


class RunnerUnavailable(RuntimeError):
    """The stage runner could not be started; the message holds its log's tail."""


def run_on_runner(settings: Settings, argv: Sequence[str]) -> int:
    """Run the stage `argv` (`jobs.entry` arguments) on the store's runner; its exit code. Progress
    lines are printed with the seconds since this call, as `jobs.entry` prints them."""
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {message}", flush=True)

    fingerprint = runner_fingerprint(settings)
    for _ in range(3):
        with _connected(settings, fingerprint) as conn:
            conn.sendall(json.dumps({"fingerprint": fingerprint, "argv": list(argv)}).encode() + b"\n")
            for message in _messages(conn):
                if "say" in message:
                    say(str(message["say"]))
                elif "error" in message:
                    print(message["error"], file=sys.stderr, flush=True)
                elif "restart" in message:
                    break
                elif "exit" in message:
                    say(
                        f"stage runner: {message.get('stages_run', 0)} stages served, "
                        f"{message.get('rss_mb', 0):,} MB held"
                    )
                    return int(message["exit"])
            else:
                raise RunnerUnavailable(
                    f"the stage runner closed the connection before the stage ended; see "
                    f"{_run_folder(settings.var_dir) / 'stage-runner.log'}"
                )
        # A runner with other settings or code is on its way out: wait for it, then start a fresh one.
        _wait_gone(runner_socket(settings))
    raise RunnerUnavailable("the stage runner kept answering with other settings or code")


def runner_answers(settings: Settings, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """The answer of the store's runner to a ping (its pid, stages served and fingerprint), if one runs."""
    path = runner_socket(settings)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(path))
            conn.sendall(json.dumps({"ping": True}).encode() + b"\n")
            message = next(_messages(conn), None)
    except OSError:
        return None
    return message if message and "pong" in message else None


def stop_runner(settings: Settings, timeout_s: float = 30.0) -> bool:
    """End the store's runner, if one is running; True when one was stopped."""
    pid_file = _pid_file(settings)
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    runner_socket(settings).unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def _connected(settings: Settings, fingerprint: str) -> Iterator[socket.socket]:
    """A connection to the store's runner, started first when none accepts."""
    path = runner_socket(settings)
    conn = _connect(path)
    if conn is None:
        # One client starts the runner; the others wait for it on the lock, then connect.
        with (_run_folder(settings.var_dir) / "stage-runner.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = _connect(path) or _start(settings, fingerprint, path)
    try:
        yield conn
    finally:
        conn.close()


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _start(settings: Settings, fingerprint: str, path: Path) -> socket.socket:
    """Start the store's runner (in a process group of its own, so an ended task does not take a warm
    runner with it) and connect once it accepts."""
    path.unlink(missing_ok=True)
    command = spark_submit_command(
        settings,
        jobs.stage_server.__file__,
        [
            "--socket",
            str(path),
            "--fingerprint",
            fingerprint,
            "--idle-s",
            str(settings.stage_runner_idle_s),
            "--max-rss-mb",
            str(settings.stage_runner_max_rss_mb),
        ],
    )
    log = _run_folder(settings.var_dir) / "stage-runner.log"
    # The log is the current runner's: a new runner starts it afresh.
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=spark_submit_env(),
            start_new_session=True,
        )
    _pid_file(settings).write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if process.poll() is not None:
            break
        time.sleep(0.2)
    else:
        process.kill()
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise RunnerUnavailable(f"the stage runner did not start (log {log}):\n{tail}")


def _messages(conn: socket.socket) -> Iterator[dict[str, Any]]:
    for line in conn.makefile("rb"):
        yield json.loads(line)


def _wait_gone(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of this process that has exited stays a zombie until reaped.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _run_folder(var_dir: Path) -> Path:
    """The store's runner's files: its log, process id and start lock."""
    folder = var_dir / "run"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def runner_pid_file(var_dir: Path) -> Path:
    """Where the store's runner's process id is kept (the JVM that runs its driver)."""
    return var_dir / "run" / "stage-runner.pid"


def _pid_file(settings: Settings) -> Path:
    return runner_pid_file(settings.var_dir)

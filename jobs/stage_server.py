"""The stage runner: one long-lived Spark application that runs the 15-minute DAG's Spark stages.

A `spark-submit` per stage starts a JVM and a session, then warms Spark's code generation and the JIT
again every 15 minutes: on the 20M-event benchmark store that is about 25 of the 80 seconds of an
incremental run (docs/performance.md). The runner keeps one application warm between runs instead:

    spark-submit ... jobs/stage_server.py --socket PATH --fingerprint F --idle-s N --max-rss-mb M

It listens on a Unix socket that only its user can open (`runner_socket`), runs one stage at a time
(`jobs.stages.run.run_stage`, the same code a `spark-submit` runs) and streams the stage's progress
lines and its outcome back as JSON lines. `infra.stage_runner` starts it when none answers and sends it
the stages; `carousel submit` uses it when `CAROUSEL_STAGE_RUNNER` is on.

What keeps a long-lived application honest:
- **The same settings and code**: every request carries `runner_fingerprint` (the settings, the working
  folder, the Python and Java environment, the project's source files); a runner started with another
  fingerprint answers "restart" and exits, and the client starts a fresh one.
- **Cancellation**: a client that goes away while its stage runs (Airflow killed the task) takes the
  runner down with it, as a killed `spark-submit` would: its jobs stop and nothing half-done stays warm.
- **Bounded memory**: after a stage, the runner drops Spark's caches; when its process tree (the
  driver's Python, the JVM, Spark's Python workers) holds more than `--max-rss-mb`, it exits after
  answering, and the next stage starts a fresh one.
- **No idle cost**: it exits after `--idle-s` seconds without a request.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from configs.settings import Settings

# The packages whose source a runner has loaded: a change to any of them means a new runner.
_SOURCE_PACKAGES = ("carousel", "configs", "jobs", "quality")
# Environment that shapes a stage besides the settings (the interpreters, Spark's and Java's setup).
_ENV_PREFIXES = ("CAROUSEL_", "SPARK_", "PYSPARK_", "JAVA_", "HADOOP_")
# Exit code of a runner whose client went away mid-stage.
CANCELLED_EXIT = 3


def runner_fingerprint(settings: Settings) -> str:
    """What a runner must share with a request to run it: the settings (secrets included, as a digest),
    the working folder relative paths resolve against, the Spark/Java/Python environment and the
    project's source files (size and modification time)."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        for name, value in settings
    }
    root = Path(__file__).resolve().parents[1]
    sources = sorted(
        (str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns)
        for package in _SOURCE_PACKAGES
        for path in (root / package).rglob("*.py")
    )
    environment = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    state = [values, os.getcwd(), sys.executable, environment, sources]
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def runner_socket(settings: Settings) -> Path:
    """The runner's socket for this store (its `var_dir`): in a folder of the temporary directory that
    only this user can enter (a socket path must stay short, which a store's folder may not be)."""
    folder = Path(tempfile.gettempdir()) / f"carousel-runner-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} must belong to this user alone (mode 700)")
    store = hashlib.sha256(str(settings.var_dir.resolve()).encode()).hexdigest()[:16]
    return folder / f"{store}.sock"


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _tree_rss_mb() -> float:
    """Resident memory of this runner's process tree: the JVM that started this driver, and everything
    under it (this Python, Spark's Python workers)."""
    import psutil

    jvm = psutil.Process().parent()
    if jvm is None:
        return 0.0
    total = 0
    for process in [jvm, *jvm.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / 1e6


class StageServer:
    """Serves stage requests on `path` with one warm SparkSession until idle, stale or too large."""

    def __init__(self, settings: Settings, path: Path, fingerprint: str, idle_s: float, max_rss_mb: float):
        self.settings, self.path, self.fingerprint = settings, path, fingerprint
        self.idle_s, self.max_rss_mb = idle_s, max_rss_mb
        self.stages_run = 0

    def serve(self) -> str:
        """Accept requests until a reason to stop; returns that reason."""
        from jobs.features.session import spark_session

        # The session (and the JVM's first classes) before the first request, not during it.
        spark_session(self.settings)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staged = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        staged.unlink(missing_ok=True)
        listener.bind(str(staged))
        os.chmod(staged, 0o600)
        listener.listen(8)
        # Clients find the socket only once it accepts.
        os.replace(staged, self.path)
        inode = self.path.stat().st_ino
        listener.settimeout(self.idle_s)
        try:
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    return f"idle for {self.idle_s:.0f}s"
                with conn:
                    reason = self._handle(conn)
                if reason:
                    return reason
        finally:
            listener.close()
            # Only this runner's socket: a successor may have bound the path since.
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == inode:
                    self.path.unlink()

    def _handle(self, conn: socket.socket) -> str | None:
        """One request; a reason to stop after it, or None."""
        conn.settimeout(None)
        reader = conn.makefile("rb")
        line = reader.readline()
        if not line:
            return None
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            send(conn, {"exit": 2, "error": "a request is one JSON object on one line"})
            return None
        if request.get("ping"):
            send(conn, {"pong": os.getpid(), "stages_run": self.stages_run, "fingerprint": self.fingerprint})
            return None
        if request.get("fingerprint") != self.fingerprint:
            send(conn, {"restart": "the settings, environment or code differ from this runner's"})
            return "a request with other settings or code"
        argv = request.get("argv")
        if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
            send(conn, {"exit": 2, "error": "argv must be a list of strings (jobs/entry.py arguments)"})
            return None
        finished = threading.Event()
        threading.Thread(target=_exit_when_gone, args=(reader, finished), daemon=True).start()
        code = self._run(conn, argv)
        finished.set()
        self.stages_run += 1
        rss = _tree_rss_mb()
        send(conn, {"exit": code, "rss_mb": round(rss), "stages_run": self.stages_run})
        if rss > self.max_rss_mb:
            return f"{rss:,.0f} MB held after the stage, above {self.max_rss_mb:,.0f} MB"
        return None

    def _run(self, conn: socket.socket, argv: Sequence[str]) -> int:
        from jobs.entry import main

        def say(message: str) -> None:
            send(conn, {"say": message})

        try:
            return main(argv, progress=say)
        except SystemExit as exc:  # argparse's refusal of bad arguments
            return int(exc.code) if isinstance(exc.code, int) else 2
        except Exception:
            send(conn, {"error": traceback.format_exc()})
            return 1
        finally:
            _release_spark_memory(self.settings)


def _exit_when_gone(reader: Any, finished: threading.Event) -> None:
    """A client sends nothing after its request: end of stream while the stage runs means it went away
    (Airflow killed the task), and the runner goes too, with the Spark jobs of the stage."""
    with contextlib.suppress(OSError, ValueError):
        reader.read(1)
    if finished.is_set():
        return
    print("stage runner: the client went away mid-stage; exiting", file=sys.stderr, flush=True)
    os._exit(CANCELLED_EXIT)


def _release_spark_memory(settings: Settings) -> None:
    """Drop what a stage left cached, so the next one starts from the same state."""
    from jobs.features.session import spark_session

    spark_session(settings).catalog.clearCache()
    # Broadcasts and other JVM objects the stage's Python objects held are freed once those are collected.
    gc.collect()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/stage_server.py")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--idle-s", required=True, type=float)
    parser.add_argument("--max-rss-mb", required=True, type=float)
    args = parser.parse_args(argv)

    from configs.settings import get_settings

    # The fingerprint is the launching client's (`runner_fingerprint` there): spark-submit adds its own
    # variables to this process's environment, so it would not be computed the same here.
    settings = get_settings()
    started = time.perf_counter()
    server = StageServer(settings, args.socket, args.fingerprint, args.idle_s, args.max_rss_mb)
    reason = server.serve()
    print(
        f"stage runner: exiting after {server.stages_run} stages in {time.perf_counter() - started:.0f}s: "
        f"{reason}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

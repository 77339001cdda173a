"""A Spark standalone cluster on this machine: a master and workers started from the launcher classes
PySpark ships (`spark-class`), for the cluster test and for trying the DAGs on a real cluster without
one. Point the jobs at it with `CAROUSEL_SPARK_MASTER=<master_url>`.

    python -m infra.spark_cluster --workers 2 --cores 1    # prints the master URL; Ctrl-C stops it

Each daemon runs in the foreground of its own process (no pid files, no ssh), logs into `folder`, and
is stopped with `StandaloneCluster.stop`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from infra.redis_server import free_port

SPARK_HOME = Path(pyspark.__file__).resolve().parent
HOST = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster did not come up; the message holds the tail of the daemons' logs."""


@dataclass
class StandaloneCluster:
    master_url: str
    ui_url: str
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def alive_workers(self) -> int:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as reply:
            state = json.loads(reply.read())
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def worker_folders(self) -> list[Path]:
        """Each worker's work folder: one `app-*` folder per application that ran executors there."""
        return sorted(self.folder.glob("worker-*/work"))

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs_tail(self, chars: int = 4_000) -> str:
        return "\n".join(
            log.read_text(errors="replace")[-chars:] for log in sorted(self.folder.glob("*.log"))
        )


def start_cluster(
    folder: Path, *, workers: int = 2, cores: int = 1, memory: str = "2g", timeout_s: float = 120.0
) -> StandaloneCluster:
    """Start a master and `workers` workers of `cores` cores and `memory` each on 127.0.0.1; returns
    once every worker has registered with the master."""
    folder.mkdir(parents=True, exist_ok=True)
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": HOST, "SPARK_LOG_DIR": str(folder)}
    cluster = StandaloneCluster(f"spark://{HOST}:{port}", f"http://{HOST}:{ui_port}", folder)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")

    def launch(name: str, *args: str) -> None:
        log = (folder / f"{name}.log").open("wb")
        cluster.processes.append(
            subprocess.Popen([spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    try:
        launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", HOST, "--port", str(port), "--webui-port", str(ui_port)),
        )
        for n in range(workers):
            work = folder / f"worker-{n}" / "work"
            work.mkdir(parents=True, exist_ok=True)
            launch(
                f"worker-{n}",
                "org.apache.spark.deploy.worker.Worker",
                *("--host", HOST, "--cores", str(cores), "--memory", memory),
                *("--webui-port", str(free_port()), "--work-dir", str(work), cluster.master_url),
            )
        _wait_for_workers(cluster, workers, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_workers(cluster: StandaloneCluster, workers: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in cluster.processes):
            raise ClusterError(f"a Spark daemon exited while starting:\n{cluster.logs_tail()}")
        try:
            if cluster.alive_workers() >= workers:
                return
        except (OSError, ValueError):
            # The master's web UI is not up yet, or is up but still answers /json/ with its HTML page
            # (seen once in CI, right after the daemons started): both pass within seconds.
            pass
        time.sleep(0.5)
    raise ClusterError(f"{workers} workers did not register within {timeout_s:.0f}s:\n{cluster.logs_tail()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.spark_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="2g", help="memory per worker")
    parser.add_argument("--folder", type=Path, default=Path("var") / "spark-cluster")
    args = parser.parse_args(argv)
    cluster = start_cluster(args.folder, workers=args.workers, cores=args.cores, memory=args.memory)
    print(f"master {cluster.master_url} (web UI {cluster.ui_url}); logs in {args.folder}", flush=True)
    try:
        while all(process.poll() is None for process in cluster.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

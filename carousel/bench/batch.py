"""`carousel bench batch`: the pipeline at a store's size, measured end to end on this machine.

It generates the synthetic store (`--users`, `--items`, about `--events` events over `DAYS` days, or
one of the `PRESETS`), imports it into a private lake, starts a private Redis, then runs the full
pipeline and one 15-minute incremental run with 1% of the shoppers active as the DAG runs them: one
`carousel submit STAGE` process per stage (input gate, compute, output gate, publish), timing every
stage. Each job's peak memory is that of its own process tree (its Python and, for the Spark stages,
the JVM), sampled while it runs, so the goal "no job above 8 GB" is measured per job and the
generator's heap in this process counts in none of them. Afterwards it measures the Redis memory of a
sample of stored lists. Writes the contract's JSON and prints a table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import redis

from carousel.cache.keys import USER_PREFIX
from carousel.lake import Lake
from configs.settings import Settings
from infra.redis_server import free_port, start_server, stop_server
from infra.stage_runner import runner_pid_file, stop_runner
from jobs.ingest.synthetic import StoreSpec, generate_store
from jobs.publishing.loader import loader_env
from jobs.stages.run import run_dir

Progress = Callable[[str], None]
END = pd.Timestamp("2026-11-01T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
# 15-minute runs after the full run; the figures of the last are the steady state's.
INCREMENTAL_RUNS = 2


class PeakMemory:
    """Samples the resident memory of `root` (a job's process) and all its descendants every `every_s`
    seconds: the peak of their sum, and the peaks of the Python processes, of the JVMs (Spark's driver,
    and in local mode its executor) and of the driver's own Python (the Python processes but Spark's
    Python workers, which score on the executors) on their own. With `runner_pid_file`, the stage
    runner's process tree counts too (`infra.stage_runner`: the job hands its stage to that long-lived
    application, which is not the job's child and holds what it kept from earlier stages)."""

    def __init__(
        self, root: psutil.Process, every_s: float = 0.5, runner_pid_file: Path | None = None
    ) -> None:
        self.peak_bytes = 0
        self.peak_python_bytes = 0
        self.peak_jvm_bytes = 0
        self.peak_driver_bytes = 0
        self._root = root
        self._every_s = every_s
        self._runner_pid_file = runner_pid_file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            python = jvm = workers = 0
            try:
                tree = {p.pid: p for p in [self._root, *self._root.children(recursive=True)]}
            except psutil.Error:
                return
            tree.update({p.pid: p for p in self._runner_tree()})
            for process in tree.values():
                try:
                    rss = process.memory_info().rss
                    is_jvm = process.name().startswith("java")
                    is_worker = not is_jvm and "pyspark.daemon" in process.cmdline()
                except psutil.Error:
                    continue
                if is_jvm:
                    jvm += rss
                else:
                    python += rss
                    workers += rss if is_worker else 0
            self.peak_bytes = max(self.peak_bytes, python + jvm)
            self.peak_python_bytes = max(self.peak_python_bytes, python)
            self.peak_jvm_bytes = max(self.peak_jvm_bytes, jvm)
            self.peak_driver_bytes = max(self.peak_driver_bytes, python - workers)
            self._stop.wait(self._every_s)

    def _runner_tree(self) -> list[psutil.Process]:
        try:
            runner = psutil.Process(int(self._runner_pid_file.read_text())) if self._runner_pid_file else None
            return [runner, *runner.children(recursive=True)] if runner else []
        except (OSError, ValueError, psutil.Error):
            return []

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# The refresh stages the benchmark times, in order, and their names in the report. The refresh DAG also
# drains the API's event stream (empty here) and builds the audiences; the goals are for the list pipeline.
STAGES = {"check_inputs": "inputs", "compute": "compute", "validate": "validate", "publish": "publish"}


@dataclass(frozen=True)
class Job:
    """One stage run as its own process: wall time (process start included) and peak memory."""

    stage: str
    seconds: float
    peak_rss_mb: float
    peak_rss_mb_python: float
    peak_rss_mb_spark_jvm: float
    peak_rss_mb_driver: float


def run_job(
    stage: str,
    *,
    run_id: str,
    mode: str,
    interval_end: pd.Timestamp,
    interval_start: pd.Timestamp | None,
    env: dict[str, str],
    log_dir: Path,
    progress: Progress,
    cpus: int | None = None,
) -> Job:
    """`carousel submit STAGE` as the DAG's task runs it; raises with the log's tail when it fails.
    With `cpus`, the job and every process it starts (the JVM, Spark's Python workers) run on that many
    of this process's CPUs only."""
    command = [
        str(Path(sys.executable).parent / "carousel"),
        "submit",
        stage,
        "--run-id",
        run_id,
        "--mode",
        mode,
        "--interval-end",
        interval_end.isoformat(),
    ]
    if interval_start is not None:
        command += ["--interval-start", interval_start.isoformat()]
    if cpus is not None:
        command = [*on_cpus(cpus), *command]
    log = log_dir / f"{run_id}.{stage}.log"
    # The loader runs as the DAG's publish task does (see `jobs.publishing.loader.loader_env`).
    job_env = loader_env(env) if stage == "publish" else env
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=job_env,
            text=True,
            errors="replace",
        )
        assert process.stdout is not None
        runner = runner_pid_file(Path(env["CAROUSEL_VAR_DIR"])) if "CAROUSEL_VAR_DIR" in env else None
        with PeakMemory(psutil.Process(process.pid), runner_pid_file=runner) as memory:
            # Everything goes to the job's log; the stage's own progress lines are shown as well.
            for line in process.stdout:
                out.write(line)
                if f"  {stage}: " in line:
                    progress(f"  {run_id} {line.strip()}")
            code = process.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{stage} of {run_id} failed (exit {code}):\n" + "\n".join(tail))
    return Job(
        stage=STAGES[stage],
        seconds=seconds,
        peak_rss_mb=memory.peak_bytes / 1e6,
        peak_rss_mb_python=memory.peak_python_bytes / 1e6,
        peak_rss_mb_spark_jvm=memory.peak_jvm_bytes / 1e6,
        peak_rss_mb_driver=memory.peak_driver_bytes / 1e6,
    )


def on_cpus(count: int) -> list[str]:
    """The `taskset` prefix that runs a command and its children on the first `count` of this process's
    CPUs (the affinity is inherited, so the JVM and Spark's Python workers stay on them too)."""
    allowed = sorted(os.sched_getaffinity(0))
    if count > len(allowed):
        raise ValueError(f"{count} CPUs asked for, {len(allowed)} available")
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset (util-linux) is needed to run a job on a given number of CPUs")
    return [taskset, "--cpu-list", ",".join(str(cpu) for cpu in allowed[:count])]


def local_cores(master: str) -> int | None:
    """The task slots of a `local[N]` (or `local`) master; None for `local[*]` and cluster masters. A
    rescore on `local[1]` is measured on one CPU, JVM and Python workers included: its rate is one
    core's."""
    if master == "local":
        return 1
    match = re.fullmatch(r"local\[(\d+)\]", master)
    return int(match.group(1)) if match else None


def run_pipeline(
    *,
    run_id: str,
    mode: str,
    interval_end: pd.Timestamp,
    interval_start: pd.Timestamp | None = None,
    env: dict[str, str],
    log_dir: Path,
    progress: Progress,
) -> list[Job]:
    """Every stage of one run (`STAGES`, in the DAG's order) as its own job, each timed and sampled on
    its own; the first job that fails stops the run with its log's tail."""
    jobs = []
    for stage in STAGES:
        job = run_job(
            stage,
            run_id=run_id,
            mode=mode,
            interval_end=interval_end,
            interval_start=interval_start,
            env=env,
            log_dir=log_dir,
            progress=progress,
        )
        progress(
            f"{run_id} {job.stage}: {job.seconds:.1f}s, peak {job.peak_rss_mb:,.0f} MB "
            f"(Python {job.peak_rss_mb_python:,.0f} of which the driver's {job.peak_rss_mb_driver:,.0f}, "
            f"JVM {job.peak_rss_mb_spark_jvm:,.0f})"
        )
        jobs.append(job)
    return jobs


# The period of every benchmark store: long enough for the ranker's two 21-day label windows and the
# 90-day popularity window, as in production and in the evaluation's synthetic store. A shorter period
# would leave the training windows empty and the benchmark would skip the ranker's training.
DAYS = 90


@dataclass(frozen=True)
class Preset:
    users: int
    items: int
    events: int


# Store sizes of `carousel bench batch --preset`; explicit --users/--items/--events override them.
PRESETS: dict[str, Preset] = {
    "small": Preset(users=20_000, items=2_000, events=1_000_000),
    "medium": Preset(users=200_000, items=20_000, events=5_000_000),
    "large": Preset(users=1_000_000, items=100_000, events=20_000_000),
}


def store_size(preset: str, users: int | None, items: int | None, events: int | None) -> Preset:
    """The preset's size with every figure given explicitly (not None) taking its place."""
    base = PRESETS[preset]
    return Preset(
        users=base.users if users is None else users,
        items=base.items if items is None else items,
        events=base.events if events is None else events,
    )


def store_spec(users: int, items: int, events: int) -> StoreSpec:
    """The store with `users` shoppers, `items` items and about `events` events over `DAYS` days: the
    generator makes about users x events_per_user events whatever the period (within 1%)."""
    return StoreSpec(users=users, items=items, days=DAYS, seed=5, end=END, events_per_user=events / users)


def redis_bytes_per_list(client: redis.Redis, sample: int = 500) -> float:
    """Mean MEMORY USAGE of stored shopper hashes (one list each after a full publish)."""
    sizes = []
    for key in client.scan_iter(match=USER_PREFIX + "*", count=1_000):
        sizes.append(int(client.memory_usage(key, samples=0) or 0))
        if len(sizes) >= sample:
            break
    return float(np.mean(sizes)) if sizes else 0.0


def bench_batch(
    *,
    users: int,
    items: int,
    events: int,
    settings: Settings,
    progress: Progress,
    scoring_masters: Sequence[str] = (),
) -> dict[str, Any]:
    """The full pipeline and one incremental run on a generated store; with `scoring_masters`, every
    shopper is then rescored with the full run's model on each of those Spark masters in turn
    (`local[1]`, `local[2]`, `spark://...`), for the scoring rate per core."""
    started = time.perf_counter()
    store = generate_store(store_spec(users, items, events))
    progress(
        f"generated {len(store.events):,} events over {DAYS} days in {time.perf_counter() - started:.1f}s"
    )
    with tempfile.TemporaryDirectory(prefix="carousel-bench-batch-") as tmp:
        root = Path(tmp)
        redis_url = start_server(root / "redis", free_port())
        try:
            run_settings = settings.model_copy(
                update={"redis_url": redis_url, "var_dir": root / "var", "lake_dir": root / "var" / "lake"}
            )
            env = {
                **os.environ,
                "CAROUSEL_REDIS_URL": redis_url,
                "CAROUSEL_VAR_DIR": str(run_settings.var_dir),
                "CAROUSEL_LAKE_DIR": str(run_settings.lake_dir),
                # The jobs run as the report says they ran.
                "CAROUSEL_STAGE_RUNNER": str(settings.stage_runner).lower(),
            }
            lake = Lake(run_settings.lake_dir)
            lake.upsert_items(store.items, source="bench items")
            lake.upsert_users(store.users, source="bench users")
            lake.append_events(store.events, now=END, source="bench events")
            n_events = int(len(store.events))
            shoppers, catalog = store.users, store.items
            # The jobs run in processes of their own; the generated events are not needed here again.
            del store
            full = run_pipeline(
                run_id="bench-full", mode="full", interval_end=END, env=env, log_dir=root, progress=progress
            )
            full_total = sum(job.seconds for job in full)
            progress(f"full pipeline: {full_total:.1f}s")
            consenting = shoppers.loc[shoppers["consent_personalization"], "user_id"].to_numpy()
            # Two consecutive 15-minute runs, 1% of the shoppers active in each: the first follows the
            # full run, the second follows another 15-minute run, as all but one a day do in the DAG
            # (with the stage runner on, its application is warm from the run before).
            increments = []
            for n in range(INCREMENTAL_RUNS):
                start = END + n * INTERVAL
                active = np.random.default_rng(2 + n).choice(
                    consenting, size=max(1, len(shoppers) // 100), replace=False
                )
                late = _activity(active, catalog["item_id"].to_numpy(), start)
                lake.append_events(late, now=start + INTERVAL, source="bench late events")
                run_id = f"bench-incremental-{n + 1}"
                jobs = run_pipeline(
                    run_id=run_id,
                    mode="incremental",
                    interval_start=start,
                    interval_end=start + INTERVAL,
                    env=env,
                    log_dir=root,
                    progress=progress,
                )
                progress(
                    f"incremental run {n + 1} ({len(active):,} active shoppers): "
                    f"{sum(job.seconds for job in jobs):.1f}s"
                )
                increments.append((run_id, jobs))
            first, (last_run_id, incremental) = increments[0][1], increments[-1]
            incremental_total = sum(job.seconds for job in incremental)
            per_list = redis_bytes_per_list(redis.Redis.from_url(redis_url))
            # What the full run trained, so a store too small to train the ranker cannot pass unnoticed.
            full_manifest = json.loads((run_dir(run_settings, "bench-full") / "manifest.json").read_text())
            incremental_manifest = json.loads(
                (run_dir(run_settings, last_run_id) / "manifest.json").read_text()
            )
            by_master = {}
            for n, master in enumerate(scoring_masters):
                run_id = f"bench-scoring-{n}"
                run_job(
                    "compute",
                    run_id=run_id,
                    mode="rescore",
                    interval_end=END,
                    interval_start=None,
                    # An application of its own on `master`, held to its CPUs, not the warm runner.
                    env={**env, "CAROUSEL_SPARK_MASTER": master, "CAROUSEL_STAGE_RUNNER": "false"},
                    log_dir=root,
                    progress=progress,
                    cpus=local_cores(master),
                )
                figures = json.loads((run_dir(run_settings, run_id) / "manifest.json").read_text())["scoring"]
                by_master[master] = _scoring(figures)
                progress(f"scoring on {master}: {by_master[master]}")
        finally:
            stop_runner(run_settings)
            stop_server(redis_url)
    incremental_jobs = [job for _, jobs in increments for job in jobs]
    biggest = max([*full, *incremental_jobs], key=lambda job: job.peak_rss_mb)
    driver = max([*full, *incremental_jobs], key=lambda job: job.peak_rss_mb_driver)
    return {
        "events": n_events,
        "events_requested": int(events),
        "days": DAYS,
        "users": int(len(shoppers)),
        "items": int(len(catalog)),
        "mode": "full",
        "stages": {job.stage: round(job.seconds, 2) for job in full},
        "total_s": round(full_total, 2),
        # The 15-minute run after another one (the DAG's usual case), and the first after the full run.
        "incremental_total_s": round(incremental_total, 2),
        "incremental_stages": {job.stage: round(job.seconds, 2) for job in incremental},
        "incremental_first_total_s": round(sum(job.seconds for job in first), 2),
        "incremental_first_stages": {job.stage: round(job.seconds, 2) for job in first},
        "stage_runner": settings.stage_runner,
        "incremental_active_users": int(len(active)),
        "redis_bytes_per_list": round(per_list, 1),
        "ranker": full_manifest["model"]["ranker"],
        "ranker_train_rows": int(full_manifest["model"]["ranker_train_rows"]),
        # The model's out-of-sample figures on its newest label window (a sampled fit shows here).
        "model_evaluation": full_manifest["model"]["evaluation"],
        "full_counts": {k: int(v) for k, v in full_manifest["counts"].items()},
        "list_length_stored": settings.list_length + settings.list_overflow,
        # The biggest job's peak (each stage is a job of its own, as in the DAG), then every job's.
        "peak_rss_mb": round(biggest.peak_rss_mb, 1),
        "peak_rss_mb_python": round(biggest.peak_rss_mb_python, 1),
        "peak_rss_mb_spark_jvm": round(biggest.peak_rss_mb_spark_jvm, 1),
        "peak_job": f"{'incremental' if any(job is biggest for job in incremental_jobs) else 'full'} {biggest.stage}",
        "jobs_peak_rss_mb": {
            "full": {job.stage: round(job.peak_rss_mb, 1) for job in full},
            "incremental": {
                job.stage: round(max(j.peak_rss_mb for j in incremental_jobs if j.stage == job.stage), 1)
                for job in incremental
            },
        },
        "seconds_per_million_events": round(full_total / max(1e-9, n_events / 1e6), 2),
        # The driver's own Python (Spark's Python workers, which score, and the JVMs not counted).
        "driver_peak_rss_mb": round(driver.peak_rss_mb_driver, 1),
        "driver_peak_job": f"{'incremental' if any(job is driver for job in incremental_jobs) else 'full'} {driver.stage}",
        # Scoring every shopper in the full run, and rescoring them on each of `scoring_masters`.
        "scoring": _scoring(full_manifest["scoring"]),
        "incremental_scoring": _scoring(incremental_manifest["scoring"]),
        "scoring_by_master": by_master,
    }


def _scoring(figures: dict[str, Any]) -> dict[str, Any]:
    """A run's scoring figures (`jobs.stages.manifest.ScoringFigures`) with its rate per core."""
    rate = figures["shoppers"] / max(figures["seconds"], 1e-9)
    return {
        "cores": int(figures["cores"]),
        "shoppers": int(figures["shoppers"]),
        "seconds": float(figures["seconds"]),
        "shoppers_per_s": round(rate, 1),
        "shoppers_per_core_s": round(rate / max(1, int(figures["cores"])), 1),
    }


def _activity(users: np.ndarray, items: np.ndarray, start: pd.Timestamp) -> pd.DataFrame:
    """Four events each (view, view, add to cart, purchase) for `users` in the 15 minutes from `start`."""
    rng = np.random.default_rng(4)
    rows = []
    for n, user in enumerate(users):
        for k, kind in enumerate(("view", "view", "add_to_cart", "purchase")):
            rows.append(
                {
                    "user_id": user,
                    "session_id": f"bench-{user}",
                    "item_id": items[rng.integers(len(items))],
                    "event_type": kind,
                    "ts": start + pd.Timedelta(minutes=1 + n % 13, seconds=10 * k),
                    "quantity": 1,
                    "price": 9.0,
                    "country": "Germany",
                    "device": "mobile",
                    "referrer": "direct",
                }
            )
    return pd.DataFrame(rows)

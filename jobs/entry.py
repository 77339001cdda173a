"""The Spark application entry point: one pipeline stage per `spark-submit`.

    spark-submit --master <CAROUSEL_SPARK_MASTER> jobs/entry.py STAGE --run-id ID --interval-end ISO \
        [--interval-start ISO] [--mode auto|full|rescore|incremental|train]

`carousel submit STAGE ...` builds that command from the settings (and runs the stages that need no
Spark in its own process); the Airflow DAGs run it, so the same DAGs work on `local[*]` and on a
cluster. Stages hand over through the run's folder, so each submit is independent and can be retried
alone. The stages: `jobs.stages`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from jobs.stages import MODES, STAGES

if TYPE_CHECKING:
    from configs.settings import Settings


def spark_submit_command(settings: Settings, app: str, app_args: Sequence[str]) -> list[str]:
    """`spark-submit` of `app` (this file, or the stage runner) on the settings' master, with this
    project's Python on the driver and the executors (its venv has every dependency)."""
    from pathlib import Path

    from jobs.features.session import java_options

    driver_options, executor_options = java_options(settings)
    spark_submit = Path(sys.executable).parent / "spark-submit"
    executor_conf = (
        ["--conf", f"spark.executor.extraJavaOptions={executor_options}"] if executor_options else []
    )
    return [
        str(spark_submit) if spark_submit.exists() else "spark-submit",
        "--master",
        settings.spark_master,
        "--driver-memory",
        settings.spark_driver_memory,
        # The driver JVM starts before the job's session is built, so its options are given here.
        "--driver-java-options",
        driver_options,
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",
        *executor_conf,
        app,
        *app_args,
    ]


def spark_submit_env() -> dict[str, str]:
    """The environment a `spark_submit_command` runs in: this project's Python on driver and executors."""
    import os

    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def main(argv: Sequence[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    """Run one stage; its progress lines go to `progress` (default: printed with the time since start)."""
    parser = argparse.ArgumentParser(prog="jobs/entry.py")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--interval-end", required=True, type=datetime.fromisoformat)
    parser.add_argument("--interval-start", type=datetime.fromisoformat)
    parser.add_argument("--mode", choices=MODES, default="full")
    args = parser.parse_args(argv)

    from configs.settings import get_settings
    from jobs.stages.run import StageRun, run_stage

    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {message}", flush=True)

    job = StageRun(
        get_settings(),
        run_id=args.run_id,
        interval_end=args.interval_end,
        interval_start=args.interval_start,
        mode=args.mode,
        progress=progress or say,
    )
    run_stage(args.stage, job)
    return 0


if __name__ == "__main__":
    sys.exit(main())

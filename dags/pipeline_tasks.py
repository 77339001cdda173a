"""What both carousel DAGs share: default task arguments and one task per pipeline stage.

A stage task runs `carousel submit STAGE` from the project folder with the run's id and data interval;
`carousel submit` spark-submits the Spark stages (check_inputs, compute, train, audiences) to
`CAROUSEL_SPARK_MASTER`, so the same DAGs run on `local[*]` or a cluster. This module defines no DAG itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator

# The scheduler runs from the project's environment, so the CLI sits next to its interpreter; stages run
# from the project folder, where relative settings such as var/lake point.
CAROUSEL = str(Path(sys.executable).parent / "carousel")
PROJECT_DIR = str(Path(__file__).resolve().parents[1])


def default_args(execution_timeout: timedelta) -> dict[str, Any]:
    return {
        "owner": "carousel",
        # One-shot runs (`make demo`, tests) set CAROUSEL_DAG_RETRIES=0 so a failure ends the run at once.
        "retries": int(os.environ.get("CAROUSEL_DAG_RETRIES", "2")),
        "retry_delay": timedelta(minutes=1),
        "execution_timeout": execution_timeout,
    }


def stage_tasks(stages: Sequence[str], *, mode: str) -> list[BashOperator]:
    """One task per stage, chained in order, each told the run's data interval (nothing reads a clock)."""
    tasks: list[BashOperator] = []
    for stage in stages:
        task = BashOperator(
            task_id=stage,
            bash_command=(
                f"{CAROUSEL} submit {stage} --mode {mode} --run-id '{{{{ run_id }}}}' "
                "--interval-start '{{ data_interval_start.isoformat() }}' "
                "--interval-end '{{ data_interval_end.isoformat() }}'"
            ),
            # The loader often shares a host with the API: NumPy's huge pages off for it (see
            # `jobs.publishing.loader.LOADER_ENV`).
            env={"NUMPY_MADVISE_HUGEPAGE": "0"} if stage == "publish" else None,
            append_env=True,
            cwd=PROJECT_DIR,
        )
        if tasks:
            tasks[-1] >> task
        tasks.append(task)
    return tasks

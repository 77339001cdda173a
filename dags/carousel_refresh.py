"""DAG `carousel_refresh`: every 15 minutes, check inputs -> compute -> validate -> publish the lists.

This file only wires tasks. Each task is one `spark-submit` of a pipeline stage on
`CAROUSEL_SPARK_MASTER` (through `carousel submit`, which reads the settings), with the run's id and
data interval end; the stages hand over through the run's folder, so a retried task redoes only its own
stage and the same DAG runs on `local[*]` or on a cluster.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronDataIntervalTimetable

# The scheduler runs from the project's environment, so the CLI sits next to its interpreter; stages run
# from the project folder, where relative settings such as var/lake point.
CAROUSEL = str(Path(sys.executable).parent / "carousel")
PROJECT_DIR = str(Path(__file__).resolve().parents[1])

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "carousel",
    # One-shot runs (`make demo`, tests) set CAROUSEL_DAG_RETRIES=0 so a failure ends the run at once.
    "retries": int(os.environ.get("CAROUSEL_DAG_RETRIES", "2")),
    "retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(minutes=12),
}

STAGES = ("check_inputs", "compute", "validate", "publish")


with DAG(
    dag_id="carousel_refresh",
    schedule=CronDataIntervalTimetable("*/15 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=14),
    default_args=DEFAULT_ARGS,
    tags=["carousel"],
    doc_md=__doc__,
) as dag:
    previous = None
    for stage in STAGES:
        submit = BashOperator(
            task_id=stage,
            bash_command=(
                f"{CAROUSEL} submit {stage} --run-id '{{{{ run_id }}}}' "
                "--interval-end '{{ data_interval_end.isoformat() }}'"
            ),
            append_env=True,
            cwd=PROJECT_DIR,
        )
        if previous is not None:
            previous >> submit
        previous = submit

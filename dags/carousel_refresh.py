"""DAG `carousel_refresh`: every 15 minutes, check inputs -> compute -> validate -> publish the lists.

This file only wires tasks: each task imports its job function from `jobs/` when it runs and passes the
run's id and data interval end; no I/O or heavy import happens when the scheduler parses this file.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "carousel",
    # One-shot runs (`make demo`, tests) set CAROUSEL_DAG_RETRIES=0 so a failure ends the run at once.
    "retries": int(os.environ.get("CAROUSEL_DAG_RETRIES", "2")),
    "retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(minutes=12),
}


@dag(
    dag_id="carousel_refresh",
    schedule=CronDataIntervalTimetable("*/15 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=14),
    default_args=DEFAULT_ARGS,
    tags=["carousel"],
    doc_md=__doc__,
)
def carousel_refresh() -> None:
    @task
    def check_inputs(run_id: str | None = None, data_interval_end: Any = None) -> dict[str, Any]:
        from configs.settings import get_settings
        from jobs.input_check import check_inputs as run_input_gate

        verdict = run_input_gate(get_settings(), run_id=str(run_id), interval_end=data_interval_end)
        return {"rows": verdict["rows"]}

    @task
    def compute(
        checked: dict[str, Any], run_id: str | None = None, data_interval_end: Any = None
    ) -> dict[str, Any]:
        from configs.settings import get_settings
        from jobs.pipeline import compute_lists

        manifest = compute_lists(get_settings(), run_id=str(run_id), interval_end=data_interval_end)
        return {"run_id": manifest["run_id"], "version": manifest["version"], "counts": manifest["counts"]}

    @task
    def validate(computed: dict[str, Any]) -> dict[str, Any]:
        from configs.settings import get_settings
        from jobs.pipeline import validate_lists

        verdict = validate_lists(get_settings(), run_id=computed["run_id"])
        return {**computed, "docs": verdict["docs_index"]}

    @task
    def publish(validated: dict[str, Any]) -> dict[str, Any]:
        from configs.settings import get_settings
        from jobs.pipeline import publish_lists

        result = publish_lists(get_settings(), run_id=validated["run_id"])
        return {"version": result.version, "user_lists": result.user_lists}

    # TaskFlow passes XComArgs at parse time; each task receives the plain dict when it runs.
    publish(validate(compute(check_inputs())))  # type: ignore[arg-type]


carousel_refresh()

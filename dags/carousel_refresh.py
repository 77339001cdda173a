"""DAG `carousel_refresh`: every 15 minutes, drain events -> check inputs -> compute -> validate ->
publish -> audiences.

This file only wires tasks (see `pipeline_tasks.py`). `drain_events` first moves the events the API
accepted up to the interval end from Redis into the lake (exactly once, `jobs.ingest.drain`). The compute
stage runs in `auto` mode: with the newest model from `carousel_retrain` it rescores only the shoppers
active in the run's data interval (folding them into ALS with the item factors fixed) and publishes them
as a delta on top of the live version; after a retrain (a newer model than the live version's) it
rescores every shopper once; with no model yet it trains one. Stages hand over through the run's folder,
so a retried task redoes only its own stage, and a rerun of an interval publishes identical content.
`audiences` then refreshes the marketing audiences from the lake (`jobs.marketing.audiences`). The stage
list is `jobs.stages.REFRESH`, which `carousel refresh` runs too.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from dags.pipeline_tasks import default_args, stage_tasks
from jobs.stages import REFRESH

with DAG(
    dag_id="carousel_refresh",
    schedule=CronDataIntervalTimetable("*/15 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=14),
    default_args=default_args(execution_timeout=timedelta(minutes=12)),
    tags=["carousel"],
    doc_md=__doc__,
) as dag:
    stage_tasks(REFRESH, mode="auto")

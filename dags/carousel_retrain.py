"""DAG `carousel_retrain`: every night, check inputs -> train a new numbered model.

Training fits ALS on every shopper, the co-visitation similarity and the LightGBM ranker on the data up
to the run's interval end, measures the ranker out of sample (trained on the older label windows,
scored on the newest) and stores it all as `var/models/<NNNN>/` with its training windows and figures.
It publishes nothing itself: the next `carousel_refresh` run sees a model newer than the live version's
and rescores every shopper with it, inside its usual validate-and-publish path.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from dags.pipeline_tasks import default_args, stage_tasks
from jobs.stages import RETRAIN

with DAG(
    dag_id="carousel_retrain",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=3),
    default_args=default_args(execution_timeout=timedelta(hours=2)),
    tags=["carousel"],
    doc_md=__doc__,
) as dag:
    stage_tasks(RETRAIN, mode="train")

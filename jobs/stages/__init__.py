"""The pipeline's stages: one module per stage, each a thin extract -> transform -> load over the
packages that do the work (`jobs.ingest`, `jobs.features`, `jobs.ranking`, `quality`,
`jobs.publishing`, `jobs.marketing`).

This list drives everything that runs stages: the Airflow DAGs (`dags/`), the Spark application entry
(`jobs/entry.py`, what `carousel submit STAGE` runs) and `carousel refresh` / `carousel retrain`
(`jobs.stages.run.run_stages`). It is cheap to import (the DAG files read it): no stage module is loaded
until a stage runs.
"""

from __future__ import annotations

# Every stage, in the order a run would take them. `train` is the compute stage in train mode.
STAGES = (
    "drain_events",
    "compact_erased",
    "check_inputs",
    "compute",
    "train",
    "validate",
    "publish",
    "audiences",
)
# The stages that run Spark jobs (spark-submitted to CAROUSEL_SPARK_MASTER); the others need no Spark.
SPARK_STAGES = frozenset({"check_inputs", "compute", "train", "audiences"})
# `carousel_refresh` (every 15 minutes) and `carousel refresh`.
REFRESH = ("drain_events", "check_inputs", "compute", "validate", "publish", "audiences")
# `carousel_retrain` (nightly) and `carousel retrain`: erased shoppers taken out of the data files, then a
# new numbered model, no lists.
RETRAIN = ("compact_erased", "check_inputs", "train")

# Compute modes. train: fit and store a numbered model, no lists. full: train, then score every shopper.
# rescore: every shopper with the newest stored model. incremental: the shoppers active in the interval
# with the newest stored model, published on top of the live version. auto: what the 15-minute DAG runs
# (`jobs.stages.compute.resolve_mode`).
MODES = ("auto", "full", "rescore", "incremental", "train")

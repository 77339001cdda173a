"""The SparkSession for carousel's jobs: master from `CAROUSEL_SPARK_MASTER` (default `local[*]`).

Only the stages (`jobs.stages`) and the evaluation's ranker adapter and published lists
(`jobs.evaluation.ranker`, `jobs.evaluation.published`) call `spark_session`; transforms receive
DataFrames.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from carousel import NUMPY_HUGE_PAGES
from configs.settings import Settings

# The driver JVM's options. A pipeline job's JVM mostly waits while Python trains and scores (minutes on a
# large store), yet G1 keeps every heap page it ever touched: collecting when idle (JEP 346) with less
# free heap kept lets it hand them back to the machine while the job's Python peaks.
DRIVER_JAVA_OPTIONS = (
    "-Dlog4j2.level=ERROR -XX:G1PeriodicGCInterval=5000 -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30"
)

# The status store keeps every finished job, stage and SQL execution (with its plan's metrics) for a UI that
# carousel turns off: 1,000 of each by default, which in a long-lived application (the evaluation's many
# training windows, a test session) fills the driver's heap and leaves it collecting garbage. A few recent
# ones are enough for a failure's stack trace and for `spark.sparkContext.statusTracker()`.
STATUS_RETENTION = {
    "spark.ui.retainedJobs": "50",
    "spark.ui.retainedStages": "50",
    "spark.ui.retainedTasks": "2000",
    "spark.sql.ui.retainedExecutions": "20",
    "spark.ui.dagGraph.retainedRootRDDs": "50",
}


def java_options(settings: Settings) -> tuple[str, str]:
    """The driver's and the executors' JVM options: carousel's own, then `spark_java_options`."""
    extra = settings.spark_java_options.strip()
    return f"{DRIVER_JAVA_OPTIONS} {extra}".strip(), extra


def spark_session(settings: Settings, app_name: str = "carousel") -> SparkSession:
    """Build (or reuse) the session configured from settings; on a cluster the same code runs unchanged."""
    # Executors must run the same Python as the driver (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    driver_options, executor_options = java_options(settings)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.driver.extraJavaOptions", driver_options)
        # Executors on a cluster do not inherit the driver's environment (`carousel.NUMPY_HUGE_PAGES`).
        .config(f"spark.executorEnv.{NUMPY_HUGE_PAGES}", os.environ[NUMPY_HUGE_PAGES])
    )
    if executor_options:
        builder = builder.config("spark.executor.extraJavaOptions", executor_options)
    for key, value in STATUS_RETENTION.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark

"""How many threads one process's native kernels may use (implicit's solver and top-k, the compiled
ranker): every core in a driver process, the task's share in a Spark task. PySpark hands each Python
worker `spark.task.cpus` as OMP_NUM_THREADS, so tasks running side by side do not oversubscribe the
executor's cores, and a task's rate is a rate per core."""

from __future__ import annotations

import os


def native_threads() -> int:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)

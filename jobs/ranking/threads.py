"""How many threads one process's native kernels may use (implicit's solver and top-k, the compiled
ranker): every core in a driver process, the task's share in a Spark task. PySpark hands each Python
worker `spark.task.cpus` as OMP_NUM_THREADS, so tasks running side by side do not oversubscribe the
executor's cores, and a task's rate is a rate per core."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits


def native_threads() -> int:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


_blas_lock = threading.Lock()
_blas_holders = 0
_blas_limits: threadpool_limits | None = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread while any thread of the process is inside: implicit parallelises over
    users itself, and a threaded BLAS underneath only oversubscribes the cores (implicit warns about it
    when a model is built). The first one in sets threadpoolctl's limit and the last one out restores
    it, so that threads leaving at different times (ALS fits side by side while tuning) do not lift it
    under each other. A limit set on a worker thread is not reliably seen by the others (OpenBLAS keeps
    some of it per thread): code that starts threads which fit ALS enters here first, on its own thread.
    """
    global _blas_holders, _blas_limits
    with _blas_lock:
        if _blas_holders == 0:
            _blas_limits = threadpool_limits(1, "blas")
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_holders -= 1
            if _blas_holders == 0 and _blas_limits is not None:
                _blas_limits.restore_original_limits()
                _blas_limits = None

"""Spark's Python workers run as carousel's driver does: without NumPy's huge pages
(`carousel.NUMPY_HUGE_PAGES`), in local mode by inheritance and on a cluster by `spark.executorEnv`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from carousel import NUMPY_HUGE_PAGES


def test_spark_python_workers_run_without_numpy_huge_pages(spark: Any) -> None:
    # Defined here so that it is pickled whole: the workers cannot import a test module.
    def huge_pages(_: Iterator[Any]) -> Iterator[bool]:
        import numpy

        yield bool(numpy._core.multiarray._get_madvise_hugepage())

    # "0" unless the environment the tests run in says otherwise (`carousel/__init__.py`).
    setting = os.environ[NUMPY_HUGE_PAGES]
    context = spark.sparkContext
    assert context.getConf().get(f"spark.executorEnv.{NUMPY_HUGE_PAGES}") == setting
    expected = setting == "1"
    assert context.parallelize([0, 1], 2).mapPartitions(huge_pages).collect() == [expected, expected]

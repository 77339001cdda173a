"""The evaluation's history as Spark frames, so the pipeline's own transforms run on it: the ranker
(`jobs.evaluation.ranker`) and the lists the batch would publish (`jobs.evaluation.published`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from jobs.evaluation.protocol import EvalContext

_STRING_COLUMNS = ("user_id", "session_id", "item_id", "event_type", "country", "device", "referrer")


def catalog_from_events(history: pd.DataFrame) -> pd.DataFrame:
    """A minimal catalog when only events are given: every item seen, in stock, one unknown category."""
    grouped = history.groupby("item_id", observed=True)
    return pd.DataFrame(
        {
            "item_id": grouped["ts"].min().index.astype(str),
            "category": "unknown",
            "price": grouped["price"].median().to_numpy(dtype="float64"),
            "in_stock": True,
            "first_seen": grouped["ts"].min().to_numpy(),
        }
    )


def history_frames(
    spark: SparkSession, ctx: EvalContext, columns: Sequence[str]
) -> tuple[DataFrame, DataFrame]:
    """The context's history (`columns` of it) and its catalog as Spark frames.

    The catalog is the items table at the cutoff, or `catalog_from_events` without one, with the
    columns the pipeline's item transforms read (``item_id, category, price, in_stock, first_seen``).
    """
    history = ctx.history[list(columns)].copy()
    for col in _STRING_COLUMNS:
        if col in history.columns:
            history[col] = history[col].astype(object).where(history[col].notna(), cast(Any, None))
    catalog = ctx.items if ctx.items is not None else catalog_from_events(ctx.history)
    catalog = catalog[["item_id", "category", "price", "in_stock", "first_seen"]].copy()
    catalog["item_id"] = catalog["item_id"].astype(str)
    catalog["category"] = catalog["category"].astype(object).where(catalog["category"].notna(), "unknown")
    # Arrow hands pandas over in batches of `maxRecordsPerBatch` rows, one partition each (118 for a
    # grocery chain's year): every stage over the history would run that many tiny tasks. One partition
    # per core, as the lake's files give the pipeline.
    cores = spark.sparkContext.defaultParallelism
    return spark.createDataFrame(history).coalesce(cores), spark.createDataFrame(catalog).coalesce(cores)

"""The Spark half of the input gate (`quality.input_gate`): a run's events reduced to one row of counts.

Kept apart from the gate's Great Expectations half so that a run can start scanning the lake while GX,
slow to import, loads (`jobs.stages.check_inputs`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from carousel.schema import EVENT_TYPES, EVENTS_SCHEMA

__all__ = ["FLAGGED_COUNTS", "METRIC_COLUMNS", "REQUIRED_COLUMNS", "input_metrics", "row_keys"]

# Event columns that must be filled on every row (carousel.schema's non-nullable events columns).
REQUIRED_COLUMNS: Final = ("session_id", "item_id", "event_type", "ts", "quantity", "price")
_CANONICAL_COLUMNS: Final = tuple(EVENTS_SCHEMA.names)

# Count columns of the metrics row, in output order (max_ts and the distinct counts come after).
_COUNT_COLUMNS: Final = (
    "rows",
    "rows_in_last_day",
    *(f"null_{c}" for c in REQUIRED_COLUMNS),
    "unknown_event_types",
    "future_rows",
    "negative_or_bad_price_rows",
    "bad_quantity_rows",
    "duplicate_rows",
)
METRIC_COLUMNS: Final = (*_COUNT_COLUMNS, "max_ts", "distinct_users", "distinct_items")
# The counts of rows meeting a condition (`_row_conditions`), in the order of `row_keys`' flag bits.
FLAGGED_COUNTS: Final = (
    *(f"null_{c}" for c in REQUIRED_COLUMNS),
    "unknown_event_types",
    "future_rows",
    "negative_or_bad_price_rows",
    "bad_quantity_rows",
)


# --------------------------------------------------------------------------------------------------
# Spark: events -> one row of metrics
# --------------------------------------------------------------------------------------------------


def input_metrics(events: DataFrame, interval_end: datetime) -> DataFrame:
    """Reduce a run's events to one row of data-quality counts.

    Parameters
    ----------
    events
        Events in the canonical shape of :data:`carousel.schema.EVENTS_SCHEMA` (all ten columns).
    interval_end
        End of the run's data interval; later timestamps count as ``future_rows`` and
        ``rows_in_last_day`` counts ``ts >= interval_end - 1 day``. A naive datetime is read in the
        Spark session time zone (UTC in :func:`jobs.features.session.spark_session`).

    Returns
    -------
    pyspark.sql.DataFrame
        Exactly one row with the columns of ``METRIC_COLUMNS``: ``rows``, ``rows_in_last_day``,
        ``null_<column>`` for each of ``REQUIRED_COLUMNS``, ``unknown_event_types``, ``future_rows``,
        ``negative_or_bad_price_rows``, ``bad_quantity_rows``, ``duplicate_rows`` (rows minus
        distinct rows over all canonical columns, rows told apart by a 64-bit fingerprint),
        ``max_ts`` (null without rows), ``distinct_users`` (null user ids not counted) and
        ``distinct_items``. Counts are 0, not null, on empty input.
    """
    # No grouping of whole rows: the duplicates are counted as rows minus distinct row fingerprints, a
    # 64-bit hash of the ten columns, so the shuffles carry one narrow column each (fingerprint, user,
    # item) instead of every row. Two different rows share a fingerprint with a chance of about
    # rows^2 / 2^65 (1e-5 at 20M rows): at worst one duplicate too many.
    aggregates = _count_aggregates(interval_end)

    # Each distinct count is an aggregate of its own over one column, joined to the one row of counts.
    # In the same aggregate as the counts Spark expands every row once per distinct count and shuffles
    # them all; alone, each column is deduplicated within its partitions before the shuffle.
    def distinct(column: Column, name: str) -> DataFrame:
        return events.select(column.alias("value")).distinct().agg(F.count("value").alias(name))

    return (
        events.agg(*aggregates)
        .crossJoin(distinct(_row_fingerprint(), "_distinct_rows"))
        .crossJoin(distinct(F.col("user_id"), "distinct_users"))
        .crossJoin(distinct(F.col("item_id"), "distinct_items"))
    ).select(
        *_COUNT_COLUMNS[:-1],
        (F.col("rows") - F.col("_distinct_rows")).alias("duplicate_rows"),
        "max_ts",
        "distinct_users",
        "distinct_items",
    )


def row_keys(events: DataFrame, interval_end: datetime) -> DataFrame:
    """Per event: its row fingerprint (as :func:`input_metrics` counts duplicates), 64-bit hashes of
    its shopper and item ids (null for a null id), its time in microseconds since the epoch, and
    ``flags``, bit *i* set when the row counts towards ``FLAGGED_COUNTS[i]``.

    This is what the gate reads from new lake parts only (``quality.input_ledger``): every metric of
    :func:`input_metrics` adds up from these keys, in one pass over the events."""

    def key(column: str) -> Column:
        return F.when(F.col(column).isNotNull(), F.xxhash64(F.col(column)))

    flags = F.lit(0).cast("long")
    for bit, condition in enumerate(_row_conditions(interval_end).values()):
        # A null condition (e.g. an unknown test of a null event type) does not count, as in `rows_where`.
        flags = flags + F.when(condition, F.lit(1 << bit)).otherwise(F.lit(0))
    return events.select(
        _row_fingerprint().alias("fingerprint"),
        key("user_id").alias("user"),
        key("item_id").alias("item"),
        F.unix_micros("ts").alias("ts_us"),
        flags.alias("flags"),
    )


def _row_conditions(interval_end: datetime) -> dict[str, Column]:
    """The counts of rows that meet a condition, each with its condition: `FLAGGED_COUNTS` in order."""
    end = F.lit(interval_end).cast("timestamp")
    price = F.col("price")
    # Spark orders NaN above every number, so `price < 0` misses it: test NaN and infinity explicitly.
    bad_price = (price < 0) | F.isnan(price) | (price == F.lit(float("inf")))
    conditions = {
        **{f"null_{c}": F.col(c).isNull() for c in REQUIRED_COLUMNS},
        # A null event type is reported by null_event_type only (isin gives null, when() skips it).
        "unknown_event_types": ~F.col("event_type").isin(*EVENT_TYPES),
        "future_rows": F.col("ts") > end,
        "negative_or_bad_price_rows": bad_price,
        "bad_quantity_rows": F.col("quantity") < 1,
    }
    assert tuple(conditions) == FLAGGED_COUNTS
    return conditions


def _count_aggregates(interval_end: datetime) -> list[Column]:
    end = F.lit(interval_end).cast("timestamp")

    def rows_where(condition: Column) -> Column:
        # sum over no rows is null; coalesce so an empty input gives 0 (and fails only the rows check).
        return F.coalesce(F.sum(F.when(condition, F.lit(1))), F.lit(0)).cast("long")

    return [
        rows_where(F.lit(True)).alias("rows"),
        rows_where(F.col("ts") >= end - F.expr("INTERVAL 1 DAY")).alias("rows_in_last_day"),
        *(rows_where(condition).alias(name) for name, condition in _row_conditions(interval_end).items()),
        F.max("ts").alias("max_ts"),
    ]


def _row_fingerprint() -> Column:
    """A 64-bit hash of a row's canonical columns that, like grouping, tells nulls from values (a
    bit per column says which are null: the hash itself skips nulls) and takes every NaN and -0.0 as
    equal to any other NaN and to 0.0."""
    null_bits = F.lit(0)
    for position, column in enumerate(_CANONICAL_COLUMNS):
        null_bits = null_bits + F.when(F.col(column).isNull(), F.lit(1 << position)).otherwise(F.lit(0))
    price = F.col("price")
    normal_price = F.when(F.isnan(price), F.lit(float("nan"))).otherwise(price + F.lit(0.0))
    values = [normal_price if c == "price" else F.col(c) for c in _CANONICAL_COLUMNS]
    return F.xxhash64(null_bits, *values)

"""The input gate's kept lake summary (`quality.input_ledger`, `quality.lake_scan`) on a real local Spark.

Every run's metrics are compared with `input_metrics` over all the lake's events before the run's end,
the full scan the summary replaces, while parts are added, a part is still being filled past a run's
end, a backfill runs before the kept events, and a part changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from carousel.lake import Lake
from carousel.schema import EVENTS_SCHEMA
from configs.settings import Settings
from quality.input_ledger import ADDITIVE_COUNTS, LakeSummary, sorted_unique
from quality.input_metrics import _COUNT_COLUMNS, METRIC_COLUMNS, input_metrics
from quality.lake_scan import lake_summary

pytestmark = pytest.mark.integration

COLUMNS = list(EVENTS_SCHEMA.names)


def _row(
    user: str | None, item: str | None, ts: str, event: str = "view", price: float = 10.0
) -> tuple[Any, ...]:
    return (user, f"s-{user}", item, event, ts, 1, price, "GB", None, None)


PART_A = [
    _row("u1", "i1", "2026-10-30T12:00:00"),
    _row("u1", "i1", "2026-10-30T12:00:00"),  # duplicate within the part
    _row("u2", "i2", "2026-10-31T08:00:00", "purchase"),
    _row(None, "i3", "2026-10-31T09:00:00"),  # no shopper: not a distinct user
    _row("u3", "i1", "2026-10-31T10:00:00", "click"),  # unknown event type
]
PART_B = [
    _row("u2", "i2", "2026-10-31T08:00:00", "purchase"),  # duplicate of a row of part A
    _row("u4", "i4", "2026-10-31T23:00:00", price=float("nan")),
    _row("u4", None, "2026-11-01T01:00:00"),  # null item
]
# Part C is still being filled: one event after the second run's end.
PART_C = [
    _row("u4", "i4", "2026-10-31T23:00:00", price=float("nan")),  # duplicate (NaN price) of part B's
    _row("u5", "i5", "2026-11-01T05:00:00"),
    _row("u5", "i6", "2026-11-01T07:00:00"),
]
END_1 = datetime(2026, 11, 1, 2, tzinfo=UTC)
END_2 = datetime(2026, 11, 1, 6, tzinfo=UTC)
END_3 = datetime(2026, 11, 1, 8, tzinfo=UTC)


def _write_part(lake: Lake, name: str, rows: list[tuple[Any, ...]]) -> Path:
    """A raw part, as the gate may find one: the lake's own writer would refuse some of these rows."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["ts"] = pd.to_datetime(frame["ts"]).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    frame["quantity"] = frame["quantity"].astype("int32")
    lake.events_dir.mkdir(parents=True, exist_ok=True)
    path = lake.events_dir / f"part-{name}.parquet"
    frame.to_parquet(path, index=False)
    return path


def _full_scan(spark: Any, lake: Lake, end: datetime) -> dict[str, Any]:
    events = spark.read.parquet(str(lake.events_dir)).where(F.col("ts") < F.lit(end))
    row = input_metrics(events, end).withColumn("max_ts", F.unix_micros("max_ts")).first()
    return row.asDict()


def _summary(
    spark: Any, settings: Settings, lake: Lake, end: datetime, run: str
) -> tuple[dict[str, Any], dict[str, int]]:
    summary, scanned = lake_summary(spark, lake, end, quality_dir=settings.quality_dir, run_id=run)
    end_us = (end - datetime(1970, 1, 1, tzinfo=UTC)) // pd.Timedelta(microseconds=1)
    return summary.metrics(end_us), scanned


def test_each_run_scans_only_new_parts_and_reports_the_full_scans_metrics(spark: Any, tmp_path: Path) -> None:
    """Runs that read only the parts added since the kept summary report what a scan of every part reports."""
    settings = Settings(var_dir=tmp_path / "var", lake_dir=tmp_path / "var" / "lake", spark_master="local[2]")
    lake = Lake(settings.lake_dir)
    _write_part(lake, "a", PART_A)
    _write_part(lake, "b", PART_B)

    metrics, scanned = _summary(spark, settings, lake, END_1, "run-1")
    assert metrics == _full_scan(spark, lake, END_1)
    assert scanned == {"parts": 2, "parts_scanned": 2, "rows_scanned": 8}
    assert metrics["duplicate_rows"] == 2 and metrics["distinct_users"] == 4

    _write_part(lake, "c", PART_C)
    metrics, scanned = _summary(spark, settings, lake, END_2, "run-2")
    assert metrics == _full_scan(spark, lake, END_2)
    # Part C has an event after END_2: counted up to the end, and scanned again by the next run.
    assert scanned == {"parts": 3, "parts_scanned": 1, "rows_scanned": 2}
    assert metrics["duplicate_rows"] == 3

    metrics, scanned = _summary(spark, settings, lake, END_3, "run-3")
    assert metrics == _full_scan(spark, lake, END_3)
    assert scanned == {"parts": 3, "parts_scanned": 1, "rows_scanned": 3}

    # Nothing new: nothing scanned, the same metrics.
    assert _summary(spark, settings, lake, END_3, "run-4") == (
        metrics,
        {"parts": 3, "parts_scanned": 0, "rows_scanned": 0},
    )


def test_a_backfill_or_a_changed_part_rescans_every_part(spark: Any, tmp_path: Path) -> None:
    """A run ending before the kept events, or a part rewritten since, is not answered from the summary."""
    settings = Settings(var_dir=tmp_path / "var", lake_dir=tmp_path / "var" / "lake", spark_master="local[2]")
    lake = Lake(settings.lake_dir)
    _write_part(lake, "a", PART_A)
    _write_part(lake, "b", PART_B)
    _summary(spark, settings, lake, END_3, "run-1")

    backfill = datetime(2026, 10, 31, 9, 30, tzinfo=UTC)
    metrics, scanned = _summary(spark, settings, lake, backfill, "run-2")
    assert scanned["parts_scanned"] == 2
    assert metrics == _full_scan(spark, lake, backfill)

    _summary(spark, settings, lake, END_3, "run-3")
    _write_part(lake, "b", PART_B[:1])
    metrics, scanned = _summary(spark, settings, lake, END_3, "run-4")
    assert scanned["parts_scanned"] == 2
    assert metrics == _full_scan(spark, lake, END_3)


def test_the_summary_covers_exactly_the_metrics_that_are_not_set_counts() -> None:
    """Every count of the metrics row is either additive or derived from the kept keys."""
    assert set(ADDITIVE_COUNTS) | {"rows_in_last_day", "duplicate_rows"} == set(_COUNT_COLUMNS)
    assert set(LakeSummary().metrics(0)) == set(METRIC_COLUMNS)


def test_a_summary_survives_a_save_and_an_unreadable_one_is_rebuilt(tmp_path: Path) -> None:
    """What is saved loads back equal; a damaged file loads as None (so the gate rescans)."""
    summary = LakeSummary(
        parts={"part-a.parquet": [10, 20]},
        counts={**dict.fromkeys(ADDITIVE_COUNTS, 0), "rows": 3},
        max_ts=5,
        fingerprints=np.array([1, 7], dtype=np.int64),
        users=np.array([-3], dtype=np.int64),
        recent_ts=np.array([4, 5], dtype=np.int64),
    )
    path = tmp_path / "summary.npz"
    summary.save(path)
    loaded = LakeSummary.load(path)
    assert loaded is not None
    assert (loaded.parts, loaded.counts, loaded.max_ts) == (summary.parts, summary.counts, 5)
    assert loaded.fingerprints.tolist() == [1, 7] and loaded.users.tolist() == [-3] and not len(loaded.items)
    path.write_bytes(b"not a summary")
    assert LakeSummary.load(path) is None


def test_merging_unions_the_keys_and_keeps_the_last_day() -> None:
    """Keys are unioned sorted without repeats; only times within a day of the newest are kept."""
    day = 86_400_000_000
    one = LakeSummary(
        parts={"a": [1, 1]}, max_ts=day, fingerprints=np.array([1, 5, 9]), recent_ts=np.array([0, day])
    )
    two = LakeSummary(
        parts={"b": [1, 1]},
        max_ts=2 * day,
        fingerprints=np.array([9, 5, 2, 2]),
        recent_ts=np.array([day + 1, 2 * day]),
    )
    merged = one.merge(two)
    assert merged.fingerprints.tolist() == [1, 2, 5, 9]
    assert merged.recent_ts.tolist() == [day, day + 1, 2 * day]
    assert merged.metrics(2 * day + 1)["rows_in_last_day"] == 2
    with pytest.raises(ValueError, match="summarised twice"):
        merged.merge(one)


def test_sorted_unique_is_numpys_unique() -> None:
    """The sort-based unique gives `np.unique`'s values, empty and repeated inputs included."""
    values = np.random.default_rng(3).integers(-50, 50, 1_000, dtype=np.int64)
    for sample in (values, values[:0], np.full(7, -2, dtype=np.int64)):
        assert np.array_equal(sorted_unique(sample), np.unique(sample))

"""Integration tests of the Great Expectations input gate (quality/input_gate.py): real local Spark, real GX
1.x.

``input_metrics`` is checked on a hand-made Spark frame whose counts are worked out by hand. The GX half
gets the metrics row of a clean hand-made input, and each failure test breaks one metric of that row
(the same row ``input_metrics(...).toPandas()`` returns), plus one end-to-end run of the messy frame.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from quality.input_gate import validate_run_inputs
from quality.input_metrics import METRIC_COLUMNS, input_metrics
from quality.output_gate import GateResult, validate_run_output

pytestmark = pytest.mark.integration

INTERVAL_END = datetime(2026, 11, 1, tzinfo=UTC)
EVENTS_DDL = (
    "user_id string, session_id string, item_id string, event_type string, ts timestamp, "
    "quantity int, price double, country string, device string, referrer string"
)
EVENTS_DDL_COLUMNS = [column.split()[0] for column in EVENTS_DDL.split(", ")]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CLEAN_ROWS: list[tuple[Any, ...]] = [
    ("u1", "s1", "i1", "view", _ts("2026-10-31T12:00:00"), 1, 10.0, "GB", "mobile", None),
    ("u1", "s1", "i1", "add_to_cart", _ts("2026-10-31T12:01:00"), 1, 10.0, "GB", "mobile", None),
    ("u2", "s2", "i2", "purchase", _ts("2026-10-20T08:00:00"), 2, 5.0, "FR", "desktop", "ads"),
    (None, "s3", "i3", "view", _ts("2026-10-30T09:00:00"), 1, 0.0, None, None, None),
]

# One problem per row (besides the duplicates): hand-computed counts in test_input_metrics_counts_by_hand.
MESSY_ROWS: list[tuple[Any, ...]] = [
    ("u1", "s1", "i1", "view", _ts("2026-10-31T12:00:00"), 1, 10.0, "GB", "mobile", None),
    ("u1", "s1", "i1", "view", _ts("2026-10-31T12:00:00"), 1, 10.0, "GB", "mobile", None),  # duplicate
    ("u1", "s1", "i1", "view", _ts("2026-10-31T12:00:00"), 1, 10.0, "GB", "mobile", None),  # duplicate
    ("u2", "s2", "i2", "purchase", _ts("2026-10-20T08:00:00"), 2, 5.0, "FR", "desktop", None),
    ("u2", "s2", "i3", "click", _ts("2026-10-20T08:05:00"), 1, 5.0, "FR", "desktop", None),  # unknown type
    ("u3", "s3", "i1", "view", _ts("2026-11-02T00:00:00"), 1, 1.0, "GB", None, None),  # future
    (None, "s4", None, "add_to_cart", _ts("2026-10-30T23:00:00"), 1, -1.0, None, None, None),  # null item, <0
    # quantity 0 and a NaN price:
    ("u4", "s5", "i4", "purchase", _ts("2026-10-31T06:00:00"), 0, float("nan"), "DE", None, None),
]


def _metrics(spark: Any, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return input_metrics(spark.createDataFrame(rows, EVENTS_DDL), INTERVAL_END).toPandas()


@pytest.fixture(scope="module")
def clean_metrics(spark: Any) -> pd.DataFrame:
    return _metrics(spark, CLEAN_ROWS)


def _broken(clean: pd.DataFrame, **overrides: int) -> pd.DataFrame:
    out = clean.copy()
    for column, value in overrides.items():
        out[column] = value
    return out


def _run(tmp_path: Path, metrics: pd.DataFrame, *, run_id: str = "run-1", **kwargs: Any) -> GateResult:
    return validate_run_inputs(
        run_id=run_id,
        metrics=metrics,
        recent_volumes=kwargs.pop("recent_volumes", []),
        quality_dir=tmp_path,
        **kwargs,
    )


def _docs_text(result: GateResult) -> str:
    """Visible text of the run's input Data Docs: the index plus every page under it, tags stripped."""
    pages = [result.docs_index, *sorted(result.docs_index.parent.glob("validations/**/*.html"))]
    html = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _only_line_with(result: GateResult, text: str) -> str:
    assert not result.success
    assert len(result.failures) == 1, result.failures
    (line,) = result.failures
    assert text in line, line
    return line


def test_input_metrics_counts_by_hand(spark: Any) -> None:
    """input_metrics returns one row whose counts match the hand-computed ones for a messy frame."""
    metrics = _metrics(spark, MESSY_ROWS)

    assert len(metrics) == 1
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    row = metrics.iloc[0]
    expected = {
        "rows": 8,
        # >= 2026-10-31T00:00: the three duplicates, the future row and the 06:00 purchase.
        "rows_in_last_day": 5,
        "null_session_id": 0,
        "null_item_id": 1,
        "null_event_type": 0,
        "null_ts": 0,
        "null_quantity": 0,
        "null_price": 0,
        "unknown_event_types": 1,
        "future_rows": 1,
        "negative_or_bad_price_rows": 2,  # -1.0 and NaN
        "bad_quantity_rows": 1,
        "duplicate_rows": 2,  # three identical rows = one distinct row + two duplicates
        "distinct_users": 4,  # u1..u4; the null user id is not a user
        "distinct_items": 4,  # i1..i4; the null item id is not an item
    }
    assert {k: int(row[k]) for k in expected} == expected
    assert pd.Timestamp(row["max_ts"]).tz_localize(None) == pd.Timestamp("2026-11-02T00:00:00")


def test_duplicates_are_rows_equal_in_every_column_nulls_and_nan_included(spark: Any) -> None:
    """Rows count as duplicates exactly when grouping would merge them: NaN prices and nulls in the same
    columns do; a value that moves to another null column, or -0.0 against 0.0, is no difference."""
    when = _ts("2026-10-31T12:00:00")
    rows: list[tuple[Any, ...]] = [
        ("u1", "s1", "i1", "view", when, 1, float("nan"), "GB", None, None),
        ("u1", "s1", "i1", "view", when, 1, float("nan"), "GB", None, None),  # duplicate (NaN == NaN)
        ("u1", "s1", "i1", "view", when, 1, 0.0, "GB", "web", None),
        ("u1", "s1", "i1", "view", when, 1, -0.0, "GB", "web", None),  # duplicate (-0.0 == 0.0)
        ("u1", "s1", "i1", "view", when, 1, 0.0, "GB", None, "web"),  # not one: the null moved
    ]
    metrics = _metrics(spark, rows)
    expected = (
        spark.createDataFrame(rows, EVENTS_DDL).count()
        - spark.createDataFrame(rows, EVENTS_DDL).groupBy(*EVENTS_DDL_COLUMNS).count().count()
    )
    assert int(metrics["duplicate_rows"].iloc[0]) == expected == 2


def test_input_metrics_of_empty_input_are_zeros(spark: Any) -> None:
    """On no events input_metrics still returns one row, with zero counts rather than nulls."""
    metrics = _metrics(spark, [])

    assert len(metrics) == 1
    assert int(metrics["rows"].iloc[0]) == 0
    assert int(metrics["duplicate_rows"].iloc[0]) == 0
    assert int(metrics["null_item_id"].iloc[0]) == 0


def test_clean_input_passes_and_keeps_results_and_docs(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """A clean input passes and leaves results.json and Data Docs under runs/<run_id>/inputs/."""
    result = _run(tmp_path, clean_metrics, recent_volumes=[4, 5, 3])

    assert result.success, result.failures
    assert result.failures == []
    assert result.results_path == tmp_path / "runs" / "run-1" / "inputs" / "results.json"
    assert result.docs_index == tmp_path / "runs" / "run-1" / "inputs" / "data_docs" / "index.html"
    assert result.docs_index.is_file()
    stored = json.loads(result.results_path.read_text())
    assert stored["success"] is True
    assert stored["statistics"]["rows"] == 4
    assert stored["statistics"]["volume_ratio"] == 1.0
    assert stored["expectation_parameters"] == {"max_duplicate_rate": 0.05, "min_volume_ratio": 0.5}
    assert stored["validation"]["statistics"]["unsuccessful_expectations"] == 0
    assert "carousel_inputs" in _docs_text(result)


def test_duplicates_over_the_rate_fail(tmp_path: Path, spark: Any) -> None:
    """Duplicate rows above max_duplicate_rate fail with a line giving the observed rate."""
    rows = [*CLEAN_ROWS, CLEAN_ROWS[0]]  # 1 duplicate of 5 rows = 0.2
    result = _run(tmp_path, _metrics(spark, rows), max_duplicate_rate=0.1)

    line = _only_line_with(result, "duplicate rate too high")
    assert "observed value 0.2" in line
    assert "max_value=0.1" in line


def test_duplicates_within_the_rate_pass(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """A duplicate share at or below max_duplicate_rate does not fail the run."""
    result = _run(tmp_path, _broken(clean_metrics, duplicate_rows=1), max_duplicate_rate=0.25)

    assert result.success, result.failures


def test_future_timestamps_fail(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """Events after the interval end fail the run with a line naming future timestamps and their count."""
    line = _only_line_with(_run(tmp_path, _broken(clean_metrics, future_rows=3)), "future timestamps")
    assert "column=future_rows" in line
    assert "observed value 3" in line


def test_unknown_event_type_fails(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """An event type outside carousel.schema.EVENT_TYPES fails the run with a line naming it."""
    line = _only_line_with(
        _run(tmp_path, _broken(clean_metrics, unknown_event_types=2)), "unknown event type"
    )
    assert "observed value 2" in line


def test_null_item_id_fails(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """A null item_id fails the run with a line naming the column and the null count."""
    line = _only_line_with(_run(tmp_path, _broken(clean_metrics, null_item_id=1)), "null item_id")
    assert "observed value 1" in line


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        ("negative_or_bad_price_rows", "negative or non-finite price"),
        ("bad_quantity_rows", "quantity below 1"),
    ],
)
def test_bad_price_or_quantity_fails(
    tmp_path: Path, clean_metrics: pd.DataFrame, column: str, problem: str
) -> None:
    """A negative/non-finite price or a quantity below 1 fails the run with a line naming it."""
    _only_line_with(_run(tmp_path, _broken(clean_metrics, **{column: 1})), problem)


def test_no_input_fails(tmp_path: Path, spark: Any) -> None:
    """A run without any input event fails with a line saying so."""
    _only_line_with(_run(tmp_path, _metrics(spark, [])), "no input events")


def test_volume_drop_against_recent_runs_fails(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """Rows below min_volume_ratio times the median of recent runs fail with the observed ratio."""
    # 4 rows against a median of 10 -> ratio 0.4 < 0.5.
    result = _run(tmp_path, clean_metrics, recent_volumes=[9, 10, 1000])

    line = _only_line_with(result, "input volume dropped")
    assert "observed value 0.4" in line
    assert "min_value=0.5" in line


def test_without_history_the_volume_check_passes(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """Without recent runs there is no baseline, so the volume check passes (ratio 1.0)."""
    result = _run(tmp_path, clean_metrics, recent_volumes=[], min_volume_ratio=0.9)

    assert result.success, result.failures
    assert result.statistics["volume_ratio"] == 1.0


def test_messy_input_end_to_end_reports_every_problem(tmp_path: Path, spark: Any) -> None:
    """The messy frame through Spark and GX fails with one line per broken property."""
    result = _run(tmp_path, _metrics(spark, MESSY_ROWS))

    assert not result.success
    problems = [line.split(": ")[1] for line in result.failures]
    assert sorted(problems) == sorted(
        [
            "null item_id",
            "unknown event type",
            "future timestamps",
            "negative or non-finite price",
            "quantity below 1",
            "duplicate rate too high",
        ]
    )
    assert all(line.startswith("inputs: ") for line in result.failures)


def test_failed_run_data_docs_show_the_failure(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """The input Data Docs of a failed run show it as failed and describe the failed expectation."""
    result = _run(tmp_path, _broken(clean_metrics, future_rows=3))

    text = _docs_text(result)
    assert "Failed" in text
    assert "No event after the run's interval end" in text
    assert "carousel_inputs" in text


def _tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_output_gate_docs_of_the_same_run_are_untouched(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """Running the input gate after the output gate for one run_id leaves the output gate's files as they
    were."""
    lists = pd.DataFrame(
        {"rank": [1], "item_id": ["i1"], "score": [1.0], "reason_code": ["pop"], "reason_text": ["Popular"]}
    )
    output = validate_run_output(
        run_id="run-1",
        user_lists=lists.assign(user_id="u1"),
        segment_lists=lists.assign(segment="global"),
        catalog=pd.DataFrame({"item_id": ["i1"], "in_stock": [True]}),
        active_users=1,
        list_length=1,
        min_user_coverage=1.0,
        quality_dir=tmp_path,
    )
    assert output.success, output.failures
    run_dir = tmp_path / "runs" / "run-1"
    before = {"docs": _tree_digest(output.docs_index.parent), "results": output.results_path.read_bytes()}

    failed = _run(tmp_path, _broken(clean_metrics, future_rows=1))
    _run(tmp_path, clean_metrics)  # and a re-run of the same run id

    assert not failed.success
    assert _tree_digest(output.docs_index.parent) == before["docs"]
    assert output.results_path.read_bytes() == before["results"]
    assert before["docs"]  # the output gate did write docs
    # The input gate's pages live in their own folder and list only the input validation.
    assert failed.docs_index.parent == run_dir / "inputs" / "data_docs"
    input_text = _docs_text(failed)
    assert "carousel_inputs" in input_text
    assert "carousel.run_output.user_lists" not in input_text


def test_unsafe_run_id_is_rejected(tmp_path: Path, clean_metrics: pd.DataFrame) -> None:
    """A run_id that is not a plain folder name is refused before anything is written."""
    with pytest.raises(ValueError, match="run_id"):
        _run(tmp_path, clean_metrics, run_id="../escape")
    assert not (tmp_path / "runs").exists()

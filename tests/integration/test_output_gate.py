"""Integration tests of the Great Expectations output gate (quality/output_gate.py) with real GX 1.x.

Every frame is built by hand: a small catalog (i1..i6 in stock, i7 out of stock), three users with three
items each and two segment lists, with ``list_length=3`` and a coverage floor of 3 of 4 active users.
Each failure test breaks exactly one property of that good output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quality.output_gate import DriftBaseline, GateResult, validate_run_output

pytestmark = pytest.mark.integration

LIST_LENGTH = 3
ACTIVE_USERS = 4
MIN_USER_COVERAGE = 0.75  # ceil(0.75 * 4) = 3 users must have a list

GOOD_USER_LISTS: dict[str, list[str | None]] = {
    "u1": ["i1", "i2", "i3"],
    "u2": ["i4", "i5", "i6"],
    "u3": ["i2", "i4", "i6"],
}
GOOD_SEGMENT_LISTS: dict[str, list[str | None]] = {
    "global": ["i1", "i2", "i3"],
    "country:United Kingdom": ["i3", "i5", "i6"],
}


def _lists(key: str, lists: dict[str, list[str | None]]) -> pd.DataFrame:
    """Rows ``key, rank, item_id, score, reason_code, reason_text`` with ranks 1..n per list."""
    rows: list[dict[str, Any]] = []
    for list_key, items in lists.items():
        for rank, item in enumerate(items, start=1):
            rows.append(
                {
                    key: list_key,
                    "rank": rank,
                    "item_id": item,
                    "score": 1.0 / rank,
                    "reason_code": "similar_items",
                    "reason_text": "Because you viewed similar items",
                }
            )
    frame = pd.DataFrame(rows, columns=[key, "rank", "item_id", "score", "reason_code", "reason_text"])
    return frame.astype({"rank": "int64", "score": "float64"})


def _catalog() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i6", "i7"],
            "in_stock": [True, True, True, True, True, True, False],
        }
    )


def _run(
    quality_dir: Path,
    *,
    run_id: str = "run-1",
    user_lists: pd.DataFrame | None = None,
    segment_lists: pd.DataFrame | None = None,
    catalog: pd.DataFrame | None = None,
    active_users: int = ACTIVE_USERS,
    list_length: int = LIST_LENGTH,
    drift: DriftBaseline | None = None,
) -> GateResult:
    return validate_run_output(
        run_id=run_id,
        user_lists=_lists("user_id", GOOD_USER_LISTS) if user_lists is None else user_lists,
        segment_lists=_lists("segment", GOOD_SEGMENT_LISTS) if segment_lists is None else segment_lists,
        catalog=_catalog() if catalog is None else catalog,
        active_users=active_users,
        list_length=list_length,
        min_user_coverage=MIN_USER_COVERAGE,
        quality_dir=quality_dir,
        drift=drift,
    )


def _lines_with(result: GateResult, text: str) -> list[str]:
    return [line for line in result.failures if text in line]


def _docs_text(result: GateResult) -> str:
    """Visible text of the run's Data Docs: the index plus every page under it, tags stripped."""
    pages = [result.docs_index, *sorted(result.docs_index.parent.glob("validations/**/*.html"))]
    html = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_good_output_passes_and_keeps_results_and_docs(tmp_path: Path) -> None:
    """A well-formed run passes and leaves results.json and a Data Docs index.html in its run folder."""
    result = _run(tmp_path)

    assert result.success, result.failures
    assert result.failures == []
    assert result.results_path == tmp_path / "runs" / "run-1" / "results.json"
    assert result.docs_index == tmp_path / "runs" / "run-1" / "data_docs" / "index.html"
    assert result.docs_index.is_file()
    stored = json.loads(result.results_path.read_text())
    assert stored["success"] is True
    assert set(stored["validations"]) == {"user_lists", "segment_lists"}
    assert all(v["success"] for v in stored["validations"].values())
    assert stored["expectation_parameters"] == {"expected_list_length": 3, "min_covered_users": 3}
    assert result.statistics["covered_users"] == 3
    assert result.statistics["unsuccessful_expectations"] == 0
    config = (tmp_path / "gx" / "great_expectations.yml").read_text()
    assert "analytics_enabled: false" in config


def test_empty_list_fails(tmp_path: Path) -> None:
    """A list key whose only row carries no item (an empty list) fails the empty-list check."""
    users = pd.concat(
        [
            _lists("user_id", GOOD_USER_LISTS),
            pd.DataFrame(
                {
                    "user_id": ["u4"],
                    "rank": [np.nan],
                    "item_id": [None],
                    "score": [np.nan],
                    "reason_code": [None],
                    "reason_text": [None],
                }
            ),
        ],
        ignore_index=True,
    )

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "empty list")
    assert line.startswith("user_lists: ")
    assert "user_id=u4" in line


def test_duplicate_item_in_a_list_fails(tmp_path: Path) -> None:
    """An item recommended twice in the same list fails the compound-uniqueness check."""
    users = _lists("user_id", {**GOOD_USER_LISTS, "u1": ["i1", "i2", "i1"]})

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "duplicate item in a list")
    assert "expect_column_values_to_be_null" in line
    assert "user_id=u1 duplicate_item=i1" in line


def test_lists_read_in_blocks_pass_like_one_frame(tmp_path: Path) -> None:
    """Blocks of whole lists, read one at a time, give the verdict and figures of the whole frame."""
    users = _lists("user_id", GOOD_USER_LISTS)
    blocks = iter([users.iloc[:3], users.iloc[3:6], users.iloc[6:]])

    result = _run(tmp_path, user_lists=blocks)

    assert result.success, result.failures
    assert result.statistics["user_lists"] == 3 and result.statistics["user_rows"] == 9


def test_list_split_across_blocks_fails(tmp_path: Path) -> None:
    """A list whose rows come in two blocks would be loaded as two lists, the second replacing the first."""
    users = _lists("user_id", GOOD_USER_LISTS)

    result = _run(tmp_path, user_lists=iter([users.iloc[:2], users.iloc[2:]]))

    assert not result.success
    (line,) = _lines_with(result, "list split across blocks")
    assert "user_id=u1" in line


def test_row_without_a_list_key_fails(tmp_path: Path) -> None:
    users = _lists("user_id", GOOD_USER_LISTS)
    users.loc[9] = [None, 1, "i1", 1.0, "popular", "Popular"]

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "row without a list key")
    assert len(result.failures) == 1


def test_same_item_in_different_lists_passes(tmp_path: Path) -> None:
    """The same item in lists of different users is not a duplicate."""
    users = _lists("user_id", {"u1": ["i1", "i2", "i3"], "u2": ["i1", "i2", "i3"], "u3": ["i1", "i2", "i3"]})

    assert _run(tmp_path, user_lists=users).success


def test_short_list_fails(tmp_path: Path) -> None:
    """A list shorter than min(list_length, in-stock items) fails the list-length check."""
    users = _lists("user_id", {**GOOD_USER_LISTS, "u2": ["i4", "i5"]})

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "wrong list length")
    assert "min_value=3" in line and "max_value=3" in line
    assert "user_id=u2" in line and "n_items=2" in line


def test_expected_length_is_capped_by_in_stock_items(tmp_path: Path) -> None:
    """When fewer items are in stock than list_length, lists of that smaller size pass."""
    catalog = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "in_stock": [True, True, False]})
    users = _lists("user_id", {"u1": ["i1", "i2"], "u2": ["i2", "i1"], "u3": ["i1", "i2"]})
    segments = _lists("segment", {"global": ["i1", "i2"]})

    result = _run(tmp_path, user_lists=users, segment_lists=segments, catalog=catalog)

    assert result.success, result.failures
    assert result.statistics["expected_list_length"] == 2


@pytest.mark.parametrize(
    ("bad_score", "problem", "shown"),
    [
        (np.nan, "NaN or missing score", "missing_score_item=i5"),
        (np.inf, "infinite score", "infinite_score_item=i5"),
    ],
)
def test_non_finite_score_fails(tmp_path: Path, bad_score: float, problem: str, shown: str) -> None:
    """A NaN or infinite score fails the matching score check, and results.json stays strict JSON."""
    users = _lists("user_id", GOOD_USER_LISTS)
    users.loc[4, "score"] = bad_score  # u2, rank 2, item i5

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, problem)
    assert "user_id=u2" in line and shown in line
    assert len(result.failures) == 1

    def reject(constant: str) -> None:
        raise AssertionError(f"results.json holds the non-standard JSON constant {constant}")

    json.loads(result.results_path.read_text(), parse_constant=reject)


def test_item_not_in_catalog_fails(tmp_path: Path) -> None:
    """An item missing from the catalog fails the catalog check (and only that check)."""
    users = _lists("user_id", {**GOOD_USER_LISTS, "u3": ["i2", "i99", "i6"]})

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "item not in catalog")
    assert "user_id=u3 unknown_item=i99" in line
    assert _lines_with(result, "out-of-stock item") == []


def test_out_of_stock_item_fails(tmp_path: Path) -> None:
    """A catalog item that is out of stock fails the in-stock check (and not the catalog check)."""
    segments = _lists("segment", {**GOOD_SEGMENT_LISTS, "global": ["i1", "i7", "i3"]})

    result = _run(tmp_path, segment_lists=segments)

    assert not result.success
    (line,) = _lines_with(result, "out-of-stock item")
    assert line.startswith("segment_lists: ")
    assert "segment=global out_of_stock_item=i7" in line
    assert _lines_with(result, "item not in catalog") == []


def test_low_user_coverage_fails(tmp_path: Path) -> None:
    """Fewer users with a list than ceil(min_user_coverage * active_users) fails the coverage check."""
    users = _lists("user_id", {"u1": ["i1", "i2", "i3"], "u2": ["i4", "i5", "i6"]})

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "user coverage too low")
    assert "min_value=3" in line and "observed value 2" in line
    assert result.statistics["user_coverage"] == pytest.approx(0.5)


def test_missing_global_segment_fails(tmp_path: Path) -> None:
    """Segment lists without a 'global' segment fail."""
    segments = _lists("segment", {"country:United Kingdom": ["i3", "i5", "i6"]})

    result = _run(tmp_path, segment_lists=segments)

    assert not result.success
    (line,) = _lines_with(result, "missing 'global' segment")
    assert line.startswith("segment_lists: ")
    assert "observed missing ['global']" in line


def test_rank_gap_fails(tmp_path: Path) -> None:
    """Ranks that skip a number (1, 2, 4) fail the contiguity check."""
    users = _lists("user_id", GOOD_USER_LISTS)
    users.loc[2, "rank"] = 4  # u1: ranks 1, 2, 4

    result = _run(tmp_path, user_lists=users)

    assert not result.success
    (line,) = _lines_with(result, "ranks not contiguous")
    assert "user_id=u1" in line


def test_failed_run_data_docs_show_the_failed_expectation(tmp_path: Path) -> None:
    """The Data Docs of a failed run show it as failed and describe the failed expectation."""
    users = _lists("user_id", {**GOOD_USER_LISTS, "u1": ["i1", "i2", "i1"]})

    result = _run(tmp_path, user_lists=users)

    text = _docs_text(result)
    assert "Failed" in text
    assert "No duplicate item within a list" in text
    assert "carousel.run_output.user_lists" in text


def test_two_runs_share_one_context(tmp_path: Path) -> None:
    """Two runs in one quality_dir reuse one GX context and keep separate results and docs."""
    good = _run(tmp_path, run_id="run-a")
    suite_file = tmp_path / "gx" / "expectations" / "carousel" / "run_output" / "user_lists.json"
    suite_before = json.loads(suite_file.read_text())
    bad = _run(tmp_path, run_id="run-b", user_lists=_lists("user_id", {"u1": ["i1", "i2", "i3"]}))

    assert good.success and not bad.success
    assert good.results_path != bad.results_path
    assert json.loads(good.results_path.read_text())["success"] is True
    assert json.loads(bad.results_path.read_text())["success"] is False
    assert "run-b" not in good.docs_index.read_text()
    assert "run-b" in bad.docs_index.read_text()
    # The second run reused the stored suite instead of growing or rewriting it.
    assert json.loads(suite_file.read_text()) == suite_before
    assert len(suite_before["expectations"]) == 13
    # GX kept both runs' validation results in its own store too.
    stored_runs = {p.name for p in (tmp_path / "gx" / "uncommitted" / "validations").glob("*/*/*/*")}
    assert {"run-a", "run-b"} <= stored_runs


def test_rerun_of_same_run_id_replaces_its_output(tmp_path: Path) -> None:
    """Running the same run_id again replaces that run's verdict and docs instead of mixing them."""
    _run(tmp_path, run_id="run-x", user_lists=_lists("user_id", {"u1": ["i1", "i2", "i3"]}))
    again = _run(tmp_path, run_id="run-x")

    assert again.success
    assert json.loads(again.results_path.read_text())["success"] is True
    assert len(list(again.docs_index.parent.glob("validations/**/*.html"))) == 2


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden"])
def test_unsafe_run_id_is_rejected(tmp_path: Path, run_id: str) -> None:
    """A run_id that is not a plain folder name is refused before anything is written."""
    with pytest.raises(ValueError, match="run_id"):
        _run(tmp_path, run_id=run_id)
    assert not (tmp_path / "gx").exists()


def _live(lists: dict[str, list[str | None]]) -> DriftBaseline:
    return DriftBaseline(version="20261101T000000Z", live_lists=_lists("user_id", lists))


def test_drift_within_bounds_passes_and_is_reported(tmp_path: Path) -> None:
    """Against a live version sharing most items, the drift table passes and its figures are kept."""
    live = {"u1": ["i1", "i2", "i4"], "u2": ["i4", "i5", "i6"], "u3": ["i2", "i4", "i5"]}
    result = _run(tmp_path, drift=_live(live))
    assert result.success, result.failures
    assert result.statistics["drift_compared_users"] == 3
    assert result.statistics["drift_mean_overlap"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    stored = json.loads(result.results_path.read_text())
    assert "list_drift" in stored["validations"]


def test_lists_unrelated_to_the_live_version_fail_the_drift_check(tmp_path: Path) -> None:
    """New lists sharing nothing with the live ones (a bug that scrambles items) fail, and Data Docs say
    so."""
    live = {"u1": ["i4", "i5", "i6"], "u2": ["i1", "i2", "i3"], "u3": ["i1", "i3", "i5"]}
    result = _run(tmp_path, drift=_live(live))
    assert not result.success
    (line,) = _lines_with(result, "lists changed too much against the live version")
    assert "mean_overlap" in line
    assert "mean_overlap" in _docs_text(result)


def test_scores_far_outside_the_live_range_fail_the_drift_check(tmp_path: Path) -> None:
    """Scores a thousand times the live ones (a model or scaling bug) fail the score-range check."""
    lists = _lists("user_id", GOOD_USER_LISTS)
    lists["score"] = lists["score"] * 1000
    result = _run(tmp_path, user_lists=lists, drift=_live(GOOD_USER_LISTS))
    assert not result.success
    assert _lines_with(result, "scores drifted above the live version's range")


def test_without_a_live_version_no_drift_is_checked(tmp_path: Path) -> None:
    result = _run(tmp_path, drift=None)
    assert result.success and not any(k.startswith("drift_") for k in result.statistics)
    assert "list_drift" not in json.loads(result.results_path.read_text())["validations"]

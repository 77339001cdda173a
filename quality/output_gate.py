"""Great Expectations gate on the recommendation lists written by one pipeline run.

A run produces three frames: per-user lists (``user_id, rank, item_id, score, reason_code, reason_text``),
per-segment lists (same, keyed by ``segment``) and the catalog it ranked from (``item_id, in_stock``).
:func:`validate_run_output` checks them with Great Expectations (GX 1.x) and returns a :class:`GateResult`.

What GX validates
-----------------
Raw rows are not enough for list-level properties, passing the catalog as an expectation value set does
not scale (it can hold 100k items), and a run's rows (30 per shopper) must not all sit in one process, so
pandas first folds the rows, a block of whole lists at a time, into one row per list, and GX validates
that table against its own Expectation Suite (one suite per list kind). Each row-level property becomes a
*witness* column: the first item of the list that breaks it, null when none does, so a failure still
names the list and the item.

``user_lists`` / ``segment_lists`` (one row per list: ``n_items``, ``min_rank``, ``max_rank``,
``n_distinct_ranks`` and the witnesses; rows whose ``item_id`` is null are placeholders for an empty
list)
    * the list key is never null, and no list is split across blocks (the key is unique);
    * no item twice in one list (``duplicate_item`` is null);
    * scores are present (``missing_score_item``) and finite (``infinite_score_item``);
    * every item is in the catalog (``unknown_item``, by a hash lookup) and in stock
      (``out_of_stock_item``; an unknown item fails only the catalog check);
    * no empty list (``n_items >= 1``);
    * every list has the expected length ``min(list_length, in-stock catalog items)``;
    * ranks are ``1..n`` without gaps or repeats (``min_rank == 1``, ``max_rank == n_items``,
      ``n_distinct_ranks == n_items``);
    * users only: distinct users with a non-empty list ``>= ceil(min_user_coverage * active_users)``
      (``ExpectColumnUniqueValueCountToBeBetween`` on ``covered_user_id``, null for empty lists);
    * segments only: the ``global`` segment is present.

Run-dependent bounds (expected list length, minimum covered users) are GX suite parameters
(``{"$PARAMETER": ...}``) filled in at ``Checkpoint.run`` time, so the suites themselves are constant
and every run's results record the resolved values.

Each expectation carries ``meta["problem"]`` (e.g. ``"duplicate item in a list"``). All but the two
parametrised ones also carry a ``description``, which Data Docs shows in place of GX's generic sentence
(the parametrised ones keep GX's sentence because it is where the docs show the resolved bound).
Failure lines read ``"<table>: <problem>: <expectation>(<resolved kwargs>); observed <value, or
unexpected count and example rows>"``.

Storage layout under ``quality_dir``
------------------------------------
``gx/``
    A File Data Context, created on the first call and reused afterwards. Data source, assets, suites,
    validation definitions and checkpoints have fixed names and are only (re)written when missing or
    when their definition changed, so steady-state runs only read the configuration. The set-up runs
    under an ``flock`` on ``quality_dir/.gx.lock`` so that concurrent first runs do not race. GX keeps
    every run's validation results in ``gx/uncommitted/validations/``.
``runs/<run_id>/results.json``
    The gate verdict, failure lines, statistics, parameters and the four GX validation results.
``runs/<run_id>/data_docs/index.html``
    Data Docs for this run only: the context gets an in-memory (never saved) site whose base directory is
    the run's folder, built once after the checkpoints with this run's validation results
    (the same call ``UpdateDataDocsAction`` makes, but once instead of once per checkpoint). The site
    index lists the pages found in its own folder, hence only this run's validations. A re-run of the
    same ``run_id`` replaces that folder's docs and ``results.json``.

There is one checkpoint per table rather than one for all because ``Checkpoint.run``'s
``batch_parameters`` (which carry the dataframe) apply to every validation definition of a checkpoint.

GX usage statistics are switched off (``GX_ANALYTICS_ENABLED=false`` and ``analytics_enabled: false`` in
the context config) and so are its tqdm progress bars.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.exceptions import DataContextError

__all__ = ["CHECKED_COLUMNS", "DriftBaseline", "GateResult", "ListBlocks", "validate_run_output"]

_DATASOURCE: Final = "carousel_run_output"
_BATCH_DEFINITION: Final = "whole_frame"
_NAME_PREFIX: Final = "carousel.run_output."
# A site name that is only ever configured in memory, pointing at the current run's folder.
_RUN_SITE: Final = "carousel_run_docs"

_USER_LISTS: Final = "user_lists"
_SEGMENT_LISTS: Final = "segment_lists"
_TABLES: Final = (_USER_LISTS, _SEGMENT_LISTS)
# One row of drift figures against the live version; validated only when there is a live version.
_DRIFT: Final = "list_drift"
_ALL_TABLES: Final = (*_TABLES, _DRIFT)

_LIST_COLUMNS: Final = ("rank", "item_id", "score", "reason_code", "reason_text")
# The columns of a list the gate reads (the reason columns are not checked).
CHECKED_COLUMNS: Final = ("rank", "item_id", "score")
_RUN_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=-]{0,199}")
# How many offending rows a failure line quotes; the full sample is in results.json.
_EXAMPLES_PER_LINE: Final = 3


# One frame of lists, or frames of whole lists read one at a time.
ListBlocks = pd.DataFrame | Iterable[pd.DataFrame]


@dataclass(frozen=True)
class GateResult:
    """Outcome of the output gate for one run.

    Attributes
    ----------
    success
        True when every expectation of every suite passed.
    failures
        One readable line per failed expectation: table/suite, the problem, the expectation with its
        resolved arguments, and the observed value.
    results_path
        ``quality_dir/runs/<run_id>/results.json``.
    docs_index
        ``quality_dir/runs/<run_id>/data_docs/index.html``.
    statistics
        Sizes, coverage, expectation counts and elapsed time of the gate.
    """

    success: bool
    failures: list[str]
    results_path: Path
    docs_index: Path
    statistics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftBaseline:
    """What the run's lists are compared with: the live version's lists of a sample of the run's shoppers.

    The drift table holds one row: the mean share of a shopper's live items still in their new list
    (`mean_overlap`), the new scores' 1st and 99th percentiles, and how many distinct items the new lists
    of those shoppers show against their live lists (`item_coverage_ratio`). Each has a bound: overlap and
    coverage ratio a floor, the scores the live p01..p99 range widened by `score_tolerance` times its
    width on each side (a retrained ranker may shift scores a little, not by orders of magnitude).
    """

    version: str
    live_lists: pd.DataFrame  # user_id, rank, item_id, score
    min_list_overlap: float = 0.1
    score_tolerance: float = 1.0
    min_item_coverage_ratio: float = 0.5


@dataclass(frozen=True)
class _Check:
    """One expectation plus the short problem label used in failure lines."""

    problem: str
    expectation: gxe.Expectation


def validate_run_output(
    *,
    run_id: str,
    user_lists: ListBlocks,
    segment_lists: ListBlocks,
    catalog: pd.DataFrame,
    active_users: int,
    list_length: int,
    min_user_coverage: float,
    quality_dir: Path,
    drift: DriftBaseline | None = None,
) -> GateResult:
    """Validate a run's recommendation lists with Great Expectations and keep the evidence.

    Parameters
    ----------
    run_id
        Identifier of the pipeline run; used as a folder name and as the GX run name. Letters, digits
        and ``._:+=-``, starting with a letter or digit.
    user_lists
        A frame, or frames read one at a time (e.g. the blocks of a sorted lists file), with columns
        ``user_id, rank, item_id, score`` (others are ignored). A row whose ``item_id`` is null stands
        for an empty list of that user. Each frame holds whole lists: a list found in two frames fails
        the gate.
    segment_lists
        The same, keyed by ``segment``.
    catalog
        Columns ``item_id, in_stock``. Duplicate item ids are allowed; such an item counts as in stock
        only if every row says so. A null ``in_stock`` counts as out of stock.
    active_users
        Number of active users the coverage share refers to.
    list_length
        Configured list length; the expected length is ``min(list_length, in-stock catalog items)``.
    min_user_coverage
        Minimum share (0..1) of ``active_users`` that must have a non-empty list.
    quality_dir
        Root for the GX File Data Context (``gx/``) and per-run output (``runs/<run_id>/``).
    drift
        The live version's lists of some of the run's shoppers; when given (and not empty), the drift
        table is validated too (see `DriftBaseline`).

    Returns
    -------
    GateResult
        Verdict, failure lines, paths of ``results.json`` and of the run's Data Docs index, statistics.

    Raises
    ------
    ValueError
        If ``run_id`` is not a safe folder name, a frame lacks a required column, or a numeric argument
        is out of range. These are caller errors, not data-quality failures.
    """
    started = time.perf_counter()
    _check_arguments(run_id, active_users, list_length, min_user_coverage)
    _require_columns("catalog", catalog, ("item_id", "in_stock"))

    stock = _stock_by_item(catalog)
    parameters = _list_parameters(int(stock.sum()), active_users, list_length, min_user_coverage)
    sampled = frozenset() if drift is None else frozenset(drift.live_lists["user_id"].dropna().astype(str))
    user_table, sampled_rows = _list_table("user_lists", user_lists, "user_id", stock, sampled)
    segment_table, _ = _list_table("segment_lists", segment_lists, "segment", stock, frozenset())
    # Null for empty lists: GX's distinct-value count skips nulls, so only non-empty lists cover a user.
    user_table["covered_user_id"] = user_table["user_id"].where(user_table["n_items"] > 0)
    frames = {_USER_LISTS: user_table, _SEGMENT_LISTS: segment_table}
    drift_row: dict[str, float] = {}
    if drift is not None and not drift.live_lists.empty:
        drift_row, drift_parameters = _drift_figures(sampled_rows, drift)
        # No sampled shopper has a new list: overlap and coverage would be 0 by construction, not drift.
        if drift_row["compared_users"] > 0:
            frames[_DRIFT] = pd.DataFrame([drift_row])
            parameters.update(drift_parameters)

    quality_dir = Path(quality_dir)
    run_dir = quality_dir / "runs" / run_id
    docs_dir = run_dir / "data_docs"
    # A re-run of the same run id replaces its docs instead of mixing pages of both attempts.
    _empty_folder(docs_dir)
    validations = _run_checkpoints(quality_dir, docs_dir, run_id, frames, parameters)

    failures = [line for table, v in validations.items() for line in _failure_lines(table, v.to_json_dict())]
    success = all(v.success for v in validations.values())
    statistics = _output_statistics(frames, validations, stock, active_users, parameters, drift_row)
    statistics["elapsed_seconds"] = time.perf_counter() - started

    results_path = run_dir / "results.json"
    _write_json(
        results_path,
        {
            "run_id": run_id,
            "success": success,
            "failures": failures,
            "statistics": statistics,
            "expectation_parameters": parameters,
            "data_docs": str(docs_dir / "index.html"),
            "validations": {table: v.to_json_dict() for table, v in validations.items()},
        },
    )
    return GateResult(
        success=success,
        failures=failures,
        results_path=results_path,
        docs_index=docs_dir / "index.html",
        statistics=statistics,
    )


# --------------------------------------------------------------------------------------------------
# The gate's steps
# --------------------------------------------------------------------------------------------------


def _list_parameters(
    in_stock_items: int, active_users: int, list_length: int, min_user_coverage: float
) -> dict[str, Any]:
    """The run-dependent bounds of the size suites, passed to GX as suite parameters."""
    return {
        "expected_list_length": min(list_length, in_stock_items),
        # round() first: 0.07 * 100 is 7.000000000000001 in floating point and must not become 8.
        "min_covered_users": math.ceil(round(min_user_coverage * active_users, 9)),
    }


def _empty_folder(path: Path) -> None:
    """Make ``path`` an empty folder, removing whatever an earlier attempt left in it."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def _run_checkpoints(
    quality_dir: Path,
    docs_dir: Path,
    run_id: str,
    frames: Mapping[str, pd.DataFrame],
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """Validate each table with its own checkpoint, then build the run's Data Docs; results by table."""
    context = _open_context(quality_dir)
    _point_run_site_at(context, docs_dir)
    gx_run_id = RunIdentifier(run_name=run_id)
    validations: dict[str, Any] = {}
    result_ids: list[Any] = []
    for table, frame in frames.items():
        checkpoint = context.checkpoints.get(_NAME_PREFIX + table)
        # Batch parameters go to every validation definition of a checkpoint, so each table (each its
        # own dataframe) has its own checkpoint.
        checkpoint_result = checkpoint.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            run_id=gx_run_id,
        )
        ((result_id, validation),) = checkpoint_result.run_results.items()
        validations[table] = validation
        result_ids.append(result_id)
    # One Data Docs build for all the results. An UpdateDataDocsAction on each checkpoint would do the
    # same work once per table, and each of those builds rebuilds the whole site index.
    context.build_data_docs(site_names=[_RUN_SITE], resource_identifiers=result_ids)
    return validations


def _output_statistics(
    frames: Mapping[str, pd.DataFrame],
    validations: Mapping[str, Any],
    stock: pd.Series,
    active_users: int,
    parameters: Mapping[str, Any],
    drift_row: Mapping[str, float],
) -> dict[str, float]:
    """Sizes, coverage and expectation counts of the run, for the gate's result and results.json."""
    users, segments = frames[_USER_LISTS], frames[_SEGMENT_LISTS]
    covered_users = int(users["covered_user_id"].nunique())
    evaluated = sum(int(v.statistics["evaluated_expectations"]) for v in validations.values())
    unsuccessful = sum(int(v.statistics["unsuccessful_expectations"]) for v in validations.values())
    return {
        "user_lists": float(users["user_id"].notna().sum()),
        "user_rows": float(users["n_rows"].sum()),
        "covered_users": float(covered_users),
        "active_users": float(active_users),
        "user_coverage": covered_users / active_users if active_users else 0.0,
        "min_covered_users": float(parameters["min_covered_users"]),
        "expected_list_length": float(parameters["expected_list_length"]),
        "segment_lists": float(segments["segment"].notna().sum()),
        "segment_rows": float(segments["n_rows"].sum()),
        "catalog_items": float(len(stock)),
        "in_stock_items": float(int(stock.sum())),
        "evaluated_expectations": float(evaluated),
        "unsuccessful_expectations": float(unsuccessful),
        **{f"drift_{k}": v for k, v in drift_row.items()},
    }


# --------------------------------------------------------------------------------------------------
# Input checks and pandas derivations
# --------------------------------------------------------------------------------------------------


def _check_arguments(run_id: str, active_users: int, list_length: int, min_user_coverage: float) -> None:
    # run_id becomes a path component: refuse separators and "..".
    if not _RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise ValueError(f"run_id {run_id!r} is not a safe folder name")
    if active_users < 0:
        raise ValueError(f"active_users must be >= 0, got {active_users}")
    if list_length < 1:
        raise ValueError(f"list_length must be >= 1, got {list_length}")
    if not 0.0 <= min_user_coverage <= 1.0:
        raise ValueError(f"min_user_coverage must be within [0, 1], got {min_user_coverage}")


def _require_columns(name: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}")


def _stock_by_item(catalog: pd.DataFrame) -> pd.Series:
    """Boolean in-stock flag indexed by unique item id."""
    flags = catalog["in_stock"].astype("boolean").fillna(False).astype(bool)
    # Conflicting duplicate rows: only recommend the item if every row says it is in stock.
    return flags.groupby(catalog["item_id"].to_numpy()).all()


# Witness columns: the first item of a list that breaks a row-level property (null when none does).
_WITNESSES: Final = (
    "duplicate_item",
    "missing_score_item",
    "infinite_score_item",
    "unknown_item",
    "out_of_stock_item",
)
_RANK_FIGURES: Final = ("n_items", "min_rank", "max_rank", "n_distinct_ranks")


def _list_table(
    name: str, lists: ListBlocks, key: str, stock: pd.Series, sampled: AbstractSet[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per list of every block, and the rows of the `sampled` owners (for the drift table)."""
    summaries: list[pd.DataFrame] = []
    kept: list[pd.DataFrame] = []
    for block in [lists] if isinstance(lists, pd.DataFrame) else lists:
        _require_columns(name, block, (key, *CHECKED_COLUMNS))
        summaries.append(_fold_block(block, key, stock))
        if sampled:
            kept.append(block.loc[block[key].astype(str).isin(sampled), [key, *CHECKED_COLUMNS]])
    table = pd.concat(summaries, ignore_index=True) if summaries else _fold_block(_empty(key), key, stock)
    rows = pd.concat(kept, ignore_index=True) if kept else _empty(key)
    return table, rows


def _empty(key: str) -> pd.DataFrame:
    return pd.DataFrame({key: pd.Series(dtype=object), "rank": [], "item_id": [], "score": []})


def _fold_block(block: pd.DataFrame, key: str, stock: pd.Series) -> pd.DataFrame:
    """Fold a block of whole lists into one row per list: rank figures and witnesses. Rows without a
    list key become one row with a null key (and no figures), so GX reports them."""
    keyed = block[key].notna().to_numpy()
    lists = block.loc[keyed, [key, *CHECKED_COLUMNS]]
    items = lists[lists["item_id"].notna().to_numpy()]
    owners = pd.Index(lists[key].unique(), name=key)

    ranks = items.groupby(key, sort=False)["rank"].agg(["size", "min", "max", "nunique"])
    ranks.columns = pd.Index(_RANK_FIGURES)
    table = ranks.reindex(owners)
    table["n_items"] = table["n_items"].fillna(0).astype("int64")
    table["n_distinct_ranks"] = table["n_distinct_ranks"].fillna(0).astype("int64")
    # Rows that carry an item (an empty list's placeholder row does not), as the statistics count them.
    table["n_rows"] = table["n_items"]

    scores = pd.to_numeric(items["score"]).to_numpy(dtype="float64", na_value=np.nan)
    # A hash lookup against the catalog index: O(rows), whatever the catalog's size.
    looked_up = items["item_id"].map(stock)
    broken = {
        "duplicate_item": items.duplicated([key, "item_id"]).to_numpy(),
        "missing_score_item": np.isnan(scores),
        "infinite_score_item": np.isinf(scores),
        "unknown_item": looked_up.isna().to_numpy(),
        "out_of_stock_item": looked_up.eq(False).to_numpy(),
    }
    for column in _WITNESSES:
        first = items.loc[broken[column], [key, "item_id"]].drop_duplicates(key)
        table[column] = _strings(first.set_index(key)["item_id"].reindex(owners)).array
    table = table.reset_index()
    table[key] = _strings(table[key]).array

    unkeyed = int((~keyed & block["item_id"].notna().to_numpy()).sum())
    if (~keyed).any():
        # GX skips nulls in the figures' checks, so these rows fail only the missing-key check.
        orphan = pd.DataFrame({key: pd.array([None], dtype="string[pyarrow]"), "n_rows": [unkeyed]})
        table = pd.concat([table, orphan], ignore_index=True)
    return table


def _strings(values: pd.Series) -> pd.Series:
    # GX runs a null scan over the domain columns for every metric; on Python-object strings that scan
    # dominates the gate's run time, on Arrow strings it reads a validity bitmap.
    return pd.Series(values.astype(object).to_numpy(), dtype="string[pyarrow]")


# --------------------------------------------------------------------------------------------------
# Expectation suites
# --------------------------------------------------------------------------------------------------


def _drift_figures(
    sampled_rows: pd.DataFrame, drift: DriftBaseline
) -> tuple[dict[str, float], dict[str, float]]:
    """The drift row (new lists of the sampled shoppers against their live lists) and its bounds. Both
    sides' score percentiles come from the same shoppers."""
    live = drift.live_lists.dropna(subset=["item_id"])
    new = sampled_rows.dropna(subset=["item_id"])
    new = new[new["user_id"].isin(pd.Index(live["user_id"].unique()))]
    compared = new["user_id"].nunique()
    pairs_live = live[["user_id", "item_id"]].drop_duplicates()
    kept = pairs_live.merge(new[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"])
    per_user = kept.groupby("user_id").size() / pairs_live.groupby("user_id").size()
    per_user = per_user.reindex(new["user_id"].unique()).fillna(0.0)
    scores = pd.to_numeric(new["score"]).to_numpy(dtype="float64", na_value=np.nan)
    scores = scores[np.isfinite(scores)]
    live_scores = live["score"].to_numpy(dtype="float64")
    low, high = np.percentile(live_scores, [1, 99]) if len(live_scores) else (0.0, 0.0)
    width = max(float(high - low), 1e-6)
    row = {
        "compared_users": float(compared),
        "mean_overlap": float(per_user.mean()) if len(per_user) else 0.0,
        "score_p01": float(np.percentile(scores, 1)) if len(scores) else 0.0,
        "score_p99": float(np.percentile(scores, 99)) if len(scores) else 0.0,
        "item_coverage_ratio": float(new["item_id"].nunique() / max(1, live["item_id"].nunique())),
    }
    parameters = {
        "min_list_overlap": float(drift.min_list_overlap),
        "live_score_low": float(low) - drift.score_tolerance * width,
        "live_score_high": float(high) + drift.score_tolerance * width,
        "min_item_coverage_ratio": float(drift.min_item_coverage_ratio),
    }
    return row, parameters


def _drift_checks() -> list[_Check]:
    return [
        _Check(
            "lists changed too much against the live version",
            gxe.ExpectColumnValuesToBeBetween(
                column="mean_overlap",
                min_value={"$PARAMETER": "min_list_overlap"},
                notes="Mean share of a shopper's live items still in their new list >= min_list_overlap.",
            ),
        ),
        _Check(
            "scores drifted below the live version's range",
            gxe.ExpectColumnValuesToBeBetween(
                column="score_p01",
                min_value={"$PARAMETER": "live_score_low"},
                notes="1st percentile of the new scores >= live p01 - tolerance * (live p99 - p01).",
            ),
        ),
        _Check(
            "scores drifted above the live version's range",
            gxe.ExpectColumnValuesToBeBetween(
                column="score_p99",
                max_value={"$PARAMETER": "live_score_high"},
                notes="99th percentile of the new scores <= live p99 + tolerance * (live p99 - p01).",
            ),
        ),
        _Check(
            "item coverage collapsed against the live version",
            gxe.ExpectColumnValuesToBeBetween(
                column="item_coverage_ratio",
                min_value={"$PARAMETER": "min_item_coverage_ratio"},
                notes="Distinct items in the new lists of the compared shoppers / in their live lists.",
            ),
        ),
    ]


def _checks(table: str) -> list[_Check]:
    """The expectations of one table's suite, each with its problem label."""
    if table == _DRIFT:
        return _drift_checks()
    key = "user_id" if table == _USER_LISTS else "segment"
    checks = [*_key_checks(key), *_witness_checks(), *_size_checks()]
    if table == _USER_LISTS:
        checks.append(
            _Check(
                "user coverage too low",
                gxe.ExpectColumnUniqueValueCountToBeBetween(
                    column="covered_user_id",
                    min_value={"$PARAMETER": "min_covered_users"},
                    # No description: Data Docs would show it instead of GX's sentence, which is the
                    # only place the docs show the run's resolved bound.
                    notes="Coverage: distinct users with a non-empty list >= "
                    "ceil(min_user_coverage * active_users).",
                ),
            )
        )
    else:
        checks.append(
            _Check(
                "missing 'global' segment",
                gxe.ExpectColumnDistinctValuesToContainSet(
                    column="segment",
                    value_set=["global"],
                    description="Segment lists include the 'global' segment",
                ),
            )
        )
    return checks


def _key_checks(key: str) -> list[_Check]:
    return [
        _Check(
            "row without a list key",
            gxe.ExpectColumnValuesToNotBeNull(
                column=key, description=f"Every row belongs to a list ({key} is not null)"
            ),
        ),
        _Check(
            "list split across blocks",
            # The loader writes a list per run of rows with one key: a list in two places is two writes.
            gxe.ExpectColumnValuesToBeUnique(
                column=key, description=f"Each list's rows are together ({key} appears in one block)"
            ),
        ),
    ]


def _witness_checks() -> list[_Check]:
    def witness(column: str, problem: str, description: str) -> _Check:
        return _Check(problem, gxe.ExpectColumnValuesToBeNull(column=column, description=description))

    return [
        witness("duplicate_item", "duplicate item in a list", "No duplicate item within a list"),
        witness("missing_score_item", "NaN or missing score", "Scores are present (not null / NaN)"),
        witness("infinite_score_item", "infinite score", "Scores are finite (no +inf / -inf)"),
        witness("unknown_item", "item not in catalog", "Every recommended item is in the catalog"),
        # An item missing from the catalog has no stock flag: it fails only the check above.
        witness("out_of_stock_item", "out-of-stock item", "Every recommended catalog item is in stock"),
    ]


def _size_checks() -> list[_Check]:
    return [
        _Check(
            "empty list",
            gxe.ExpectColumnValuesToBeBetween(
                column="n_items", min_value=1, description="No list is empty (n_items >= 1)"
            ),
        ),
        _Check(
            "wrong list length",
            gxe.ExpectColumnValuesToBeBetween(
                column="n_items",
                min_value={"$PARAMETER": "expected_list_length"},
                max_value={"$PARAMETER": "expected_list_length"},
                # No description, so Data Docs show the resolved bound (see the coverage check).
                notes="Every list has the expected length: min(list_length, in-stock catalog items).",
            ),
        ),
        _Check(
            "ranks do not start at 1",
            gxe.ExpectColumnValuesToBeBetween(
                column="min_rank", min_value=1, max_value=1, description="Ranks start at 1 (min_rank == 1)"
            ),
        ),
        _Check(
            "ranks not contiguous 1..n",
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="max_rank",
                column_B="n_items",
                # Empty lists have no ranks; they are reported by the empty-list check.
                ignore_row_if="either_value_is_missing",
                description="Ranks are contiguous 1..n: the highest rank equals the list size",
            ),
        ),
        _Check(
            "duplicate rank in a list",
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="n_distinct_ranks",
                column_B="n_items",
                description="Ranks are unique within a list (n_distinct_ranks == n_items)",
            ),
        ),
    ]


def _expectations(table: str) -> list[gxe.Expectation]:
    expectations = []
    for check in _checks(table):
        # The label travels in meta so failure lines can be rebuilt from the stored results alone.
        check.expectation.meta = {"problem": check.problem}
        expectations.append(check.expectation)
    return expectations


def _index_columns(table: str) -> list[str]:
    if table == _DRIFT:
        return ["compared_users"]
    return ["user_id" if table == _USER_LISTS else "segment"]


# --------------------------------------------------------------------------------------------------
# Data Context set-up (idempotent, once per call)
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_context(quality_dir: Path) -> Any:
    """Open (or create) the File Data Context under ``quality_dir/gx`` with all gate objects present."""
    # No network here: GX must not try to send usage statistics. Set before the context is built.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    with _locked(quality_dir / ".gx.lock"):
        context = gx.get_context(mode="file", project_root_dir=str(quality_dir))
        _ensure_context_settings(context)
        _ensure_datasource(context)
        for table in _ALL_TABLES:
            _ensure_suite(context, table)
            _ensure_validation_definition(context, table)
            _ensure_checkpoint(context, table)
    return context


def _ensure_context_settings(context: Any) -> None:
    progress = context.variables.progress_bars
    # A fresh context holds a ProgressBarsConfig, one loaded from YAML a plain dict.
    bars_on = progress is None or (
        progress.get("globally", True) if isinstance(progress, Mapping) else progress.globally
    )
    if context.variables.analytics_enabled is not False or bars_on:
        context.variables.analytics_enabled = False
        # tqdm bars would flood the pipeline logs with one bar per metric batch.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()


def _ensure_datasource(context: Any) -> None:
    try:
        datasource = context.data_sources.get(_DATASOURCE)
    except KeyError:
        datasource = context.data_sources.add_pandas(name=_DATASOURCE)
    for table in _ALL_TABLES:
        try:
            asset = datasource.get_asset(table)
        except LookupError:
            asset = datasource.add_dataframe_asset(name=table)
        try:
            asset.get_batch_definition(_BATCH_DEFINITION)
        except KeyError:
            asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)


def _signature(expectations: Sequence[gxe.Expectation]) -> list[dict[str, Any]]:
    # Expectation ids are assigned on save, so compare everything but the id.
    return [{k: v for k, v in e.configuration.to_json_dict().items() if k != "id"} for e in expectations]


def _ensure_suite(context: Any, table: str) -> None:
    name = _NAME_PREFIX + table
    desired = _expectations(table)
    # Build suites through the constructor only: ExpectationSuite(name=...).add_expectation() writes
    # straight into an already *stored* suite of the same name, duplicating its expectations.
    try:
        stored = context.suites.get(name)
    except DataContextError:
        context.suites.add(gx.ExpectationSuite(name=name, expectations=desired))
        return
    # Rewrite only when the code changed the suite: steady-state runs never write shared config.
    if _signature(stored.expectations) != _signature(desired):
        context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=desired))


def _ensure_validation_definition(context: Any, table: str) -> None:
    name = _NAME_PREFIX + table
    batch_definition = (
        context.data_sources.get(_DATASOURCE).get_asset(table).get_batch_definition(_BATCH_DEFINITION)
    )
    try:
        stored = context.validation_definitions.get(name)
        if stored.suite.name == name and stored.data.id == batch_definition.id:
            return
    except DataContextError:
        pass
    context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=context.suites.get(name))
    )


def _result_format(table: str) -> dict[str, Any]:
    # SUMMARY plus the list key (and item) of offending rows, so failures say *which* list is wrong.
    return {"result_format": "SUMMARY", "unexpected_index_column_names": _index_columns(table)}


def _ensure_checkpoint(context: Any, table: str) -> None:
    name = _NAME_PREFIX + table
    try:
        stored = context.checkpoints.get(name)
        if (
            [vd.name for vd in stored.validation_definitions] == [name]
            and not stored.actions
            and _json_equal(stored.result_format, _result_format(table))
        ):
            return
    except DataContextError:
        pass
    context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[context.validation_definitions.get(name)],
            actions=[],
            result_format=_result_format(table),
        )
    )


def _json_equal(left: Any, right: Any) -> bool:
    return json.dumps(left, sort_keys=True, default=str) == json.dumps(right, sort_keys=True, default=str)


def _point_run_site_at(context: Any, docs_dir: Path) -> None:
    """Register this run's Data Docs site in memory only (never saved to great_expectations.yml)."""
    sites = dict(context.variables.data_docs_sites or {})
    sites[_RUN_SITE] = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    context.variables.data_docs_sites = sites


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def _failure_lines(table: str, validation: Mapping[str, Any]) -> list[str]:
    lines = []
    for result in validation.get("results", []):
        if result.get("success"):
            continue
        config = result.get("expectation_config", {})
        problem = (config.get("meta") or {}).get("problem", "failed expectation")
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
        arguments = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        expectation = f"{config.get('type', '?')}({arguments})"
        lines.append(
            f"{table}: {problem}: {expectation}; observed {_observed(result, _index_columns(table))}"
        )
    return lines


def _observed(result: Mapping[str, Any], index_columns: Sequence[str]) -> str:
    exception = result.get("exception_info") or {}
    if exception.get("raised_exception"):
        return f"an exception: {exception.get('exception_message')}"
    details = result.get("result") or {}
    if details.get("partial_missing_list"):
        # Set-containment expectations report what is absent, with observed_value left None.
        return f"missing {_short(details['partial_missing_list'])}"
    if "observed_value" in details:
        return f"value {_short(details['observed_value'])}"
    if "unexpected_count" in details:
        text = (
            f"{details['unexpected_count']} of {details.get('element_count', '?')} rows unexpected "
            f"({float(details.get('unexpected_percent') or 0.0):.3g}%)"
        )
        examples = details.get("partial_unexpected_index_list") or details.get("partial_unexpected_list")
        # Duplicates come back once per offending row; quote each distinct example once.
        # GX sorts an example's columns by name; the list key reads better first.
        first = [_key_first(x, index_columns) for x in examples or []]
        shown = list(dict.fromkeys(_short(x) for x in first))[:_EXAMPLES_PER_LINE]
        if shown:
            text += ", e.g. " + "; ".join(shown)
        return text
    return _short(details) or "no result"


def _key_first(example: Any, index_columns: Sequence[str]) -> Any:
    if not isinstance(example, dict):
        return example
    return {**{k: example[k] for k in index_columns if k in example}, **example}


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, float | np.floating):
        number = float(value)
        # GX stores numeric kwargs as floats; "min_value=3" reads better than "min_value=3.0".
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return repr(number) if math.isfinite(number) else str(number)
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _jsonable(value: Any) -> Any:
    """Strict-JSON copy: non-finite floats become strings ("inf", "nan"), numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a reader never sees half a file.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(_jsonable(payload), handle, indent=2, allow_nan=False, default=str)
        tmp = Path(handle.name)
    # NamedTemporaryFile creates 0600; results are meant to be read by other tools and users.
    tmp.chmod(0o644)
    os.replace(tmp, path)

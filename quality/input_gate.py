"""Great Expectations gate on the events one pipeline run reads (its inputs).

The gate has two halves so that it scales to tens of millions of events:

:func:`quality.input_metrics.input_metrics`
    A pure Spark transform (DataFrame in, DataFrame out, no I/O, no wall clock: the run's
    ``interval_end`` is passed in) that reduces the events to ONE row of counts. Raw events never
    reach pandas or GX. The pipeline's gate (``jobs.stages.check_inputs``) builds the same row from
    ``row_keys`` over the lake parts it has not read yet, merged into the summary it keeps of the others
    (``quality.lake_scan``, ``quality.input_ledger``).
:func:`validate_run_inputs`
    Takes that row as pandas (``input_metrics(...).toPandas()``), derives two ratios (``duplicate_rate``
    and ``volume_ratio`` against recent successful runs) and validates the one-row table with one GX
    Expectation Suite, ``carousel_inputs``.

What GX validates (one row, so ``expect_column_max/min_to_be_between`` report the value itself)
--------------------------------------------------------------------------------------------------
* ``rows >= 1`` (the run has input at all);
* ``null_<column> == 0`` for the required event columns (session_id, item_id, event_type, ts,
  quantity, price);
* ``unknown_event_types == 0`` (event types outside :data:`carousel.schema.EVENT_TYPES`);
* ``future_rows == 0`` (timestamps after the run's interval end);
* ``negative_or_bad_price_rows == 0`` (price < 0, NaN or infinite) and ``bad_quantity_rows == 0``;
* ``duplicate_rate <= max_duplicate_rate`` (identical rows over all canonical columns);
* ``volume_ratio >= min_volume_ratio``: rows divided by the median row count of recent successful
  runs (1.0 without history), i.e. a sudden drop in input volume.

The two bounds are GX suite parameters filled in at ``Checkpoint.run`` time, so the suite is constant and
every run's results record the resolved values. Failure lines read ``"inputs: <problem>:
<expectation>(<kwargs>); observed value <v>"``.

Storage layout under ``quality_dir`` (shared with :mod:`quality.output_gate`)
------------------------------------------------------------------------------
``gx/``
    The same File Data Context as the output gate; this gate adds its own data source
    (``carousel_run_inputs``), suite, validation definition and checkpoint (all ``carousel_inputs``).
``runs/<run_id>/inputs/results.json``
    Verdict, failure lines, the metrics row, derived ratios, parameters and the GX validation result.
``runs/<run_id>/inputs/data_docs/index.html``
    Data Docs of this run's input validation only; the output gate's ``runs/<run_id>/data_docs`` is
    never touched. A re-run of the same ``run_id`` replaces this folder.
"""

from __future__ import annotations

import statistics as stats
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.exceptions import DataContextError

from carousel.schema import EVENT_TYPES
from quality.input_metrics import _COUNT_COLUMNS, REQUIRED_COLUMNS
from quality.output_gate import (
    _RUN_ID_PATTERN,
    _RUN_SITE,
    GateResult,
    _empty_folder,
    _failure_lines,
    _json_equal,
    _locked,
    _open_context,
    _point_run_site_at,
    _signature,
    _write_json,
)

__all__ = ["validate_run_inputs"]

_DATASOURCE: Final = "carousel_run_inputs"
_ASSET: Final = "input_metrics"
_BATCH_DEFINITION: Final = "whole_frame"
_NAME: Final = "carousel_inputs"
_TABLE_LABEL: Final = "inputs"

# --------------------------------------------------------------------------------------------------
# GX: the one-row metrics table
# --------------------------------------------------------------------------------------------------


def validate_run_inputs(
    *,
    run_id: str,
    metrics: pd.DataFrame,
    recent_volumes: Sequence[int],
    quality_dir: Path,
    max_duplicate_rate: float = 0.05,
    min_volume_ratio: float = 0.5,
) -> GateResult:
    """Validate a run's input metrics with Great Expectations and keep the evidence.

    Parameters
    ----------
    run_id
        Identifier of the pipeline run; a folder name and the GX run name. Letters, digits and
        ``._:+=-``, starting with a letter or digit.
    metrics
        The single row returned by :func:`input_metrics`, as pandas (``.toPandas()``).
    recent_volumes
        ``rows`` of the inputs of recent successful runs (may be empty). Their median is the baseline
        of the volume check; without history (or a zero median) the ratio is 1.0.
    quality_dir
        Root of the GX File Data Context (``gx/``) and per-run output (``runs/<run_id>/inputs/``).
    max_duplicate_rate
        Largest accepted share (0..1) of duplicate rows.
    min_volume_ratio
        Smallest accepted ``rows / median(recent_volumes)``.

    Returns
    -------
    GateResult
        Verdict, failure lines, ``runs/<run_id>/inputs/results.json``, the run's input Data Docs index
        and statistics (the metrics, derived ratios and gate timing).

    Raises
    ------
    ValueError
        If ``run_id`` is not a safe folder name, ``metrics`` is not one row with the metric columns, or
        a bound is out of range. These are caller errors, not data-quality failures.
    """
    started = time.perf_counter()
    _check_input_arguments(run_id, metrics, recent_volumes, max_duplicate_rate, min_volume_ratio)

    counts = {c: int(metrics[c].iloc[0]) for c in _COUNT_COLUMNS}
    table, ratios = _derive_table(counts, recent_volumes)
    parameters: dict[str, Any] = {
        "max_duplicate_rate": float(max_duplicate_rate),
        "min_volume_ratio": float(min_volume_ratio),
    }

    quality_dir = Path(quality_dir)
    run_dir = quality_dir / "runs" / run_id / "inputs"
    docs_dir = run_dir / "data_docs"
    # A re-run of the same run id replaces its input docs; the output gate's folder is a sibling.
    _empty_folder(docs_dir)
    validation = _run_checkpoint(quality_dir, docs_dir, run_id, table, parameters)

    validation_json = validation.to_json_dict()
    failures = _failure_lines(_TABLE_LABEL, validation_json)
    success = bool(validation.success)
    statistics = _input_statistics(counts, ratios, recent_volumes, validation)
    statistics["elapsed_seconds"] = time.perf_counter() - started

    extra = {c: metrics[c].iloc[0] for c in ("max_ts", "distinct_users", "distinct_items") if c in metrics}
    results_path = run_dir / "results.json"
    _write_json(
        results_path,
        {
            "run_id": run_id,
            "success": success,
            "failures": failures,
            "statistics": statistics,
            "metrics": {k: (None if pd.isna(v) else v) for k, v in extra.items()},
            "recent_volumes": [int(v) for v in recent_volumes],
            "expectation_parameters": parameters,
            "data_docs": str(docs_dir / "index.html"),
            "validation": validation_json,
        },
    )
    return GateResult(
        success=success,
        failures=failures,
        results_path=results_path,
        docs_index=docs_dir / "index.html",
        statistics=statistics,
    )


def _check_input_arguments(
    run_id: str,
    metrics: pd.DataFrame,
    recent_volumes: Sequence[int],
    max_duplicate_rate: float,
    min_volume_ratio: float,
) -> None:
    """Reject caller errors (unsafe run id, bounds out of range, not the metrics row) with ValueError."""
    _check_run_id(run_id)
    if not 0.0 <= max_duplicate_rate <= 1.0:
        raise ValueError(f"max_duplicate_rate must be within [0, 1], got {max_duplicate_rate}")
    if min_volume_ratio < 0.0:
        raise ValueError(f"min_volume_ratio must be >= 0, got {min_volume_ratio}")
    if any(v < 0 for v in recent_volumes):
        raise ValueError(f"recent_volumes must be >= 0, got {list(recent_volumes)}")
    missing = [c for c in _COUNT_COLUMNS if c not in metrics.columns]
    if missing or len(metrics) != 1:
        raise ValueError(
            f"metrics must be the one row of input_metrics; rows={len(metrics)}, lacks {missing}"
        )


def _check_run_id(run_id: str) -> None:
    # Thin wrapper: output_gate._check_arguments bundles the run-id check with output-only arguments.
    if not _RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise ValueError(f"run_id {run_id!r} is not a safe folder name")


def _derive_table(
    counts: Mapping[str, int], recent_volumes: Sequence[int]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The one-row table GX validates (the counts plus two ratios), and the ratios with their baseline."""
    rows = counts["rows"]
    baseline = float(stats.median(recent_volumes)) if recent_volumes else 0.0
    ratios = {
        "duplicate_rate": counts["duplicate_rows"] / rows if rows else 0.0,
        # No (usable) history: the volume check has nothing to compare with, so it passes.
        "volume_ratio": rows / baseline if baseline > 0 else 1.0,
        "volume_baseline": baseline,
    }
    table = pd.DataFrame(
        {
            **{c: [v] for c, v in counts.items()},
            "duplicate_rate": [ratios["duplicate_rate"]],
            "volume_ratio": [ratios["volume_ratio"]],
        }
    )
    return table, ratios


def _run_checkpoint(
    quality_dir: Path, docs_dir: Path, run_id: str, table: pd.DataFrame, parameters: dict[str, Any]
) -> Any:
    """Validate the metrics table with the gate's checkpoint and build the run's input Data Docs."""
    context = _open_inputs_context(quality_dir)
    _point_run_site_at(context, docs_dir)
    checkpoint_result = context.checkpoints.get(_NAME).run(
        batch_parameters={"dataframe": table},
        expectation_parameters=parameters,
        run_id=RunIdentifier(run_name=run_id),
    )
    ((result_id, validation),) = checkpoint_result.run_results.items()
    context.build_data_docs(site_names=[_RUN_SITE], resource_identifiers=[result_id])
    return validation


def _input_statistics(
    counts: Mapping[str, int], ratios: Mapping[str, float], recent_volumes: Sequence[int], validation: Any
) -> dict[str, float]:
    """The metrics, derived ratios and expectation counts, for the gate's result and results.json."""
    return {
        **{c: float(v) for c, v in counts.items()},
        **ratios,
        "recent_runs": float(len(recent_volumes)),
        "evaluated_expectations": float(validation.statistics["evaluated_expectations"]),
        "unsuccessful_expectations": float(validation.statistics["unsuccessful_expectations"]),
    }


def _expectations() -> list[gxe.Expectation]:
    """The suite: on a one-row table, min/max of a column is its value, so results show it directly."""
    return [
        _labelled(
            gxe.ExpectColumnMinToBeBetween(
                column="rows", min_value=1, description="The run has input events (rows >= 1)"
            ),
            "no input events",
        ),
        *_zero_count_expectations(),
        *_ratio_expectations(),
    ]


def _zero_count_expectations() -> list[gxe.Expectation]:
    """One expectation per count of bad rows (nulls, unknown types, future times, bad prices, quantities)."""
    return [
        *(
            _zero(f"null_{c}", f"null {c}", f"Required column {c} is never null (null_{c} == 0)")
            for c in REQUIRED_COLUMNS
        ),
        _zero(
            "unknown_event_types",
            "unknown event type",
            f"Every event type is one of {', '.join(EVENT_TYPES)} (unknown_event_types == 0)",
        ),
        _zero("future_rows", "future timestamps", "No event after the run's interval end (future_rows == 0)"),
        _zero(
            "negative_or_bad_price_rows",
            "negative or non-finite price",
            "Prices are finite and >= 0 (negative_or_bad_price_rows == 0)",
        ),
        _zero("bad_quantity_rows", "quantity below 1", "Quantities are >= 1 (bad_quantity_rows == 0)"),
    ]


def _zero(column: str, problem: str, description: str) -> gxe.Expectation:
    return _labelled(
        gxe.ExpectColumnMaxToBeBetween(column=column, min_value=0, max_value=0, description=description),
        problem,
    )


def _ratio_expectations() -> list[gxe.Expectation]:
    """The duplicate-rate and volume checks, whose bounds are suite parameters filled in per run."""
    # No description: Data Docs would show it instead of GX's sentence, which is where they show the
    # resolved bound.
    return [
        _labelled(
            gxe.ExpectColumnMaxToBeBetween(
                column="duplicate_rate",
                max_value={"$PARAMETER": "max_duplicate_rate"},
                notes="Share of rows identical to another row over all canonical columns.",
            ),
            "duplicate rate too high",
        ),
        _labelled(
            gxe.ExpectColumnMinToBeBetween(
                column="volume_ratio",
                min_value={"$PARAMETER": "min_volume_ratio"},
                notes="rows / median(rows of recent successful runs); 1.0 without history.",
            ),
            "input volume dropped vs recent runs",
        ),
    ]


def _labelled(expectation: gxe.Expectation, problem: str) -> gxe.Expectation:
    # The label travels in meta so output_gate._failure_lines can name the problem from stored results.
    expectation.meta = {"problem": problem}
    return expectation


def _open_inputs_context(quality_dir: Path) -> Any:
    """The shared File Data Context with this gate's objects present (created or updated if needed).

    Thin wrapper around :func:`quality.output_gate._open_context`, which sets analytics and progress bars
    off and sets up the output gate's objects but knows no other gate.
    """
    context = _open_context(quality_dir)
    # Same lock as the output gate: concurrent first runs of either gate must not race on gx/ files.
    with _locked(quality_dir / ".gx.lock"):
        _ensure_objects(context)
    return context


def _ensure_objects(context: Any) -> None:
    """Data source, asset, suite, validation definition and checkpoint; written only when missing/changed."""
    batch_definition = _ensure_batch_definition(context)
    _ensure_suite(context)
    _ensure_validation_definition(context, batch_definition)
    _ensure_checkpoint(context)


def _ensure_batch_definition(context: Any) -> Any:
    """The whole-dataframe batch definition of this gate's asset, with its data source and asset."""
    try:
        datasource = context.data_sources.get(_DATASOURCE)
    except KeyError:
        datasource = context.data_sources.add_pandas(name=_DATASOURCE)
    try:
        asset = datasource.get_asset(_ASSET)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=_ASSET)
    try:
        return asset.get_batch_definition(_BATCH_DEFINITION)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)


def _ensure_suite(context: Any) -> None:
    desired = _expectations()
    # Constructor-built suite (see output_gate._ensure_suite for why not add_expectation on a new suite).
    try:
        stored = context.suites.get(_NAME)
        if _signature(stored.expectations) != _signature(desired):
            context.suites.add_or_update(gx.ExpectationSuite(name=_NAME, expectations=desired))
    except DataContextError:
        context.suites.add(gx.ExpectationSuite(name=_NAME, expectations=desired))


def _ensure_validation_definition(context: Any, batch_definition: Any) -> None:
    try:
        definition = context.validation_definitions.get(_NAME)
        current = definition.suite.name == _NAME and definition.data.id == batch_definition.id
    except DataContextError:
        current = False
    if not current:
        context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=_NAME, data=batch_definition, suite=context.suites.get(_NAME))
        )


def _ensure_checkpoint(context: Any) -> None:
    result_format = {"result_format": "SUMMARY"}
    try:
        checkpoint = context.checkpoints.get(_NAME)
        current = (
            [vd.name for vd in checkpoint.validation_definitions] == [_NAME]
            and not checkpoint.actions
            and _json_equal(checkpoint.result_format, result_format)
        )
    except DataContextError:
        current = False
    if not current:
        context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=_NAME,
                validation_definitions=[context.validation_definitions.get(_NAME)],
                actions=[],
                result_format=result_format,
            )
        )

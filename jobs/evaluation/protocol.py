"""Offline evaluation: a temporal split, two tasks (and plugged-in ones), ranking metrics, activity
deciles and the report.

The protocol (``carousel evaluate``):

* **Split.** The last ``test_days`` of the data are the test period ``[test_start, test_end)``; every
  model and every feature sees only events strictly before ``test_start`` (the cutoff). The
  ``val_days`` before the cutoff are the validation window ``[val_start, test_start)``: hyper-parameters
  are chosen there with models that see only events before ``val_start``, never the test period. The
  tuning function is handed the events before ``test_start`` only, so it cannot peek even by mistake.
* **Targets.** Purchases of known shoppers (``user_id`` not null) in the evaluation window, counted
  once per (shopper, item). Only shoppers with at least one event (any type) before the cutoff are
  scored: a shopper the store has never seen is a cold-start case, served by segment lists rather than
  personal ones, and mixing them in would only blur the comparison of personal models (their number is
  reported as ``targets.cold_buyers_excluded``). Task ``all`` counts every item bought; task
  ``new_items`` only items the shopper never bought before the cutoff (shoppers without such an item
  are not scored there), and asks models to leave out what the shopper already bought.
* **Metrics** (means over scored shoppers, binary relevance): ``ndcg@10`` (ideal DCG over
  ``min(|targets|, 10)``), ``recall@10`` (hits / ``|targets|``), ``map@12`` (average precision at 12
  with denominator ``min(|targets|, 12)``), ``coverage@10`` (distinct items in all top-10 lists over the
  catalog size: the items table as known at the cutoff, else every item seen before it) and ``users``.
* **Deciles.** Scored shoppers are cut into ten equal groups by activity before the cutoff (distinct
  purchase sessions, or all events when the data holds few purchases; ties broken by the other
  measure and then by id), and NDCG@10 is reported per group for every model and task.
* **Plugged-in tasks.** ``extra_tasks`` scores others on the same split, e.g. the visitors the batch
  has no personal list for (`jobs.evaluation.sessions`: tasks ``sessions`` and ``new_shoppers``).

A model is a `Recommender`: a plain callable that gets an `EvalContext` and returns ranked lists. The
baselines live in `jobs.evaluation.baselines`; the LightGBM ranker is plugged in the same way by the CLI.
Everything is vectorized with pandas/numpy: there is no Python loop over shoppers or lists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from jobs.evaluation.intervals import ratio_to_best_other
from jobs.ranking.metrics import evaluate_lists
from jobs.ranking.threads import single_threaded_blas

__all__ = [
    "METRICS",
    "TASKS",
    "EvalContext",
    "EvaluationError",
    "ExtraTasks",
    "ExtraTasksFn",
    "Recommender",
    "Split",
    "activity_deciles",
    "build_targets",
    "catalog_items",
    "clean_lists",
    "make_context",
    "normalise_events",
    "normalise_items",
    "rolling_splits",
    "run_evaluation",
    "score_models",
    "temporal_split",
]

#: The two tasks and whether models must leave out what the shopper already bought.
TASKS: dict[str, bool] = {"all": False, "new_items": True}
METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "map@12", "coverage@10")

_ID_COLUMNS = ("user_id", "session_id", "item_id", "event_type")


class EvaluationError(ValueError):
    """The data or a model cannot be evaluated as asked (too short a history, malformed lists...)."""


# --------------------------------------------------------------------------------------------------
# Split and context
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """The boundaries of one temporal split; every window is half-open ``[start, end)``.

    Attributes
    ----------
    train_end, test_start:
        The cutoff (equal): models see only events strictly before it.
    test_end:
        Just after the last event (its second plus one), so the last event is in the test period.
    val_start:
        ``test_start - val_days``: the validation window is ``[val_start, test_start)``.
    """

    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    val_start: pd.Timestamp

    def to_json(self) -> dict[str, str]:
        """The boundaries as ISO-8601 strings, keyed as in the report."""
        return {
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
            "val_start": self.val_start.isoformat(),
        }


def temporal_split(events: pd.DataFrame, test_days: int = 30, val_days: int = 30) -> Split:
    """Split on time: the last ``test_days`` are the test period, the ``val_days`` before it validation.

    Parameters
    ----------
    events:
        Canonical events (at least a ``ts`` column of UTC timestamps).
    test_days, val_days:
        Lengths of the test and validation windows in days (both >= 1).

    Returns
    -------
    Split
        ``test_end`` is the last event's second plus one second (an exclusive bound just after it),
        ``test_start = train_end = test_end - test_days`` and ``val_start = test_start - val_days``.

    Raises
    ------
    EvaluationError
        If there are no events, a window length is below 1, or the data does not span more than the
        two windows (there would be nothing to train on).
    """
    return rolling_splits(events, 1, test_days=test_days, val_days=val_days)[0]


def rolling_splits(events: pd.DataFrame, folds: int, test_days: int = 30, val_days: int = 30) -> list[Split]:
    """Rolling origin: ``folds`` consecutive test windows of ``test_days``, the last one `temporal_split`'s.

    Fold ``i`` (oldest first) is tested on ``[test_start_i, test_end_i)``, trains on everything before
    ``test_start_i`` and is tuned on the ``val_days`` before it, as the single split is. The windows
    are back to back: ``test_end_i == test_start_{i+1}``, so no test event is scored twice.

    Parameters
    ----------
    events:
        Canonical events (at least a ``ts`` column of UTC timestamps).
    folds:
        Number of test windows (an integer >= 1; 1 gives `temporal_split`).
    test_days, val_days:
        Lengths of each test window and of the validation window before it, in days (both >= 1).

    Returns
    -------
    list of Split
        One per fold, in time order; the last ends just after the last event.

    Raises
    ------
    EvaluationError
        If ``folds`` is not an integer >= 1, there are no events, a window length is below 1, or the
        data does not reach back before the first fold's validation window (nothing to train on).
    """
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 1:
        raise EvaluationError(f"folds must be an integer >= 1, got {folds!r}")
    if test_days < 1 or val_days < 1:
        raise EvaluationError(f"test_days and val_days must be >= 1, got {test_days} and {val_days}")
    if events.empty:
        raise EvaluationError("no events to split")
    ts = _utc(events["ts"])
    first, last = ts.min(), ts.max()
    end = last.floor("s") + pd.Timedelta(seconds=1)
    test = pd.Timedelta(days=test_days)
    splits = []
    for back in range(int(folds) - 1, -1, -1):
        test_end = end - back * test
        test_start = test_end - test
        val_start = test_start - pd.Timedelta(days=val_days)
        splits.append(
            Split(train_end=test_start, test_start=test_start, test_end=test_end, val_start=val_start)
        )
    if first >= splits[0].val_start:
        tests = (
            f"{test_days}-day test window"
            if folds == 1
            else f"{folds} consecutive {test_days}-day test windows"
        )
        raise EvaluationError(
            f"the data spans {first} .. {last}, not more than the {val_days}-day validation and {tests} "
            f"(the first fold would start at {splits[0].val_start:%Y-%m-%d %H:%M}); nothing would be left "
            f"to train on{_folds_that_fit(first, end, folds, test, val_days)}"
        )
    return splits


def _folds_that_fit(
    first: pd.Timestamp, end: pd.Timestamp, folds: int, test: pd.Timedelta, val_days: int
) -> str:
    """For the error of too many folds: how many test windows would leave history before the first
    validation window ("" for a single fold, or when not even one fits)."""
    fit = int(np.ceil((end - pd.Timedelta(days=val_days) - first) / test)) - 1
    return f"; at most {fit} such test window(s) fit" if folds > 1 and fit >= 1 else ""


@dataclass
class EvalContext:
    """What a recommender may know: the past before ``cutoff`` and nothing after it.

    Attributes
    ----------
    history:
        Canonical events strictly before ``cutoff``: every event type, anonymous rows included.
    items:
        The canonical items known at the cutoff (``first_seen`` before it), or None without an items
        table. ``in_stock`` is the table's snapshot (the only stock information there is).
    cutoff:
        The moment the lists are made.
    seed:
        Seed for anything random (ALS initialisation, sampling).
    tuned:
        Hyper-parameters chosen on the validation window: ``{model: {param: value}}`` for task
        ``all``, and under the key ``"new_items"`` the same shape for the models whose choice differs
        in that task. ``tuned["als"]`` holds exactly `jobs.ranking.als.AlsParams` fields (without ``seed``),
        so another model (the ranker) can build its ALS from it. Empty during tuning itself; read
        per task with `EvalContext.params`.
    cache:
        Scratch space shared by the recommender calls on this context (a fitted model or an item
        ranking is built once for both tasks). Keys should start with the model's name.
    notes:
        What a model says about itself for the report (``report["models"][name]``): the ranker's
        out-of-sample figures and the scorer its guard chose per activity band.
    asked:
        Every shopper the tasks will ask for on this context (set by `score_models`), so that a model
        that makes everyone's lists at once (the ranker) makes only theirs. Who is asked says nothing
        about what they did after the cutoff that the calls' ``users`` do not say already.
    """

    history: pd.DataFrame
    items: pd.DataFrame | None
    cutoff: pd.Timestamp
    seed: int = 7
    tuned: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    asked: np.ndarray | None = None

    def params(self, model: str, exclude_bought: bool) -> dict[str, Any]:
        """The tuned parameters of ``model`` for the task that ``exclude_bought`` stands for ({} if none)."""
        chosen = self.tuned.get(model) or {}
        if exclude_bought:
            chosen = (self.tuned.get("new_items") or {}).get(model, chosen)
        return dict(chosen)


class Recommender(Protocol):
    """A model under evaluation: ranked lists of at most ``k`` items for each of ``users``.

    Returns a frame with columns ``user_id``, ``item_id`` and ``rank`` (1 = best). With
    ``exclude_bought`` the lists must not contain items the shopper purchased before ``ctx.cutoff``.
    """

    def __call__(self, ctx: EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame: ...


TuneFn = Callable[[pd.DataFrame, "pd.DataFrame | None", Split], dict[str, Any]]
Progress = Callable[[str], None]


@dataclass
class ExtraTasks:
    """Tasks scored on others than the warm shoppers of `TASKS` (`jobs.evaluation.sessions`: sessions
    without a known shopper, shoppers first seen in the test period), as they go into the report.

    Attributes
    ----------
    tasks:
        ``{task: {model: {"ndcg@10", "recall@10", "map@12", "coverage@10", "users"}}}``.
    targets:
        ``{task: counts}``, beside the other tasks' target counts.
    timings:
        Seconds per step.
    """

    tasks: dict[str, dict[str, dict[str, float | int]]]
    targets: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


#: ``extra_tasks(events, split, ctx, k, progress)``: every (normalised) event, for the targets; models
#: may only read ``ctx`` (the history before the cutoff) and what the targets' own units did before
#: what they are asked to predict.
ExtraTasksFn = Callable[[pd.DataFrame, Split, EvalContext, int, Progress], ExtraTasks]


def _utc(ts: pd.Series) -> pd.Series:
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        return ts.dt.tz_convert("UTC")
    return pd.to_datetime(ts, utc=True)


def normalise_events(events: pd.DataFrame) -> pd.DataFrame:
    """A copy of canonical events with ids as Python strings (object dtype) and ``ts`` in UTC.

    Online Retail arrives with object columns and the synthetic store with pyarrow strings; joining the
    two kinds (targets against lists) is slow or fails, so the harness settles on one.

    Parameters
    ----------
    events:
        Canonical events with any string dtypes.

    Returns
    -------
    pandas.DataFrame
        The same rows and columns; missing ids are None.
    """
    out = events.copy()
    for name in _ID_COLUMNS:
        if name in out.columns and out[name].dtype != object:
            values = out[name].astype(object)
            out[name] = values.mask(values.isna(), None)
    out["ts"] = _utc(out["ts"])
    return out


def normalise_items(items: pd.DataFrame | None) -> pd.DataFrame | None:
    """A copy of canonical items with ``item_id`` as Python strings and ``first_seen`` in UTC (None stays
    None)."""
    if items is None:
        return None
    out = items.copy()
    if out["item_id"].dtype != object:
        out["item_id"] = out["item_id"].astype(object)
    if "first_seen" in out.columns:
        out["first_seen"] = _utc(out["first_seen"])
    return out


def make_context(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    cutoff: pd.Timestamp,
    *,
    seed: int = 7,
    tuned: dict[str, Any] | None = None,
) -> EvalContext:
    """The context as of ``cutoff``: events strictly before it and the items that existed then.

    Parameters
    ----------
    events, items:
        Canonical events and (optionally) items, as returned by `normalise_events` and
        `normalise_items`.
    cutoff:
        The moment the lists are made; nothing at or after it reaches the context.
    seed, tuned:
        See `EvalContext`.

    Returns
    -------
    EvalContext
    """
    history = events.loc[events["ts"] < cutoff].reset_index(drop=True)
    known_items = None
    if items is not None:
        known_items = items
        if "first_seen" in items.columns:
            # An item listed after the cutoff did not exist when the lists were made.
            known_items = items.loc[~(items["first_seen"] >= cutoff)]
        known_items = known_items.reset_index(drop=True)
    return EvalContext(history=history, items=known_items, cutoff=cutoff, seed=seed, tuned=dict(tuned or {}))


def catalog_items(ctx: EvalContext) -> np.ndarray:
    """The catalog that coverage is measured against: the items table at the cutoff, else items seen."""
    if ctx.items is not None:
        return np.asarray(ctx.items["item_id"].unique(), dtype=object)
    return np.asarray(ctx.history["item_id"].unique(), dtype=object)


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def build_targets(events: pd.DataFrame, cutoff: pd.Timestamp, end: pd.Timestamp) -> dict[str, Any]:
    """The (shopper, item) pairs to find for each task, and counts of who was left out and why.

    Parameters
    ----------
    events:
        Normalised canonical events (all of them; only those before ``end`` are read).
    cutoff, end:
        The evaluation window ``[cutoff, end)``; history is everything before ``cutoff``.

    Returns
    -------
    dict
        ``{"all": pairs, "new_items": pairs, "stats": {...}}`` where ``pairs`` are frames of distinct
        ``user_id, item_id`` and ``stats`` counts the window's purchases, the anonymous ones, the cold
        buyers (no event before the cutoff) excluded, and the scored users and pairs per task.
    """
    window = events.loc[
        (events["ts"] >= cutoff) & (events["ts"] < end) & (events["event_type"] == "purchase")
    ]
    known = window.loc[window["user_id"].notna()]
    history = events.loc[events["ts"] < cutoff]
    seen_users = pd.Index(history["user_id"].dropna().unique())
    buyers = known["user_id"].unique()
    warm = known.loc[known["user_id"].isin(seen_users)]
    all_pairs = warm[["user_id", "item_id"]].drop_duplicates().reset_index(drop=True)

    bought = history.loc[
        (history["event_type"] == "purchase") & history["user_id"].notna(), ["user_id", "item_id"]
    ].drop_duplicates()
    new_pairs = _anti_join(all_pairs, bought)
    stats = {
        "window_purchases": len(window),
        "anonymous_purchases_excluded": int(window["user_id"].isna().sum()),
        "cold_buyers_excluded": int(len(buyers) - warm["user_id"].nunique()),
        "all": {"users": int(all_pairs["user_id"].nunique()), "pairs": len(all_pairs)},
        "new_items": {"users": int(new_pairs["user_id"].nunique()), "pairs": len(new_pairs)},
    }
    return {"all": all_pairs, "new_items": new_pairs, "stats": stats}


def _anti_join(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``left`` whose (user_id, item_id) is not in ``right``."""
    if right.empty or left.empty:
        return left.reset_index(drop=True)
    merged = left.merge(right[["user_id", "item_id"]].drop_duplicates(), how="left", indicator=True)
    return merged.loc[merged["_merge"] == "left_only", list(left.columns)].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Lists (the metrics themselves: jobs.ranking.metrics)
# --------------------------------------------------------------------------------------------------


def clean_lists(recs: pd.DataFrame, users: np.ndarray, k: int, *, name: str = "model") -> pd.DataFrame:
    """A recommender's output made safe to score: requested users only, no repeats, ranks 1..k.

    Parameters
    ----------
    recs:
        ``user_id, item_id, rank`` rows as returned by a recommender.
    users:
        The shoppers that were asked for.
    k:
        Longest list kept.
    name:
        The model's name, for the error message.

    Returns
    -------
    pandas.DataFrame
        ``user_id, item_id, rank`` with ranks renumbered 1, 2, ... per shopper in the model's order.

    Raises
    ------
    EvaluationError
        If a column is missing.
    """
    missing = [c for c in ("user_id", "item_id", "rank") if c not in recs.columns]
    if missing:
        raise EvaluationError(f"{name}: the recommender's lists lack column(s) {', '.join(missing)}")
    out = recs.loc[recs["user_id"].isin(pd.Index(users)), ["user_id", "item_id", "rank"]]
    out = out.astype({"user_id": object, "item_id": object})
    out = out.sort_values(["user_id", "rank"], kind="stable").drop_duplicates(["user_id", "item_id"])
    out = out.reset_index(drop=True)
    out["rank"] = out.groupby("user_id", sort=False).cumcount() + 1
    return out.loc[out["rank"] <= k].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Activity deciles
# --------------------------------------------------------------------------------------------------


def activity_deciles(
    history: pd.DataFrame, users: np.ndarray, measure: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Cut shoppers into ten equal groups by their activity before the cutoff (1 = least active).

    The measure is the number of distinct purchase sessions, unless the data holds few purchases (the
    median shopper has fewer than two purchase sessions), in which case it is the number of events.
    Ranks break ties by the other measure and then by user id, so ``pd.qcut`` of the ranks gives ten
    groups of (nearly) equal size even when many shoppers share a value.

    Parameters
    ----------
    history:
        Normalised canonical events before the cutoff.
    users:
        The shoppers to group.
    measure:
        ``"purchase_sessions"`` or ``"events"`` to force the measure (the harness uses the one chosen
        for task ``all`` in ``new_items`` too, so both tasks are cut the same way); None chooses.

    Returns
    -------
    (pandas.DataFrame, str)
        One row per shopper (index ``user_id``) with ``decile`` (1..10, fewer groups when there are
        fewer than ten shoppers), ``purchase_sessions``, ``events`` and ``activity`` (the measure), and
        the measure's name (``"purchase_sessions"`` or ``"events"``).
    """
    index = pd.Index(users, name="user_id")
    mine = history.loc[history["user_id"].isin(index)]
    purchases = mine.loc[mine["event_type"] == "purchase"]
    sessions = purchases.groupby("user_id")["session_id"].nunique().reindex(index, fill_value=0)
    n_events = mine.groupby("user_id").size().reindex(index, fill_value=0)
    out = pd.DataFrame({"purchase_sessions": sessions.astype("int64"), "events": n_events.astype("int64")})
    if measure is None:
        measure = "purchase_sessions" if len(out) and out["purchase_sessions"].median() >= 2 else "events"
    if measure not in ("purchase_sessions", "events"):
        raise EvaluationError(f"unknown activity measure {measure!r}")
    other = "events" if measure == "purchase_sessions" else "purchase_sessions"
    out["activity"] = out[measure]
    if out.empty:
        out["decile"] = pd.Series(dtype="int64")
        return out, measure
    order = out.reset_index().sort_values([measure, other, "user_id"], kind="stable")
    ranks = pd.Series(np.arange(1, len(order) + 1), index=order["user_id"].to_numpy())
    groups = pd.qcut(ranks, q=min(10, len(ranks)), labels=False, duplicates="drop")
    out["decile"] = groups.reindex(index).to_numpy().astype("int64") + 1
    return out, measure


def _decile_rows(per_user: pd.DataFrame, deciles: pd.DataFrame) -> list[dict[str, Any]]:
    joined = per_user[["ndcg@10"]].join(deciles[["decile", "activity"]])
    grouped = joined.groupby("decile")
    table = pd.DataFrame(
        {
            "users": grouped.size(),
            "ndcg@10": grouped["ndcg@10"].mean(),
            "activity_min": grouped["activity"].min(),
            "activity_max": grouped["activity"].max(),
        }
    )
    return [
        {
            "decile": int(str(decile)),
            "users": int(row["users"]),
            "ndcg@10": float(row["ndcg@10"]),
            "activity_min": int(row["activity_min"]),
            "activity_max": int(row["activity_max"]),
        }
        for decile, row in table.iterrows()  # ten rows
    ]


def lowest_decile_ratio(
    model: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The activity decile where `model`'s NDCG@10 is lowest against `reference`'s (rows of
    `_decile_rows`), with that ratio; deciles where the reference scores nothing are skipped."""
    ratios = [
        (float(m["ndcg@10"]) / float(r["ndcg@10"]), int(m["decile"]))
        for m, r in zip(model, reference, strict=True)
        if float(r["ndcg@10"]) > 0
    ]
    if not ratios:
        return {"decile": None, "ratio": None}
    ratio, decile = min(ratios)
    return {"decile": decile, "ratio": round(ratio, 4)}


# --------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------


def score_models(
    ctx: EvalContext,
    targets: Mapping[str, Any],
    models: Mapping[str, Recommender],
    *,
    k: int = 12,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, dict[str, tuple[dict[str, float | int], pd.DataFrame]]]:
    """Ask every model for lists in both tasks and score them (used for validation and for the test).
    Sets ``ctx.asked`` to the shoppers of both tasks first.

    Parameters
    ----------
    ctx:
        The context the models see.
    targets:
        `build_targets` output for the window after ``ctx.cutoff``.
    models:
        Name -> recommender.
    k:
        List length asked for (at least 12 for ``map@12``).
    progress:
        Called with one line per model.
    timings:
        If given, receives the seconds each model took (both tasks, metrics excluded).

    Returns
    -------
    dict
        ``{task: {model: (summary, per_user)}}`` as in `evaluate_lists`.
    """
    catalog = catalog_items(ctx)
    ctx.asked = pd.unique(np.concatenate([targets[task]["user_id"].to_numpy(dtype=object) for task in TASKS]))

    Scored = dict[str, tuple[dict[str, float | int], pd.DataFrame]]

    def score(name: str) -> tuple[Scored, float]:
        scored: Scored = {}
        spent = 0.0
        for task, exclude in TASKS.items():
            pairs: pd.DataFrame = targets[task]
            users = np.asarray(pairs["user_id"].unique(), dtype=object)
            started = time.perf_counter()
            recs = models[name](ctx, users, k, exclude)
            spent += time.perf_counter() - started
            scored[task] = evaluate_lists(clean_lists(recs, users, k, name=name), pairs, users, catalog)
        return scored, spent

    names = list(models)
    # The last model (the ranker: by far the costliest, much of it in Spark's JVM and LightGBM's
    # threads) runs on a thread of its own while the others run here, one after the other, on the other
    # core. A model's lists depend on the context alone, so the figures are those of one model at a time;
    # `timings` are each model's own wall time, beside the other's. BLAS stays on one thread for both
    # (`single_threaded_blas`: set here, on the thread that starts the other).
    with single_threaded_blas():
        beside = _Beside(score, names[-1]) if len(names) > 1 else None
        results: dict[str, tuple[Scored, float]] = {}
        for name in names:
            results[name] = beside.result() if beside is not None and name == beside.name else score(name)
            scored, spent = results[name]
            if timings is not None:
                timings[name] = round(spent, 3)
            if progress is not None:
                figures = ", ".join(f"{task} ndcg@10 {scored[task][0]['ndcg@10']:.4f}" for task in TASKS)
                progress(f"{name}: {figures} ({spent:.1f}s)")
    return {task: {name: results[name][0][task] for name in names} for task in TASKS}


class _Beside:
    """`work(name)` started on a daemon thread (an interrupted run does not wait for it); `result`
    waits for it and returns its value or raises its error."""

    def __init__(self, work: Callable[[str], Any], name: str) -> None:
        self.name = name
        self._outcome: tuple[bool, Any] | None = None

        def run() -> None:
            try:
                self._outcome = (True, work(name))
            except BaseException as error:  # handed to the caller of `result`
                self._outcome = (False, error)

        self._thread = threading.Thread(target=run, name=f"model-{name}", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        assert self._outcome is not None
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def run_evaluation(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    models: Mapping[str, Recommender],
    *,
    dataset: str,
    test_days: int = 30,
    val_days: int = 30,
    folds: int = 1,
    k: int = 12,
    seed: int = 7,
    tune: TuneFn | None = None,
    extra_tasks: ExtraTasksFn | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the whole protocol on one or more folds and return the report (the contract's JSON, plus extra
    keys).

    Parameters
    ----------
    events:
        Canonical events (any id dtypes; ``ts`` UTC).
    items:
        Canonical items, or None.
    models:
        Name -> `Recommender`, scored in this order.
    dataset:
        Name written into the report.
    test_days, val_days:
        Window lengths of `temporal_split`.
    folds:
        Number of consecutive test windows (`rolling_splits`); every fold is tuned, trained and scored
        as the single split is, on its own past.
    k:
        List length asked of the models (>= 12).
    seed:
        Passed to the models through the context.
    tune:
        ``tune(events_before_test_start, items, split) -> tuned`` (see `EvalContext.tuned`), e.g.
        `jobs.evaluation.baselines.tune_baselines`; it gets no event at or after ``test_start``. Its result is
        ``ctx.tuned`` in the test run and ``report["tuned"]``, except an optional ``"validation"``
        entry (the validation scores of the grid), which goes to ``report["validation"]``.
    extra_tasks:
        Tasks beside `TASKS` on the same split (e.g. `jobs.evaluation.sessions.visitor_tasks`): their
        figures go to ``tasks``, their counts to ``targets`` and their timings to ``timings_s``; they
        have no activity deciles.
    progress:
        Called with one line per stage.

    Returns
    -------
    dict
        For the last fold (the single split's report when ``folds == 1``): ``dataset``, ``split``
        (``train_end``, ``test_start``, ``test_end``, ``val_start``), ``tasks``
        (``{task: {model: {"ndcg@10", "recall@10", "map@12", "coverage@10", "users"}}}``), ``deciles``
        (``{task: {model: [{"decile", "users", "ndcg@10", "activity_min", "activity_max"}]}}``),
        ``deciles_by``, ``targets`` (counts), ``data`` (sizes), ``timings_s``, ``tuned`` and
        ``validation``. Then every fold in time order, ``folds``: ``[{"split", "tasks", "tuned",
        "timings_s"}]``, and ``folds_summary``: per task of `TASKS`, the mean of every model's
        metrics over the folds and, when a model is called ``ranker``, its NDCG@10 ratio to the best
        other model per fold and on average with a paired bootstrap interval
        (`jobs.evaluation.intervals.ratio_to_best_other`).
    """
    if k < 12:
        raise EvaluationError(f"k must be at least 12 (map@12), got {k}")
    say = progress or (lambda _message: None)
    started = time.perf_counter()

    # Loaded and normalised once for every fold; each fold's context is a slice of these.
    events = normalise_events(events)
    items_n = normalise_items(items)
    splits = rolling_splits(events, folds, test_days=test_days, val_days=val_days)
    names = ["split"] if len(splits) == 1 else [f"fold {n}/{len(splits)}" for n in range(1, len(splits) + 1)]

    # Targets first: when a test window has nothing to score, say so before any model is tuned or fitted.
    fold_targets = []
    for name, split in zip(names, splits, strict=True):
        t0 = time.perf_counter()
        say(
            f"{name}: validation [{split.val_start:%Y-%m-%d %H:%M}, {split.test_start:%Y-%m-%d %H:%M}), "
            f"test [{split.test_start:%Y-%m-%d %H:%M}, {split.test_end:%Y-%m-%d %H:%M})"
        )
        targets = _test_targets(events, split, test_days)
        stats = targets["stats"]
        say(
            f"targets: {stats['all']['users']:,} shoppers ({stats['all']['pairs']:,} pairs) in all, "
            f"{stats['new_items']['users']:,} in new_items; {stats['cold_buyers_excluded']:,} cold buyers "
            "left out"
        )
        fold_targets.append((targets, round(time.perf_counter() - t0, 3)))

    runs = []
    for name, split, (targets, targets_s) in zip(names, splits, fold_targets, strict=True):
        if len(splits) > 1:
            say(
                f"{name}: tuning on [{split.val_start:%Y-%m-%d}, {split.test_start:%Y-%m-%d}), "
                f"testing on [{split.test_start:%Y-%m-%d}, {split.test_end:%Y-%m-%d})"
            )
        fold_started = time.perf_counter()
        run = _run_fold(
            events,
            items_n,
            split,
            targets,
            models,
            k=k,
            seed=seed,
            tune=tune,
            extra_tasks=extra_tasks,
            say=say,
        )
        run.timings = {
            "targets": targets_s,
            **run.timings,
            "total": round(time.perf_counter() - fold_started, 3),
        }
        runs.append(run)
        if len(splits) > 1:
            say(f"{name} done in {run.timings['total']:.1f}s")

    last = runs[-1]
    timings = {**last.timings, "total": round(time.perf_counter() - started, 3)}
    return {
        "dataset": dataset,
        "split": last.split.to_json(),
        "tasks": last.tasks,
        "deciles": last.deciles,
        "deciles_by": last.deciles_by,
        "targets": last.targets,
        "data": {
            "events": len(events),
            "history_events": last.history_events,
            "catalog_items": last.catalog_items,
            "k": k,
            "test_days": test_days,
            "val_days": val_days,
            "folds": len(runs),
            "seed": seed,
        },
        "timings_s": timings,
        "tuned": last.tuned,
        "validation": last.validation,
        "models": last.models,
        "folds": [
            {
                "split": run.split.to_json(),
                "tasks": run.tasks,
                "deciles": run.deciles,
                "deciles_by": run.deciles_by,
                "tuned": run.tuned,
                "models": run.models,
                "timings_s": run.timings,
            }
            for run in runs
        ],
        "folds_summary": _folds_summary(runs, seed=seed),
    }


@dataclass
class _FoldRun:
    """One fold's results: the report's figures and, for the summary, every shopper's NDCG@10."""

    split: Split
    tasks: dict[str, dict[str, Any]]
    deciles: dict[str, dict[str, Any]]
    deciles_by: str | None
    targets: dict[str, Any]
    tuned: dict[str, Any]
    validation: Any
    history_events: int
    catalog_items: int
    timings: dict[str, float]
    #: ``{task: frame}``: one row per scored shopper of the task, one column per model.
    ndcg: dict[str, pd.DataFrame]
    #: ``{task: series}``: each scored shopper's activity decile (index ``user_id``).
    decile_of: dict[str, pd.Series]
    #: What the models say about themselves (`EvalContext.notes`).
    models: dict[str, Any]


def _run_fold(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    split: Split,
    targets: Mapping[str, Any],
    models: Mapping[str, Recommender],
    *,
    k: int,
    seed: int,
    tune: TuneFn | None,
    extra_tasks: ExtraTasksFn | None,
    say: Progress,
) -> _FoldRun:
    """Tune on the validation window before ``split``'s test window, then fit and score every model there."""
    timings: dict[str, float] = {}
    tuned, validation = _tuned(tune, events, items, split, timings, say)
    ctx = make_context(events, items, split.test_start, seed=seed, tuned=tuned)
    _check_before(ctx.history, split.test_start, "the models' history")
    deciles, measure = _task_deciles(ctx, targets)
    scored = score_models(ctx, targets, models, k=k, progress=say, timings=timings)

    t0 = time.perf_counter()
    tasks_out: dict[str, dict[str, Any]] = {task: {} for task in TASKS}
    deciles_out: dict[str, dict[str, Any]] = {task: {} for task in TASKS}
    ndcg: dict[str, pd.DataFrame] = {}
    for task in TASKS:
        for name in models:
            summary, per_user = scored[task][name]
            tasks_out[task][name] = summary
            deciles_out[task][name] = _decile_rows(per_user, deciles[task][0])
        ndcg[task] = pd.DataFrame({name: scored[task][name][1]["ndcg@10"] for name in models})
    timings["report"] = round(time.perf_counter() - t0, 3)
    stats = targets["stats"]
    if extra_tasks is not None:
        extra = extra_tasks(events, split, ctx, k, say)
        tasks_out.update(extra.tasks)
        stats = {**stats, **extra.targets}
        timings.update(extra.timings)
    return _FoldRun(
        split=split,
        tasks=tasks_out,
        deciles=deciles_out,
        deciles_by=measure,
        targets=stats,
        tuned=tuned,
        validation=validation,
        history_events=len(ctx.history),
        catalog_items=len(catalog_items(ctx)),
        timings=timings,
        ndcg=ndcg,
        decile_of={task: deciles[task][0]["decile"] for task in TASKS},
        models=ctx.notes,
    )


def _check_before(frame: pd.DataFrame, test_start: pd.Timestamp, what: str) -> None:
    """Refuse to go on if an event at or after the test window's start reached training or tuning.

    The slicing upstream already guarantees it; this makes a future change that breaks it fail loudly
    instead of flattering every figure of a fold.
    """
    if len(frame) and frame["ts"].max() >= test_start:
        raise EvaluationError(
            f"{what} holds events from {frame['ts'].max()}, at or after the test window's start {test_start}"
        )


def _folds_summary(runs: Sequence[_FoldRun], *, seed: int) -> dict[str, Any]:
    """Per task of `TASKS`: each model's metrics averaged over the folds, and the ranker's ratio to the
    best other model per fold and on average with its bootstrap interval."""
    summary: dict[str, Any] = {
        "folds": len(runs),
        "test_windows": [[run.split.test_start.isoformat(), run.split.test_end.isoformat()] for run in runs],
        "interval": {"method": "paired bootstrap over scored shoppers within each fold", **_BOOTSTRAP},
        "tasks": {},
    }
    for task in TASKS:
        per_model = runs[-1].tasks[task]
        mean = {
            name: {
                metric: float(np.mean([run.tasks[task][name][metric] for run in runs])) for metric in METRICS
            }
            for name in per_model
        }
        entry: dict[str, Any] = {"mean": mean}
        if "ranker" in per_model and len(per_model) > 1:
            ratio = ratio_to_best_other(
                [run.ndcg[task] for run in runs], model="ranker", seed=seed, **_BOOTSTRAP
            )
            entry["ranker_vs_best_other"] = ratio
        if "ranker" in per_model and "als" in per_model:
            entry["lowest_decile_vs_als"] = [_lowest_decile(run, task, seed=seed) for run in runs]
        summary["tasks"][task] = entry
    return summary


def _lowest_decile(run: _FoldRun, task: str, *, seed: int) -> dict[str, Any]:
    """`lowest_decile_ratio` of a fold with its shoppers and the same paired bootstrap interval as the
    folds' ratios, drawn within that decile. The interval is the decile's own: having picked the lowest
    of ten makes the point figure lean low, and the interval does not correct for that."""
    lowest = lowest_decile_ratio(run.deciles[task]["ranker"], run.deciles[task]["als"])
    if lowest["decile"] is None:
        return {**lowest, "ci": [None, None], "users": 0}
    decile_of = run.decile_of[task]
    members = decile_of.index[decile_of.to_numpy() == lowest["decile"]]
    frame = run.ndcg[task].loc[run.ndcg[task].index.isin(members), ["ranker", "als"]]
    fold = ratio_to_best_other([frame], model="ranker", seed=seed, **_BOOTSTRAP)["folds"][0]
    return {**lowest, "ci": fold["ci"], "users": fold["users"]}


#: Resamples and coverage of the folds' bootstrap intervals.
_BOOTSTRAP: dict[str, Any] = {"resamples": 1000, "confidence": 0.95}


def _test_targets(events: pd.DataFrame, split: Split, test_days: int) -> dict[str, Any]:
    """`build_targets` of the test period; `EvaluationError` when no known shopper bought in it."""
    targets = build_targets(events, split.test_start, split.test_end)
    stats = targets["stats"]
    if not stats["all"]["users"]:
        raise EvaluationError(
            f"no shopper with history before {split.test_start:%Y-%m-%d %H:%M} bought anything in the "
            f"{test_days}-day test period ({stats['window_purchases']} purchase events there); nothing to score"
        )
    return targets


def _tuned(
    tune: TuneFn | None,
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    split: Split,
    timings: dict[str, float],
    say: Progress,
) -> tuple[dict[str, Any], Any]:
    """The hyper-parameters `tune` chooses on the validation window, and its validation scores."""
    if tune is None:
        return {}, None
    t0 = time.perf_counter()
    # The tuner gets only the past of the test period, so no choice can depend on it.
    before_test = events.loc[events["ts"] < split.test_start].reset_index(drop=True)
    _check_before(before_test, split.test_start, "the tuner's events")
    tuned = dict(tune(before_test, items, split))
    # Validation scores are a record for the report, not parameters for the models.
    validation = tuned.pop("validation", None)
    timings["tune"] = round(time.perf_counter() - t0, 3)
    say(f"tuned on validation in {timings['tune']:.1f}s:")
    for line in _tuned_lines(tuned):
        say(line)
    return tuned, validation


def _task_deciles(
    ctx: EvalContext, targets: Mapping[str, Any]
) -> tuple[dict[str, tuple[pd.DataFrame, str]], str | None]:
    """Each task's shoppers cut into activity deciles, both tasks by the measure chosen for `all`."""
    deciles: dict[str, tuple[pd.DataFrame, str]] = {}
    measure: str | None = None
    for task in TASKS:
        task_users = np.asarray(targets[task]["user_id"].unique(), dtype=object)
        deciles[task] = activity_deciles(ctx.history, task_users, measure)
        measure = deciles[task][1]
    return deciles, measure


def _tuned_lines(tuned: Mapping[str, Any]) -> list[str]:
    """One short line per tuned model: its choice for `all`, and for `new_items` when that differs."""

    def one(params: Mapping[str, Any]) -> str:
        return " ".join(f"{k}={v}" for k, v in params.items())

    overrides = tuned.get("new_items") or {}
    lines = []
    for model, params in tuned.items():
        if model == "new_items":
            continue
        line = f"  {model}: {one(params)}"
        if model in overrides and overrides[model] != params:
            line += f" | new_items: {one(overrides[model])}"
        lines.append(line)
    lines += [f"  {m}: new_items: {one(p)}" for m, p in overrides.items() if m not in tuned]
    return lines

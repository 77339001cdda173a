"""Holdout lift: how much more the shoppers who get personal lists (and emails) buy than the holdout.

`lift_report` is a pure pandas transform: events (and optionally email audiences) in, one
JSON-serialisable dict out, no I/O and no clock. `carousel report lift` runs it end to end:
`read_events` and `read_audiences` extract from the lake and `var/audiences/`, `write_report` writes
the JSON atomically (default `var/reports/lift.json`), and `GET /ops/lift` renders that file.

Two comparisons, each treatment vs holdout:

* **Storefront.** The subjects are the shoppers with any event in ``[start, end)``: a signed-in shopper
  by ``user_id``, an anonymous visitor by ``session_id`` (each session is its own subject, as on the
  storefront). Their arm is `carousel.rules.holdout.assign_variant` of that id, the same salted hash the API
  uses. A converter has at least one purchase in the window; revenue is ``sum(quantity * price)`` of
  their purchases in the window.
* **Email.** The subjects are audience rows (one shopper triggered once by one campaign; exact repeats
  of campaign, shopper and trigger time count once) triggered in ``[start, end)``. Rows with
  ``held_out`` true were not sent the email and form the holdout arm; the other rows were sent and form
  the treatment arm. A row converts when its shopper purchases in ``(triggered_at, triggered_at +
  email_window_days]`` (strictly after the trigger, so the purchase that triggers a post-purchase email
  never counts for it); revenue is summed over the same window. Purchases after ``end`` count here, so
  hand in events up to ``end + email_window_days``. Reported per campaign and over all campaigns.

Statistics (95% level, z = 1.95996...), all normal approximations:

* conversion rate, difference of two proportions: ``d = p_t - p_h``, standard error ``sqrt(p_t (1 -
  p_t) / n_t + p_h (1 - p_h) / n_h)`` (unpooled, Wald), CI ``d +- z se``, two-sided p-value ``2 (1 -
  Phi(|d| / se))`` from the same standard error (so p < 0.05 exactly when the CI excludes 0). Relative
  difference ``p_t / p_h - 1`` with the log risk-ratio (Katz) interval ``exp(log(p_t / p_h) +- z
  sqrt((1 - p_t) / x_t + (1 - p_h) / x_h)) - 1``.
* revenue per shopper, difference of two means (Welch): ``d = m_t - m_h``, ``se = sqrt(s_t^2 / n_t +
  s_h^2 / n_h)`` with the sample variances (ddof 1) of per-shopper revenue (zero for non-buyers), CI
  ``d +- z se`` and p-value as above.
* per arm: the Wilson score interval of its conversion rate and ``m +- z s / sqrt(n)`` of its revenue
  per shopper (the error bars on the ops page).

Where a figure is undefined (an empty arm, no variation, no converters in the holdout for a ratio) it is
``null`` and the metric's ``notes`` say why; nothing is ever NaN or infinite.

Report format::

    {
      "report": "holdout_lift",
      "window": {"start": ISO, "end": ISO},                 # [start, end), UTC
      "holdout_percent": 5.0,
      "confidence": 0.95,
      "method": {"conversion_rate": str, "revenue_per_shopper": str},
      "storefront": {
        "unit": str,
        "arms": {"treatment": ARM, "holdout": ARM},       # ARM plus "signed_in", "anonymous" counts
        "lift": {"conversion_rate": RATE_LIFT, "revenue_per_shopper": MEAN_LIFT}
      },
      "email": {
        "available": bool,                                 # false: no audience rows (see "note")
        "note": str | null,
        "window_days": 7,
        "unit": str,
        "overall": {"arms": {...}, "lift": {...}} | null,
        "campaigns": {"<campaign>": {"arms": {...}, "lift": {...}}},
        "incomplete_windows": int                          # rows whose window ends after the last event
      }
    }
    ARM = {"shoppers": int, "converters": int, "conversion_rate": float | null,
           "conversion_rate_ci95": [lo, hi] | null, "revenue": float,
           "revenue_per_shopper": float | null, "revenue_per_shopper_ci95": [lo, hi] | null}
    RATE_LIFT = {"treatment": float | null, "holdout": float | null, "difference": float | null,
                 "ci95": [lo, hi] | null, "relative_difference": float | null,
                 "relative_ci95": [lo, hi] | null, "p_value": float | null, "notes": [str]}
    MEAN_LIFT = the same without "relative_ci95"

`carousel report lift` adds ``"generated_at"`` and ``"inputs"`` (event rows read, audience files).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from rich.table import Table
from scipy.stats import norm

from carousel.rules.holdout import HOLDOUT, TREATMENT, assign_variant

__all__ = [
    "ARMS",
    "AUDIENCE_COLUMNS",
    "CONFIDENCE",
    "LiftError",
    "email_units",
    "last_event_time",
    "lift_report",
    "mean_lift",
    "proportion_lift",
    "read_audiences",
    "read_events",
    "storefront_units",
    "summary_tables",
    "write_report",
]

CONFIDENCE = 0.95
_Z = float(norm.ppf(0.5 + CONFIDENCE / 2))
ARMS: tuple[str, str] = (TREATMENT, HOLDOUT)
AUDIENCE_COLUMNS: tuple[str, ...] = ("campaign", "user_id", "triggered_at", "variant", "held_out")
_EVENT_COLUMNS = ["user_id", "session_id", "event_type", "ts", "quantity", "price"]
# Below this many converters in an arm the normal approximation of a proportion is rough.
_FEW_CONVERTERS = 5

_METHOD = {
    "conversion_rate": (
        "difference of two proportions, normal approximation (Wald, unpooled standard error); "
        "relative difference with the log risk-ratio interval; per-arm Wilson intervals"
    ),
    "revenue_per_shopper": (
        "difference of two means, normal approximation with Welch's standard error "
        "(per-shopper revenue, zero for non-buyers)"
    ),
}


class LiftError(ValueError):
    """Input the lift report cannot be computed from; the message says what is wrong."""


# -- transform ----------------------------------------------------------------------------------------
def lift_report(
    events: pd.DataFrame,
    audiences: pd.DataFrame | None,
    *,
    salt: str,
    holdout_percent: float,
    start: datetime | pd.Timestamp | str,
    end: datetime | pd.Timestamp | str,
    email_window_days: int = 7,
) -> dict[str, Any]:
    """The holdout lift report of one window, storefront and email (format in the module docstring).

    Parameters
    ----------
    events:
        Canonical events (at least ``user_id``, ``session_id``, ``event_type``, ``ts``, ``quantity``,
        ``price``) covering ``[start, end + email_window_days)``; other rows are ignored.
    audiences:
        Email audience rows (``campaign``, ``user_id``, ``triggered_at``, ``variant``, ``held_out``),
        or None / empty when no email was sent: the email section then says so.
    salt, holdout_percent:
        The storefront's holdout assignment (``CAROUSEL_HOLDOUT_SALT``, ``CAROUSEL_HOLDOUT_PERCENT``).
    start, end:
        The report window ``[start, end)``; naive times are UTC.
    email_window_days:
        How long after a trigger a purchase counts for its email.

    Returns
    -------
    dict
        JSON-serialisable: only str, int, float, bool, None, lists and dicts; no NaN or infinity.

    Raises
    ------
    LiftError
        When ``start >= end``, a required column is missing, or no event falls in the window.
    """
    start_ts, end_ts = _utc(start), _utc(end)
    if start_ts >= end_ts:
        raise LiftError(f"start {start_ts:%Y-%m-%dT%H:%M:%SZ} must be before end {end_ts:%Y-%m-%dT%H:%M:%SZ}")
    if email_window_days < 1:
        raise LiftError(f"the email window must be at least one day, not {email_window_days}")
    missing = [c for c in _EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise LiftError(f"events: missing column(s) {', '.join(missing)}")
    ts = pd.to_datetime(events["ts"], utc=True)
    in_window = events.loc[(ts >= start_ts) & (ts < end_ts)]
    if in_window.empty:
        raise LiftError(
            f"no events in the window [{start_ts:%Y-%m-%dT%H:%M:%SZ}, {end_ts:%Y-%m-%dT%H:%M:%SZ})"
        )

    storefront = storefront_units(in_window, salt=salt, holdout_percent=holdout_percent)
    storefront_section = _comparison(storefront)
    for arm in ARMS:
        members = storefront[storefront["arm"] == arm]
        storefront_section["arms"][arm]["signed_in"] = int((members["kind"] == "user").sum())
        storefront_section["arms"][arm]["anonymous"] = int((members["kind"] == "session").sum())
    return {
        "report": "holdout_lift",
        "window": {"start": start_ts.isoformat(), "end": end_ts.isoformat()},
        "holdout_percent": float(holdout_percent),
        "confidence": CONFIDENCE,
        "method": dict(_METHOD),
        "storefront": {
            "unit": "shopper with an event in the window (user_id; session_id for anonymous visitors)",
            **storefront_section,
        },
        "email": _email_section(events, audiences, start=start_ts, end=end_ts, window_days=email_window_days),
    }


def storefront_units(events: pd.DataFrame, *, salt: str, holdout_percent: float) -> pd.DataFrame:
    """One row per storefront subject: ``subject``, ``kind`` (user|session), ``arm``, ``converted``,
    ``revenue``.

    Parameters
    ----------
    events:
        The window's events (every row counts).
    salt, holdout_percent:
        Passed to `assign_variant`.
    """
    anonymous = events["user_id"].isna()
    frame = pd.DataFrame(
        {
            "kind": np.where(anonymous, "session", "user"),
            # The session id stands in for a missing user id, exactly as the API assigns variants.
            "subject": events["user_id"].astype("string").fillna(events["session_id"].astype("string")),
            "purchase": events["event_type"].to_numpy() == "purchase",
            "amount": events["quantity"].astype("float64") * events["price"].astype("float64"),
        }
    )
    frame["amount"] = frame["amount"].where(frame["purchase"], 0.0)
    units = (
        frame.groupby(["kind", "subject"], sort=True)
        .agg(converted=("purchase", "any"), revenue=("amount", "sum"))
        .reset_index()
    )
    units["arm"] = [
        assign_variant(str(s), salt=salt, holdout_percent=holdout_percent) for s in units["subject"]
    ]
    units["converted"] = units["converted"].astype(bool)
    return units[["subject", "kind", "arm", "converted", "revenue"]]


def email_units(
    events: pd.DataFrame,
    audiences: pd.DataFrame,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    window_days: int,
) -> pd.DataFrame:
    """One row per audience row triggered in ``[start, end)``: ``campaign``, ``user_id``,
    ``triggered_at``, ``arm``, ``variant`` (as the audience said), ``converted``, ``revenue``.

    Parameters
    ----------
    events:
        Events covering ``[start, end + window_days)``; only signed-in purchases are used.
    audiences:
        Audience rows with the `AUDIENCE_COLUMNS`.
    start, end:
        Which triggers are reported.
    window_days:
        A purchase in ``(triggered_at, triggered_at + window_days]`` converts the row.
    """
    rows = pd.DataFrame(
        {
            "campaign": audiences["campaign"].astype("string"),
            "user_id": audiences["user_id"].astype("string"),
            "triggered_at": pd.to_datetime(audiences["triggered_at"], utc=True),
            "variant": audiences["variant"].astype("string"),
            "held_out": audiences["held_out"].astype(bool),
        }
    )
    rows = rows[(rows["triggered_at"] >= start) & (rows["triggered_at"] < end) & rows["user_id"].notna()]
    rows = rows.drop_duplicates(["campaign", "user_id", "triggered_at"]).reset_index(drop=True)
    rows["arm"] = np.where(rows["held_out"], HOLDOUT, TREATMENT)
    rows["row"] = np.arange(len(rows))

    # Positional masks: the caller's index may repeat labels (concatenated frames).
    bought = ((events["event_type"] == "purchase") & events["user_id"].notna()).to_numpy(dtype=bool)
    amount = events["quantity"].to_numpy(dtype="float64") * events["price"].to_numpy(dtype="float64")
    purchases = pd.DataFrame(
        {
            "user_id": events["user_id"].astype("string").to_numpy()[bought],
            "ts": pd.to_datetime(events["ts"], utc=True).to_numpy()[bought],
            "amount": amount[bought],
        }
    )
    purchases["user_id"] = purchases["user_id"].astype("string")
    purchases["ts"] = pd.to_datetime(purchases["ts"], utc=True)
    matched = rows[["row", "user_id", "triggered_at"]].merge(purchases, on="user_id", how="inner")
    window = pd.Timedelta(days=window_days)
    matched = matched[
        (matched["ts"] > matched["triggered_at"]) & (matched["ts"] <= matched["triggered_at"] + window)
    ]
    per_row = matched.groupby("row")["amount"].agg(["size", "sum"])
    rows["converted"] = rows["row"].map(per_row["size"]).fillna(0).astype(int) > 0
    rows["revenue"] = rows["row"].map(per_row["sum"]).fillna(0.0).astype("float64")
    return rows[["campaign", "user_id", "triggered_at", "arm", "variant", "converted", "revenue"]]


def _email_section(
    events: pd.DataFrame,
    audiences: pd.DataFrame | None,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    window_days: int,
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "available": False,
        "note": None,
        "window_days": window_days,
        "unit": "audience row: one shopper triggered once by one campaign (held_out rows were not sent)",
        "overall": None,
        "campaigns": {},
        "incomplete_windows": 0,
    }
    if audiences is None or audiences.empty:
        section["note"] = "no email audiences: no email lift to report"
        return section
    missing = [c for c in AUDIENCE_COLUMNS if c not in audiences.columns]
    if missing:
        raise LiftError(f"audiences: missing column(s) {', '.join(missing)}")
    units = email_units(events, audiences, start=start, end=end, window_days=window_days)
    if units.empty:
        section["note"] = "no audience rows were triggered in the window"
        return section
    section["available"] = True
    section["overall"] = _comparison(units)
    section["campaigns"] = {
        str(name): _comparison(group) for name, group in units.groupby("campaign", sort=True)
    }
    last_event = pd.to_datetime(events["ts"], utc=True).max()
    open_windows = int((units["triggered_at"] + pd.Timedelta(days=window_days) > last_event).sum())
    section["incomplete_windows"] = open_windows
    notes = []
    if open_windows:
        notes.append(
            f"{open_windows} audience row(s) were triggered less than {window_days} days before the last "
            "event: their purchases are not all in yet (both arms alike)"
        )
    said_holdout = (units["variant"].fillna("") == HOLDOUT).to_numpy(dtype=bool)
    disagree = int((said_holdout != (units["arm"] == HOLDOUT).to_numpy(dtype=bool)).sum())
    if disagree:
        notes.append(
            f"{disagree} audience row(s) have a variant that disagrees with held_out (held_out wins)"
        )
    section["note"] = "; ".join(notes) or None
    return section


def _comparison(units: pd.DataFrame) -> dict[str, Any]:
    """Arms and lift of units with columns ``arm``, ``converted`` (bool) and ``revenue``."""
    by_arm = {arm: units[units["arm"] == arm] for arm in ARMS}
    arms = {arm: _arm_summary(frame) for arm, frame in by_arm.items()}
    t, h = by_arm[TREATMENT], by_arm[HOLDOUT]
    return {
        "arms": arms,
        "lift": {
            "conversion_rate": proportion_lift(
                int(t["converted"].sum()), len(t), int(h["converted"].sum()), len(h)
            ),
            "revenue_per_shopper": mean_lift(
                t["revenue"].to_numpy(dtype="float64"), h["revenue"].to_numpy(dtype="float64")
            ),
        },
    }


def _arm_summary(frame: pd.DataFrame) -> dict[str, Any]:
    n = len(frame)
    converters = int(frame["converted"].sum())
    revenue = frame["revenue"].to_numpy(dtype="float64")
    summary: dict[str, Any] = {
        "shoppers": n,
        "converters": converters,
        "conversion_rate": converters / n if n else None,
        "conversion_rate_ci95": _wilson(converters, n),
        "revenue": float(revenue.sum()),
        "revenue_per_shopper": float(revenue.mean()) if n else None,
        "revenue_per_shopper_ci95": None,
    }
    if n >= 2:
        half = _Z * math.sqrt(float(revenue.var(ddof=1)) / n)
        summary["revenue_per_shopper_ci95"] = [float(revenue.mean()) - half, float(revenue.mean()) + half]
    return summary


# -- statistics ---------------------------------------------------------------------------------------
def proportion_lift(x_t: int, n_t: int, x_h: int, n_h: int) -> dict[str, Any]:
    """Treatment minus holdout conversion rate with its 95% interval and p-value (normal approximation
    on the difference of two proportions, unpooled standard error; formulas in the module docstring).

    Parameters
    ----------
    x_t, n_t:
        Converters and shoppers in the treatment arm.
    x_h, n_h:
        The same in the holdout arm.

    Returns
    -------
    dict
        ``treatment``, ``holdout``, ``difference``, ``ci95``, ``relative_difference``,
        ``relative_ci95``, ``p_value``, ``notes``; undefined figures are None and a note says why.
    """
    out: dict[str, Any] = {
        "treatment": x_t / n_t if n_t else None,
        "holdout": x_h / n_h if n_h else None,
        "difference": None,
        "ci95": None,
        "relative_difference": None,
        "relative_ci95": None,
        "p_value": None,
        "notes": [],
    }
    notes: list[str] = out["notes"]
    empty = [arm for arm, n in ((TREATMENT, n_t), (HOLDOUT, n_h)) if n == 0]
    if empty:
        notes.append(f"no shoppers in the {' and '.join(empty)} arm: no comparison")
        return out
    p_t, p_h = x_t / n_t, x_h / n_h
    diff = p_t - p_h
    out["difference"] = diff
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_h * (1 - p_h) / n_h)
    if se > 0:
        out["ci95"] = [diff - _Z * se, diff + _Z * se]
        out["p_value"] = _two_sided_p(diff / se)
    else:
        notes.append("every shopper in both arms converted, or none did: no interval")
    if x_h == 0:
        notes.append("no converters in the holdout: relative difference undefined")
    else:
        out["relative_difference"] = p_t / p_h - 1
        if x_t > 0:
            se_log = math.sqrt((1 - p_t) / x_t + (1 - p_h) / x_h)
            log_rr = math.log(p_t / p_h)
            out["relative_ci95"] = [math.exp(log_rr - _Z * se_log) - 1, math.exp(log_rr + _Z * se_log) - 1]
        else:
            notes.append("no converters in the treatment: no interval for the relative difference")
    if min(x_t, x_h, n_t - x_t, n_h - x_h) < _FEW_CONVERTERS:
        notes.append(
            f"fewer than {_FEW_CONVERTERS} converters (or non-converters) in an arm: the normal "
            "approximation is rough"
        )
    return out


def mean_lift(values_t: np.ndarray, values_h: np.ndarray) -> dict[str, Any]:
    """Treatment minus holdout mean (revenue per shopper) with its 95% interval and p-value (normal
    approximation with Welch's standard error from the sample variances).

    Parameters
    ----------
    values_t, values_h:
        One value per shopper (zero for non-buyers) in the treatment and the holdout arm.

    Returns
    -------
    dict
        ``treatment``, ``holdout``, ``difference``, ``ci95``, ``relative_difference``, ``p_value``,
        ``notes``; undefined figures are None and a note says why.
    """
    n_t, n_h = len(values_t), len(values_h)
    m_t = float(values_t.mean()) if n_t else None
    m_h = float(values_h.mean()) if n_h else None
    out: dict[str, Any] = {
        "treatment": m_t,
        "holdout": m_h,
        "difference": None,
        "ci95": None,
        "relative_difference": None,
        "p_value": None,
        "notes": [],
    }
    notes: list[str] = out["notes"]
    if m_t is None or m_h is None:
        empty = [arm for arm, n in ((TREATMENT, n_t), (HOLDOUT, n_h)) if n == 0]
        notes.append(f"no shoppers in the {' and '.join(empty)} arm: no comparison")
        return out
    diff = m_t - m_h
    out["difference"] = diff
    out["relative_difference"] = diff / m_h if m_h > 0 else None
    if m_h <= 0:
        notes.append("no holdout revenue: relative difference undefined")
    if min(n_t, n_h) < 2:
        notes.append("fewer than 2 shoppers in an arm: no variance, no interval")
        return out
    se = math.sqrt(float(values_t.var(ddof=1)) / n_t + float(values_h.var(ddof=1)) / n_h)
    if se > 0:
        out["ci95"] = [diff - _Z * se, diff + _Z * se]
        out["p_value"] = _two_sided_p(diff / se)
    else:
        notes.append("every shopper in both arms spent the same: no interval")
    return out


def _wilson(x: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    p = x / n
    denominator = 1 + _Z**2 / n
    centre = (p + _Z**2 / (2 * n)) / denominator
    half = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n * n)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _two_sided_p(z: float) -> float:
    return float(2 * norm.sf(abs(z)))


def _utc(value: datetime | pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# -- extract ------------------------------------------------------------------------------------------
def _events_dataset(event_files: Sequence[Path]) -> ds.Dataset:
    return ds.dataset([str(p) for p in event_files], format="parquet")


def last_event_time(event_files: Sequence[Path]) -> pd.Timestamp | None:
    """The newest event timestamp in these lake parts (reads only the ``ts`` column), None if empty."""
    if not event_files:
        return None
    newest = pc.max(_events_dataset(event_files).to_table(columns=["ts"])["ts"]).as_py()
    return None if newest is None else _utc(newest)


def read_events(event_files: Sequence[Path], *, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The columns the report needs of the events in ``[start, end)``, read from lake parts."""
    if not event_files:
        return pd.DataFrame(columns=_EVENT_COLUMNS)
    ts_type = pa.timestamp("us", tz="UTC")
    window = (ds.field("ts") >= pa.scalar(start.to_pydatetime(), type=ts_type)) & (
        ds.field("ts") < pa.scalar(end.to_pydatetime(), type=ts_type)
    )
    table = _events_dataset(event_files).to_table(columns=_EVENT_COLUMNS, filter=window)
    return table.to_pandas()


def read_audiences(paths: Sequence[Path]) -> pd.DataFrame | None:
    """The audience rows of these Parquet files (the `AUDIENCE_COLUMNS` only), None when there are none.

    Raises
    ------
    LiftError
        When a file cannot be read or lacks a column, naming the file.
    """
    frames = []
    for path in paths:
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise LiftError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [c for c in AUDIENCE_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise LiftError(f"{path}: missing column(s) {', '.join(missing)} for an audience file")
        # Empty campaigns are written too; their column types may be null, so they are skipped.
        if parquet.metadata.num_rows:
            frames.append(parquet.read(columns=list(AUDIENCE_COLUMNS)).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else None


# -- load ---------------------------------------------------------------------------------------------
def write_report(report: Mapping[str, Any], path: Path) -> Path:
    """Write the report as indented JSON, atomically (a reader never sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)
    return path


# -- summary ------------------------------------------------------------------------------------------
def summary_tables(report: Mapping[str, Any]) -> list[Table]:
    """The report as rich tables for the terminal: per section the arms, then the lift lines."""
    sections: list[tuple[str, Mapping[str, Any]]] = [("storefront", report["storefront"])]
    email = report["email"]
    if email["available"]:
        sections.append((f"email, all campaigns ({email['window_days']}-day window)", email["overall"]))
        sections += [(f"email: {name}", section) for name, section in email["campaigns"].items()]
    tables = []
    for title, section in sections:
        table = Table(title=title, title_justify="left")
        for column in ("arm", "shoppers", "converters", "conversion", "revenue", "revenue/shopper"):
            table.add_column(column, justify="left" if column == "arm" else "right")
        for arm in ARMS:
            figures = section["arms"][arm]
            table.add_row(
                arm,
                f"{figures['shoppers']:,}",
                f"{figures['converters']:,}",
                _percent(figures["conversion_rate"]),
                _money(figures["revenue"]),
                _money(figures["revenue_per_shopper"]),
            )
        rate, spend = section["lift"]["conversion_rate"], section["lift"]["revenue_per_shopper"]
        table.caption = (
            f"conversion {_points(rate['difference'])} (95% CI {_interval(rate['ci95'], _points)}, "
            f"relative {_signed_percent(rate['relative_difference'])}, p {_p(rate['p_value'])}); "
            f"revenue/shopper {_signed_money(spend['difference'])} (95% CI "
            f"{_interval(spend['ci95'], _signed_money)}, p {_p(spend['p_value'])})"
            + "".join(f"\n{note}" for note in [*rate["notes"], *spend["notes"]])
        )
        table.caption_justify = "left"
        tables.append(table)
    return tables


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _signed_percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f} pp"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _signed_money(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.2f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"= {value:.3g}"


def _interval(bounds: Sequence[float] | None, fmt: Callable[[float | None], str]) -> str:
    return "-" if bounds is None else f"{fmt(bounds[0])} .. {fmt(bounds[1])}"

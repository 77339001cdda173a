"""The holdout lift report on hand-checkable data: rates, revenue, differences and their intervals.

Expected figures are worked out here from the textbook formulas (with `statistics.NormalDist`, not the
module's scipy helpers), so a wrong formula in `jobs.evaluation.lift` fails these tests.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pandas as pd
import pytest

from carousel.rules.holdout import HOLDOUT, TREATMENT, assign_variant
from jobs.evaluation.lift import LiftError, lift_report
from serving.routes.lift import render_report

SALT = "lift-test-salt"
HALF = 50.0
START = pd.Timestamp("2026-10-01T00:00:00Z")
END = pd.Timestamp("2026-10-31T00:00:00Z")
Z = NormalDist().inv_cdf(0.975)  # 1.95996...


def _ids(arm: str, count: int, prefix: str) -> list[str]:
    """The first `count` ids prefix0, prefix1, ... that the salted hash puts in `arm`."""
    found = []
    for i in range(1000):
        candidate = f"{prefix}{i}"
        if assign_variant(candidate, salt=SALT, holdout_percent=HALF) == arm:
            found.append(candidate)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} {arm} ids among {prefix}0..999")


def _event(
    user: str | None, session: str, event_type: str, ts: str, quantity: int = 1, price: float = 1.0
) -> dict[str, object]:
    return {
        "user_id": user,
        "session_id": session,
        "item_id": "i1",
        "event_type": event_type,
        "ts": pd.Timestamp(ts),
        "quantity": quantity,
        "price": price,
        "country": "France",
        "device": "mobile",
        "referrer": None,
    }


# Treatment: 10 subjects (8 signed in, 2 anonymous sessions), 4 buy: 2x10 + 1x5 + 3x2.5 + 1x17.5 = 50.
# Holdout: 10 signed-in shoppers, 2 buy: 1x8 + 2x6 = 20.
TREATMENT_USERS = _ids(TREATMENT, 8, "t")
TREATMENT_SESSIONS = _ids(TREATMENT, 2, "anon-")
HOLDOUT_USERS = _ids(HOLDOUT, 10, "h")
TREATMENT_REVENUE = [20.0, 5.0, 7.5, 17.5] + [0.0] * 6
HOLDOUT_REVENUE = [8.0, 12.0] + [0.0] * 8


def _storefront_events() -> pd.DataFrame:
    rows = []
    for user in TREATMENT_USERS + HOLDOUT_USERS:
        # The session id of a signed-in shopper plays no part in the assignment.
        rows.append(_event(user, f"s-{user}", "view", "2026-10-05T10:00:00Z"))
    for session in TREATMENT_SESSIONS:
        rows.append(_event(None, session, "view", "2026-10-06T10:00:00Z"))
    t1, t2, t3 = TREATMENT_USERS[:3]
    rows += [
        _event(t1, f"s-{t1}", "purchase", "2026-10-05T10:05:00Z", 2, 10.0),
        _event(t2, f"s-{t2}", "purchase", "2026-10-07T10:05:00Z", 1, 5.0),
        _event(t3, f"s-{t3}", "purchase", "2026-10-08T10:05:00Z", 3, 2.5),
        _event(None, TREATMENT_SESSIONS[0], "purchase", "2026-10-06T10:05:00Z", 1, 17.5),
        _event(HOLDOUT_USERS[0], "s-h", "purchase", "2026-10-09T00:00:00Z", 1, 8.0),
        _event(HOLDOUT_USERS[1], "s-h", "purchase", "2026-10-30T23:59:59Z", 2, 6.0),
        # Outside [START, END): counted neither as converters nor as revenue.
        _event(HOLDOUT_USERS[2], "s-h", "purchase", "2026-09-30T23:59:59Z", 1, 100.0),
        _event(HOLDOUT_USERS[3], "s-h", "purchase", "2026-10-31T00:00:00Z", 1, 100.0),
        # A shopper seen only before the window is not a subject of this window.
        _event("gone-before", "s-g", "purchase", "2026-09-15T00:00:00Z", 1, 100.0),
    ]
    return pd.DataFrame(rows)


def _report(events: pd.DataFrame, audiences: pd.DataFrame | None = None, **kw: object) -> dict:
    args: dict = {"salt": SALT, "holdout_percent": HALF, "start": START, "end": END, **kw}
    return lift_report(events, audiences, **args)


def test_storefront_arms_count_shoppers_converters_and_revenue_in_the_window() -> None:
    """Each arm counts its subjects (sessions for anonymous visitors), buyers and revenue in [start, end)."""
    arms = _report(_storefront_events())["storefront"]["arms"]
    treatment, holdout = arms[TREATMENT], arms[HOLDOUT]
    assert (treatment["shoppers"], treatment["signed_in"], treatment["anonymous"]) == (10, 8, 2)
    assert (holdout["shoppers"], holdout["signed_in"], holdout["anonymous"]) == (10, 10, 0)
    assert (treatment["converters"], holdout["converters"]) == (4, 2)
    assert treatment["conversion_rate"] == pytest.approx(0.4)
    assert holdout["conversion_rate"] == pytest.approx(0.2)
    assert treatment["revenue"] == pytest.approx(50.0)
    assert holdout["revenue"] == pytest.approx(20.0)
    assert treatment["revenue_per_shopper"] == pytest.approx(5.0)
    assert holdout["revenue_per_shopper"] == pytest.approx(2.0)
    # Wilson score interval of 4/10.
    p, n = 0.4, 10
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    assert treatment["conversion_rate_ci95"] == pytest.approx([centre - half, centre + half])


def test_conversion_lift_is_the_difference_of_proportions_with_a_wald_interval() -> None:
    """Difference 0.4 - 0.2 with CI d +- z sqrt(p1(1-p1)/n1 + p2(1-p2)/n2), p-value 2(1 - Phi(|d|/se)),
    and the relative difference with the log risk-ratio interval."""
    lift = _report(_storefront_events())["storefront"]["lift"]["conversion_rate"]
    p_t, n_t, x_t, p_h, n_h, x_h = 0.4, 10, 4, 0.2, 10, 2
    d = p_t - p_h
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_h * (1 - p_h) / n_h)  # sqrt(0.024 + 0.016) = 0.2
    assert se == pytest.approx(0.2)
    assert lift["treatment"] == pytest.approx(0.4) and lift["holdout"] == pytest.approx(0.2)
    assert lift["difference"] == pytest.approx(0.2)
    assert lift["ci95"] == pytest.approx([d - Z * se, d + Z * se])  # [-0.19199, 0.59199]
    assert lift["ci95"][0] == pytest.approx(-0.191993, abs=1e-6)
    assert lift["p_value"] == pytest.approx(2 * (1 - NormalDist().cdf(1.0)))  # z = 1: 0.3173
    assert lift["relative_difference"] == pytest.approx(1.0)
    se_log = math.sqrt((1 - p_t) / x_t + (1 - p_h) / x_h)
    assert lift["relative_ci95"] == pytest.approx(
        [math.exp(math.log(2) - Z * se_log) - 1, math.exp(math.log(2) + Z * se_log) - 1]
    )
    assert any("rough" in note for note in lift["notes"])  # 2 holdout converters: a small sample


def test_revenue_per_shopper_lift_uses_welch_standard_error() -> None:
    """Difference of mean revenue per shopper with CI d +- z sqrt(s1^2/n1 + s2^2/n2) (sample variances)."""
    lift = _report(_storefront_events())["storefront"]["lift"]["revenue_per_shopper"]

    def sample_variance(values: list[float]) -> float:
        mean = sum(values) / len(values)
        return sum((v - mean) ** 2 for v in values) / (len(values) - 1)

    # By hand: treatment 537.5 / 9, holdout 168 / 9.
    assert sample_variance(TREATMENT_REVENUE) == pytest.approx(537.5 / 9)
    assert sample_variance(HOLDOUT_REVENUE) == pytest.approx(168 / 9)
    se = math.sqrt(sample_variance(TREATMENT_REVENUE) / 10 + sample_variance(HOLDOUT_REVENUE) / 10)
    assert lift["treatment"] == pytest.approx(5.0) and lift["holdout"] == pytest.approx(2.0)
    assert lift["difference"] == pytest.approx(3.0)
    assert lift["relative_difference"] == pytest.approx(1.5)
    assert lift["ci95"] == pytest.approx([3.0 - Z * se, 3.0 + Z * se])
    assert lift["p_value"] == pytest.approx(2 * (1 - NormalDist().cdf(3.0 / se)))


def _email_fixture() -> tuple[pd.DataFrame, pd.DataFrame]:
    trigger = pd.Timestamp("2026-10-10T12:00:00Z")
    # `held_out` decides the arm, not the storefront hash: this held-out shopper hashes to treatment.
    held_out_treatment_hash = _ids(TREATMENT, 1, "mail-")[0]
    audiences = pd.DataFrame(
        {
            "campaign": ["abandoned_cart"] * 5 + ["post_purchase", "abandoned_cart"],
            "user_id": ["a", "b", "c", held_out_treatment_hash, "e", "f", "late"],
            "triggered_at": [trigger] * 6 + [END + pd.Timedelta(hours=1)],
            "variant": [TREATMENT, TREATMENT, TREATMENT, HOLDOUT, HOLDOUT, TREATMENT, TREATMENT],
            "held_out": [False, False, False, True, True, False, False],
        }
    )
    day = pd.Timedelta(days=1)
    events = pd.DataFrame(
        [
            _event("a", "sa", "purchase", str(trigger + 3 * day), 2, 15.0),  # day 3: counts
            _event("a", "sa", "purchase", str(trigger + 9 * day), 1, 99.0),  # day 9: too late
            _event("b", "sb", "purchase", str(trigger + 9 * day), 1, 40.0),  # day 9: too late
            _event("c", "sc", "purchase", str(trigger - pd.Timedelta(hours=1)), 1, 40.0),  # before
            _event("c", "sc", "view", str(trigger + day)),
            _event(held_out_treatment_hash, "sd", "purchase", str(trigger + 2 * day), 1, 12.0),
            _event("f", "sf", "purchase", str(trigger), 1, 50.0),  # the triggering purchase itself
            _event("f", "sf", "purchase", str(trigger + 7 * day), 2, 5.0),  # the window's last moment
            _event("late", "sl", "purchase", str(END + 2 * day), 1, 70.0),
        ]
    )
    return events, audiences


def test_email_counts_purchases_within_the_window_after_the_trigger() -> None:
    """A purchase 3 days after the trigger converts, one 9 days after (window 7) or before it does not;
    held-out rows form the holdout arm; rows triggered after the window are left out."""
    events, audiences = _email_fixture()
    email = _report(events, audiences, email_window_days=7)["email"]
    assert email["available"] is True and email["window_days"] == 7
    cart = email["campaigns"]["abandoned_cart"]["arms"]
    assert (cart[TREATMENT]["shoppers"], cart[TREATMENT]["converters"]) == (3, 1)
    assert cart[TREATMENT]["revenue"] == pytest.approx(30.0)
    assert cart[TREATMENT]["revenue_per_shopper"] == pytest.approx(10.0)
    assert (cart[HOLDOUT]["shoppers"], cart[HOLDOUT]["converters"]) == (2, 1)
    assert cart[HOLDOUT]["revenue"] == pytest.approx(12.0)
    post = email["campaigns"]["post_purchase"]["arms"]
    assert (post[TREATMENT]["shoppers"], post[TREATMENT]["converters"]) == (1, 1)
    assert post[TREATMENT]["revenue"] == pytest.approx(10.0)
    assert post[HOLDOUT]["shoppers"] == 0
    overall = email["overall"]
    assert (overall["arms"][TREATMENT]["shoppers"], overall["arms"][TREATMENT]["converters"]) == (4, 2)
    assert overall["arms"][TREATMENT]["revenue"] == pytest.approx(40.0)
    rate = overall["lift"]["conversion_rate"]
    assert rate["difference"] == pytest.approx(2 / 4 - 1 / 2)
    se = math.sqrt(0.5 * 0.5 / 4 + 0.5 * 0.5 / 2)
    assert rate["ci95"] == pytest.approx([-Z * se, Z * se])
    # The post-purchase campaign has no holdout rows: no comparison, and a note instead of NaN.
    post_rate = email["campaigns"]["post_purchase"]["lift"]["conversion_rate"]
    assert post_rate["difference"] is None and post_rate["ci95"] is None and post_rate["notes"]


def test_email_section_says_absent_without_audiences() -> None:
    """No audience frame (or an empty one) gives an email section marked unavailable, not an error."""
    events = _storefront_events()
    for audiences in (
        None,
        pd.DataFrame(columns=["campaign", "user_id", "triggered_at", "variant", "held_out"]),
    ):
        email = _report(events, audiences)["email"]
        assert email["available"] is False and email["overall"] is None and email["campaigns"] == {}
        assert "no email audiences" in email["note"]


def test_zero_counts_give_null_intervals_and_notes_never_nan() -> None:
    """An empty holdout arm, or no converters anywhere, yields nulls with notes and strict JSON."""
    events = _storefront_events()
    no_holdout = _report(events, holdout_percent=0.0)
    rate = no_holdout["storefront"]["lift"]["conversion_rate"]
    assert no_holdout["storefront"]["arms"][HOLDOUT]["shoppers"] == 0
    assert rate["holdout"] is None and rate["ci95"] is None and rate["p_value"] is None
    assert any("no shoppers in the holdout arm" in note for note in rate["notes"])
    spend = no_holdout["storefront"]["lift"]["revenue_per_shopper"]
    assert spend["difference"] is None and spend["ci95"] is None and spend["notes"]

    views_only = _report(events[events["event_type"] == "view"])
    rate = views_only["storefront"]["lift"]["conversion_rate"]
    assert rate["difference"] == 0.0 and rate["ci95"] is None and rate["p_value"] is None
    assert rate["relative_difference"] is None and rate["notes"]
    spend = views_only["storefront"]["lift"]["revenue_per_shopper"]
    assert spend["difference"] == 0.0 and spend["ci95"] is None and spend["notes"]
    for report in (no_holdout, views_only):
        json.dumps(report, allow_nan=False)  # raises on NaN or infinity


def test_bad_windows_are_refused() -> None:
    """start >= end and a window without events raise LiftError."""
    events = _storefront_events()
    with pytest.raises(LiftError, match="must be before"):
        _report(events, start=END, end=START)
    with pytest.raises(LiftError, match="no events in the window"):
        _report(events, start="2020-01-01", end="2020-02-01")


def test_report_page_escapes_what_the_file_says() -> None:
    """Campaign names and notes from the report file reach the page HTML-escaped."""
    events, audiences = _email_fixture()
    audiences.loc[0, "campaign"] = "<script>alert(1)</script>"
    page = render_report(_report(pd.concat([_storefront_events(), events]), audiences))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Storefront, all campaigns and three campaigns: one chart each.
    assert page.count("<svg") == 5 and page.count("</svg>") == 5

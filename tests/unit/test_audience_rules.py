"""The batch audience rules (`jobs.marketing.audiences`) on hand-made events."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from carousel.rules.erasure import Erasures, erasure_digest
from carousel.rules.holdout import HOLDOUT, assign_variant
from jobs.marketing.audiences import AudienceRules, apply_rules, compute_audiences

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
RULES = AudienceRules(cart_abandon_after_s=3600, post_purchase_after_days=2, post_purchase_until_days=7)


def _events(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _found(events: pd.DataFrame) -> pd.DataFrame:
    return compute_audiences(
        events,
        now=NOW,
        rules=RULES,
        similar=lambda item: [f"{item}-a", f"{item}-b", f"{item}-c"],
        personal=lambda user: ["p1", "bought", "p2"],
    )


def test_each_trigger_and_its_items() -> None:
    events = _events(
        [
            ("carter", "c1", "add_to_cart", "2026-11-20T09:00Z"),
            ("carter", "c2", "add_to_cart", "2026-11-20T10:00Z"),
            ("carter", "c2", "remove_from_cart", "2026-11-20T10:05Z"),
            ("fresh", "f1", "add_to_cart", "2026-11-20T11:30Z"),  # 30 minutes: not abandoned
            ("buyer", "bought", "purchase", "2026-11-17T12:00Z"),  # 3 days ago: post-purchase
            ("buyer", "old", "purchase", "2026-11-01T12:00Z"),  # outside the look-back
            ("looker", "v1", "view", "2026-11-19T10:00Z"),
            ("looker", "v1", "view", "2026-11-19T11:00Z"),
            ("looker", "v1", "view", "2026-11-19T12:00Z"),
            ("looker", "v2", "view", "2026-11-19T12:00Z"),
            ("carted-looker", "v3", "view", "2026-11-19T10:00Z"),
            ("carted-looker", "v3", "view", "2026-11-19T11:00Z"),
            ("carted-looker", "v3", "view", "2026-11-19T12:00Z"),
            ("carted-looker", "v3", "add_to_cart", "2026-11-20T11:50Z"),
        ]
    )
    found = _found(events).set_index(["campaign", "user_id"])
    assert sorted(found.index) == [
        ("abandoned_cart", "carter"),
        ("browse_abandonment", "looker"),
        ("post_purchase", "buyer"),
    ]
    cart = found.loc[("abandoned_cart", "carter")]
    assert [i["item_id"] for i in cart["items"]] == ["c1", "c1-a", "c1-b"]
    assert cart["triggered_at"] == pd.Timestamp("2026-11-20T09:00Z")
    post = [i["item_id"] for i in found.loc[("post_purchase", "buyer")]["items"]]
    assert post == ["bought-a", "bought-b", "bought-c", "p1", "p2"]  # never what they bought
    browse = [i["item_id"] for i in found.loc[("browse_abandonment", "looker")]["items"]]
    assert browse == ["v1", "v1-a", "v1-b", "v1-c"]


def test_consent_erasure_holdout_and_cap() -> None:
    salt, percent = "s", 50.0
    users = [f"x{k}" for k in range(40)]
    held = next(u for u in users[5:] if assign_variant(u, salt=salt, holdout_percent=percent) == HOLDOUT)
    rows = pd.DataFrame(
        {
            "campaign": "abandoned_cart",
            "user_id": users,
            "triggered_at": pd.Timestamp("2026-11-20T09:00Z"),
            "items": [[{"item_id": "i", "reason": {}}]] * len(users),
        }
    )
    out = apply_rules(
        rows,
        no_marketing={"x1"},
        erased=Erasures(frozenset({erasure_digest("x2", "s" * 20)}), "s" * 20),
        salt=salt,
        holdout_percent=percent,
        previous={
            ("abandoned_cart", "x3"): pd.Timestamp("2026-11-19T20:00Z"),  # 13 h before: capped
            ("abandoned_cart", "x4"): pd.Timestamp("2026-11-18T20:00Z"),  # 37 h before: a new row
        },
        cap_hours=24,
    ).set_index("user_id")
    assert "x1" not in out.index and "x2" not in out.index
    assert out.loc["x3", "triggered_at"] == pd.Timestamp("2026-11-19T20:00Z")
    assert out.loc["x4", "triggered_at"] == pd.Timestamp("2026-11-20T09:00Z")
    assert out.loc[held, "held_out"] and out.loc[held, "variant"] == HOLDOUT
    assert (out["held_out"] == (out["variant"] == HOLDOUT)).all()

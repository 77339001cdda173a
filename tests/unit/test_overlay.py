"""The real-time overlay's rules on plain data (serving/overlay.py)."""

from __future__ import annotations

from typing import Any

from serving.overlay import Triggers, apply_overlay, triggers


def _items(*ids: str) -> list[dict[str, Any]]:
    return [{"item_id": i, "score": 1.0, "reason": {"code": "viewed", "text": "x"}} for i in ids]


def test_a_cart_is_abandoned_only_once_its_newest_addition_is_older_than_the_window() -> None:
    cart = {"a": 100.0, "b": 150.0}
    assert triggers(cart, {}, now=200.0, cart_abandon_after_s=60).abandoned_cart == []
    assert triggers(cart, {}, now=210.0, cart_abandon_after_s=60).abandoned_cart == ["b", "a"]


def test_purchases_are_removed_and_complements_come_first() -> None:
    fired = Triggers(abandoned_cart=[], recent_purchases=["p"])
    out = apply_overlay(
        _items("p", "x", "y", "z"),
        fired=fired,
        purchased={"p": 1.0},
        complements={"p": _items("c1", "x")},
        unavailable=frozenset(),
        n=4,
    )
    assert [i["item_id"] for i in out] == ["c1", "x", "y", "z"]
    assert [i["reason"]["code"] for i in out[:2]] == ["bought_with", "bought_with"]


def test_cart_reminders_lead_then_completions_and_unavailable_items_are_skipped() -> None:
    fired = Triggers(abandoned_cart=["k"], recent_purchases=[])
    out = apply_overlay(
        _items("x", "y", "z", "w"),
        fired=fired,
        purchased={},
        complements={"k": _items("gone", "m")},
        unavailable=frozenset({"gone", "y"}),
        n=4,
    )
    assert [(i["item_id"], i["reason"]["code"]) for i in out] == [
        ("k", "cart_reminder"),
        ("m", "completes_cart"),
        ("x", "viewed"),
        ("z", "viewed"),
    ]

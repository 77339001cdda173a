"""The session list rule (`carousel.rules.sessions`) and the segment order (`segment_order`) on small
hand-made sessions, with expectations worked out by hand."""

from __future__ import annotations

import pytest

from carousel.rules.segments import segment_order
from carousel.rules.sessions import (
    ANCHOR_WEIGHTS,
    RECENCY_DECAY,
    SEGMENT_WEIGHT,
    Anchor,
    session_anchors,
    session_list,
)


def _similar(*pairs: tuple[str, float]) -> list[dict[str, object]]:
    return [{"item_id": item, "score": score} for item, score in pairs]


def _segment(*items: str) -> list[dict[str, object]]:
    return [{"item_id": i, "score": 1.0, "reason": {"code": "bestseller", "text": "Best"}} for i in items]


def test_anchors_are_newest_first_each_item_once_with_its_strongest_kind() -> None:
    """An item viewed then carted anchors once as a cart; recency decays by position, not seconds."""
    anchors = session_anchors({"a": 10.0, "b": 20.0, "c": 30.0}, {"b": 25.0}, {"d": 5.0})
    assert [(a.item_id, a.kind) for a in anchors] == [
        ("c", "view"),
        ("b", "add_to_cart"),
        ("a", "view"),
        ("d", "purchase"),
    ]
    assert [a.weight for a in anchors] == pytest.approx(
        [
            1.0,
            ANCHOR_WEIGHTS["add_to_cart"] * RECENCY_DECAY,
            RECENCY_DECAY**2,
            ANCHOR_WEIGHTS["purchase"] * RECENCY_DECAY**3,
        ]
    )


def test_the_window_keeps_the_current_session_only() -> None:
    anchors = session_anchors({"old": 0.0, "new": 5_000.0, "newer": 5_100.0}, {}, {}, window_s=3_600)
    assert [a.item_id for a in anchors] == ["newer", "new"]


def test_candidates_sum_the_anchors_normalised_pull_and_name_the_strongest_anchor() -> None:
    """x is a neighbour of both anchors and wins; y is only the newest anchor's; each list is divided by
    its best score, so b's weak absolute scores still count fully."""
    anchors = [Anchor("a", "view", 1.0), Anchor("b", "view", 0.5)]
    similar = {"a": _similar(("y", 10.0), ("x", 5.0)), "b": _similar(("x", 0.2), ("b2", 0.1))}
    titles = {"a": "Red Mug", "b": "Blue Cup"}
    out = session_list(anchors, similar, [], n=10, title_of=titles.get)
    # x: 1.0 * 5/10 + 0.5 * 0.2/0.2 = 1.0; y: 1.0; b2: 0.5 * 0.1/0.2 = 0.25 (ties by id: x < y).
    assert [(i["item_id"], i["score"]) for i in out] == [("x", 1.0), ("y", 1.0), ("b2", 0.25)]
    assert out[0]["reason"] == {"code": "because_you_viewed", "text": "Because you viewed Red Mug"}
    assert out[2]["reason"]["text"] == "Because you viewed Blue Cup"


def test_the_segment_list_breaks_ties_fills_the_rest_and_keeps_its_reasons() -> None:
    anchors = [Anchor("a", "add_to_cart", 1.0)]
    similar = {"a": _similar(("p", 1.0), ("q", 1.0))}
    out = session_list(anchors, similar, _segment("q", "s1", "s2"), n=4, title_of=lambda _: None)
    assert [i["item_id"] for i in out] == ["q", "p", "s1", "s2"]
    assert out[0]["reason"] == {"code": "completes_cart", "text": "Goes with what is in your cart"}
    assert out[2]["reason"]["code"] == "bestseller"
    assert out[2]["score"] == pytest.approx(SEGMENT_WEIGHT * 0.99, abs=1e-4)


def test_excluded_items_and_anchors_never_come_back() -> None:
    """Bought or unavailable items are left out everywhere; an anchor is never a candidate of another."""
    anchors = [Anchor("a", "view", 1.0), Anchor("b", "view", 0.5)]
    similar = {"a": _similar(("b", 1.0), ("gone", 0.9), ("ok", 0.8))}
    out = session_list(anchors, similar, _segment("gone", "b", "s"), n=10, exclude={"gone"})
    assert [i["item_id"] for i in out] == ["ok", "b", "s"]  # "b" only as the segment list's item


def test_segment_order_prefers_the_browsed_department_then_the_context() -> None:
    assert segment_order({"home": 3.0, "garden": 5.0}, {"country": "France", "device": None}) == [
        "category:garden",
        "country:france",
        "global",
    ]
    assert segment_order({}, {}) == ["global"]


def test_items_sharing_a_time_share_one_recency_step() -> None:
    """A basket's lines (one time) weigh alike; the next older time is one step further."""
    anchors = session_anchors({"a": 5.0, "b": 5.0, "c": 5.0, "d": 1.0}, {}, {})
    weights = {a.item_id: a.weight for a in anchors}
    assert weights["a"] == weights["b"] == weights["c"] == pytest.approx(1.0)
    assert weights["d"] == pytest.approx(RECENCY_DECAY)

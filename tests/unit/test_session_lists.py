"""The session list rule (`carousel.rules.sessions`) and the segment order (`segment_order`) on small
hand-made sessions, with expectations worked out by hand."""

from __future__ import annotations

import random

import pytest

from carousel.rules.segments import segment_order
from carousel.rules.sessions import (
    ANCHOR_WEIGHTS,
    RECENCY_DECAY,
    SEGMENT_WEIGHT,
    Anchor,
    Neighbours,
    Placed,
    neighbours,
    placed,
    session_anchors,
    session_list,
)


def _similar(*pairs: tuple[str, float]) -> Neighbours:
    return neighbours({"item_id": item, "score": score} for item, score in pairs)


def _segment(*items: str) -> Placed:
    return placed(
        {"item_id": i, "score": 1.0, "reason": {"code": "bestseller", "text": "Best"}} for i in items
    )


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
    out = session_list(anchors, similar, _segment(), n=10, title_of=titles.get)
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


def test_only_the_first_segment_items_are_read_yet_the_list_is_the_full_blends_top() -> None:
    """`session_list` reads the segment list only as far as the answer can reach; on random sessions its
    answer equals scoring every item of every list and sorting them all (the rule written plainly)."""
    rng = random.Random(3)
    for _ in range(300):
        pool = [f"i{k}" for k in range(rng.randint(5, 60))]
        anchors = [Anchor(item, rng.choice(list(ANCHOR_WEIGHTS)), rng.random() + 0.1) for item in pool[:3]]
        raw = {
            a.item_id: sorted(
                ((item, rng.random() + 0.01) for item in rng.sample(pool, rng.randint(0, 5))),
                key=lambda p: -p[1],
            )
            for a in anchors
        }
        segment = [rng.choice(pool) for _ in range(rng.randint(0, 25))]
        exclude = set(rng.sample(pool, 3))
        unavailable = frozenset(rng.sample(pool, 2))
        n = rng.randint(1, 12)
        out = session_list(
            anchors,
            {a: _similar(*pairs) for a, pairs in raw.items()},
            _segment(*segment),
            n=n,
            exclude=exclude,
            unavailable=unavailable,
        )
        expected = _plainly(anchors, raw, segment, n, exclude | unavailable)
        assert [(i["item_id"], i["score"]) for i in out] == expected


def _plainly(
    anchors: list[Anchor],
    raw: dict[str, list[tuple[str, float]]],
    segment: list[str],
    n: int,
    exclude: set[str],
) -> list[tuple[str, float]]:
    own = exclude | {a.item_id for a in anchors}
    scores: dict[str, float] = {}
    for anchor in anchors:
        pairs = raw[anchor.item_id]
        top = max((s for _, s in pairs), default=0.0)
        for item, score in pairs:
            if item not in own:
                scores[item] = scores.get(item, 0.0) + anchor.weight * (score / top)
    for position, item in enumerate(segment[:100]):
        if item not in exclude and item not in segment[:position]:
            scores[item] = scores.get(item, 0.0) + SEGMENT_WEIGHT * (1.0 - position / 100)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [(item, round(score, 4)) for item, score in ranked]

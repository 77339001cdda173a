"""Session lists: what a visitor's last few items say about what they want next.

The API builds one at read time for an anonymous visitor (and for a signed-in shopper's current session)
from the published similar-item lists of the session's recent items, blended with the segment list that
fits the visitor's context; `carousel evaluate` scores the same function on held-out sessions, so the
figure it reports is the one the route serves.

* **Anchors**: the session's items, each once with its strongest kind (purchase, add to cart, view), the
  most recent first. An anchor weighs `ANCHOR_WEIGHTS[kind] * RECENCY_DECAY ** position`: recency is
  counted in steps, not seconds, because a session's events arrive seconds apart, so what was looked at
  last counts most whatever the clock says. Items that share a time (the lines of one basket) share a
  step: their order in the data says nothing.
* **Candidates**: each anchor's similar items, the scores of each list divided by its best score so that
  an anchor with strong co-occurrence does not drown the others; a candidate's score is the weighted sum
  over anchors, plus `SEGMENT_WEIGHT` times its place in the segment list (1 for the first item, falling
  linearly), so that among equally related items the one selling now comes first, and the segment list
  fills what the anchors do not.
* **Left out**: anything `exclude` names (bought, out of stock; the API also names an anonymous
  visitor's own session items, which they have just seen, and whose cart the overlay's reminder brings
  back). An anchor is never another anchor's candidate.
* **Reasons** name the anchor that contributed most: "Because you viewed <title>".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carousel.rules.reasons import REASON_TEXTS

# A cart or a purchase says more about intent than a view; a purchase slightly less than a cart, since
# what was bought is done with and its complements are what is left.
ANCHOR_WEIGHTS: Mapping[str, float] = {"purchase": 1.5, "add_to_cart": 2.0, "view": 1.0}
# The n-th most recent anchor weighs RECENCY_DECAY ** n.
RECENCY_DECAY = 0.75
# Anchors read per request: each is one similar-item list (held in memory per version by the API). A
# basket's worth: chosen on the evaluation's validation month (docs/evaluation.md), where 6 left most of
# a 39-line guest basket out.
MAX_ANCHORS = 30
# The segment list's pull, relative to an anchor's best similar item (which scores 1 x its weight).
SEGMENT_WEIGHT = 0.15
# A known shopper's personal list in place of the segment list: as strong as the latest view's best
# similar item, since the ranker's order already holds everything the batch knew about them.
PERSONAL_WEIGHT = 1.0

# Reason per anchor kind, with the text template that names the anchor's title.
ANCHOR_REASONS: Mapping[str, tuple[str, str]] = {
    "view": ("because_you_viewed", "Because you viewed {title}"),
    "add_to_cart": ("completes_cart", "Goes with {title} in your cart"),
    "purchase": ("bought_with", "Goes with {title}, which you bought"),
}
_KIND_ORDER = {"purchase": 0, "add_to_cart": 1, "view": 2}


@dataclass(frozen=True)
class Anchor:
    item_id: str
    kind: str
    weight: float


def session_anchors(
    views: Mapping[str, float],
    cart: Mapping[str, float],
    purchases: Mapping[str, float],
    *,
    window_s: float | None = None,
    max_anchors: int = MAX_ANCHORS,
) -> list[Anchor]:
    """The session's items as weighted anchors, the most recent first.

    Parameters
    ----------
    views, cart, purchases : mapping of item id -> epoch seconds
        The session's latest view, add to cart (items still in the cart) and purchase of each item.
    window_s : float, optional
        Only items within this many seconds of the newest one count (the current session).
    max_anchors : int
        At most this many anchors (the most recent).

    Returns
    -------
    list of Anchor
        Each item once, with its strongest kind; ties in time keep the order purchase, cart, view.
    """
    latest: dict[str, tuple[float, str]] = {}
    for kind, seen in (("view", views), ("add_to_cart", cart), ("purchase", purchases)):
        for item_id, ts in seen.items():
            current = latest.get(item_id)
            if current is None or ANCHOR_WEIGHTS[kind] > ANCHOR_WEIGHTS[current[1]]:
                latest[item_id] = (max(ts, current[0]) if current else ts, kind)
            else:
                latest[item_id] = (max(ts, current[0]), current[1])
    if window_s is not None and latest:
        newest = max(ts for ts, _ in latest.values())
        latest = {item: seen for item, seen in latest.items() if seen[0] >= newest - window_s}
    ordered = sorted(latest.items(), key=lambda kv: (-kv[1][0], _KIND_ORDER[kv[1][1]], kv[0]))
    step = {
        ts: position for position, ts in enumerate(sorted({ts for ts, _ in latest.values()}, reverse=True))
    }
    return [
        Anchor(item_id, kind, ANCHOR_WEIGHTS[kind] * RECENCY_DECAY ** step[ts])
        for item_id, (ts, kind) in ordered[:max_anchors]
    ]


def session_list(
    anchors: Sequence[Anchor],
    similar: Mapping[str, Sequence[dict[str, Any]]],
    segment: Iterable[dict[str, Any]],
    *,
    n: int,
    exclude: Iterable[str] = (),
    title_of: Callable[[str], str | None] = lambda _item: None,
    segment_weight: float = SEGMENT_WEIGHT,
    segment_depth: int = 100,
) -> list[dict[str, Any]]:
    """The session's list in the served shape, `n` items at most.

    Parameters
    ----------
    anchors : sequence of Anchor
        From `session_anchors`.
    similar : mapping of item id -> served items
        Each anchor's similar-item list (``{"item_id", "score", ...}`` in rank order); anchors without
        one contribute nothing.
    segment : iterable of served items
        The segment list that fits the visitor's context, in rank order; its items keep their reasons.
    n : int
        The list's length.
    exclude : iterable of str
        Items never to show (bought, unavailable, seen).
    title_of : callable
        An item's title, or None; a reason without one uses the code's standard text.
    segment_weight : float
        The segment list's pull (`PERSONAL_WEIGHT` when it is a known shopper's personal list).
    segment_depth : int
        How many items of the segment list are read.

    Returns
    -------
    list of dict
        ``{"item_id", "score", "reason": {"code", "text"}}`` by score, best first (ties by item id).
    """
    skip = set(exclude)
    own = skip | {a.item_id for a in anchors}
    scores: dict[str, float] = {}
    best_anchor: dict[str, tuple[float, Anchor]] = {}
    for anchor in anchors:
        neighbours = similar.get(anchor.item_id) or ()
        top = max((float(i.get("score") or 0.0) for i in neighbours), default=0.0)
        if top <= 0.0:
            continue
        for item in neighbours:
            item_id = item["item_id"]
            if item_id in own:
                continue
            pull = anchor.weight * float(item.get("score") or 0.0) / top
            scores[item_id] = scores.get(item_id, 0.0) + pull
            if pull > best_anchor.get(item_id, (0.0, anchor))[0]:
                best_anchor[item_id] = (pull, anchor)
    segment_items: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(segment):
        if position >= segment_depth:
            break
        item_id = item["item_id"]
        if item_id in skip or item_id in segment_items:
            continue
        segment_items[item_id] = item
        scores[item_id] = scores.get(item_id, 0.0) + segment_weight * (1.0 - position / segment_depth)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    reasons: dict[str, dict[str, str]] = {}  # one per anchor, however many items it placed
    out = []
    for item_id, score in ranked:
        if item_id in best_anchor:
            anchor = best_anchor[item_id][1]
            if anchor.item_id not in reasons:
                reasons[anchor.item_id] = anchor_reason(anchor, title_of)
            reason = reasons[anchor.item_id]
        else:
            reason = segment_items[item_id]["reason"]
        out.append({"item_id": item_id, "score": round(score, 4), "reason": reason})
    return out


def anchor_reason(anchor: Anchor, title_of: Callable[[str], str | None]) -> dict[str, str]:
    """The reason an anchor gives its similar items, naming the anchor when its title is known."""
    code, template = ANCHOR_REASONS[anchor.kind]
    title = title_of(anchor.item_id)
    return {"code": code, "text": template.format(title=title) if title else REASON_TEXTS[code]}

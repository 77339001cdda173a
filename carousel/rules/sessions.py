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

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from carousel.rules.reasons import REASON_TEXTS

# A cart or a purchase says more about intent than a view; a purchase slightly less than a cart, since
# what was bought is done with and its complements are what is left.
ANCHOR_WEIGHTS: Mapping[str, float] = {"purchase": 1.5, "add_to_cart": 2.0, "view": 1.0}
# The n-th most recent anchor weighs RECENCY_DECAY ** n.
RECENCY_DECAY = 0.75
# Anchors read per request: each is one similar-item list (held in memory per version by the API), so a
# request's work grows with them and a hostile client's thousand-item cart must not set it. As many as
# the real-time state keeps purchases by default (`realtime_purchases_max`): a wholesale basket is read
# whole. On Online Retail's guest invoices 30 had left part of the larger baskets out (the earlier
# rolling-origin folds chose 100 over 30 and 50; docs/evaluation.md).
MAX_ANCHORS = 100
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


class Anchor(NamedTuple):
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
    if not (views or cart or purchases):
        return []
    times = dict(views)
    kinds = dict.fromkeys(views, "view")
    for kind, seen in (("add_to_cart", cart), ("purchase", purchases)):
        for item_id, ts in seen.items():
            if item_id not in times:
                times[item_id], kinds[item_id] = ts, kind
                continue
            times[item_id] = max(times[item_id], ts)
            if ANCHOR_WEIGHTS[kind] > ANCHOR_WEIGHTS[kinds[item_id]]:
                kinds[item_id] = kind
    if window_s is not None:
        oldest = max(times.values()) - window_s
        times = {item_id: ts for item_id, ts in times.items() if ts >= oldest}
    ordered = sorted(times, key=lambda item_id: (-times[item_id], _KIND_ORDER[kinds[item_id]], item_id))
    anchors = []
    step, previous = -1, None
    for item_id in ordered[:max_anchors]:
        if times[item_id] != previous:  # newest first: a new time is one recency step further
            step, previous = step + 1, times[item_id]
        kind = kinds[item_id]
        anchors.append(Anchor(item_id, kind, ANCHOR_WEIGHTS[kind] * RECENCY_DECAY**step))
    return anchors


@dataclass(frozen=True, slots=True)
class Neighbours:
    """An anchor's similar-item list as the session list reads it: each item with its score divided by
    the list's best (items without a positive score pull nothing and are left out). Built once per list
    (`neighbours`): the API keeps one per published list, so a request only adds."""

    pulls: tuple[tuple[str, float], ...]


def neighbours(items: Iterable[Mapping[str, Any]]) -> Neighbours:
    """`items` (``{"item_id", "score", ...}`` in rank order) as `Neighbours`."""
    scored = [(str(i["item_id"]), float(i.get("score") or 0.0)) for i in items]
    top = max((score for _, score in scored), default=0.0)
    if top <= 0.0:
        return Neighbours(())
    return Neighbours(tuple((item_id, score / top) for item_id, score in scored if score > 0.0))


@dataclass(frozen=True, slots=True)
class Placed:
    """The list that fills what the anchors do not (a segment list, or a known shopper's own list), read
    to a depth: its items in rank order, each once, and each item's place as a pull falling linearly
    from 1 (first) to 0 (at the depth). Built once per list (`placed`)."""

    items: tuple[Mapping[str, Any], ...]
    place: Mapping[str, float]


def placed(items: Iterable[Mapping[str, Any]], depth: int = 100) -> Placed:
    """The first `depth` entries of `items` (served items in rank order) as `Placed`; an item listed
    twice keeps its first place."""
    kept: list[Mapping[str, Any]] = []
    place: dict[str, float] = {}
    for position, item in enumerate(items):
        if position >= depth:
            break
        item_id = item["item_id"]
        if item_id not in place:
            place[item_id] = 1.0 - position / depth
            kept.append(item)
    return Placed(tuple(kept), place)


def session_list(
    anchors: Sequence[Anchor],
    similar: Mapping[str, Neighbours],
    segment: Placed,
    *,
    n: int,
    exclude: Iterable[str] = (),
    unavailable: Container[str] = frozenset(),
    title_of: Callable[[str], str | None] = lambda _item: None,
    segment_weight: float = SEGMENT_WEIGHT,
) -> list[dict[str, Any]]:
    """The session's list in the served shape, `n` items at most.

    Parameters
    ----------
    anchors : sequence of Anchor
        From `session_anchors`.
    similar : mapping of item id -> Neighbours
        Each anchor's similar items (`neighbours`); anchors without any contribute nothing.
    segment : Placed
        The segment list that fits the visitor's context (`placed`); its items keep their reasons.
    n : int
        The list's length.
    exclude : iterable of str
        Items never to show (bought, seen).
    unavailable : container of str
        Items that cannot be bought now: only asked about, never copied (there can be thousands).
    title_of : callable
        An item's title, or None; a reason without one uses the code's standard text.
    segment_weight : float
        The segment list's pull (`PERSONAL_WEIGHT` when it is a known shopper's personal list).

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
        found = similar.get(anchor.item_id)
        if found is None:
            continue
        weight = anchor.weight
        for item_id, share in found.pulls:
            if item_id in own or item_id in unavailable:
                continue
            pull = weight * share
            if item_id in scores:
                scores[item_id] += pull
                if pull > best_anchor[item_id][0]:
                    best_anchor[item_id] = (pull, anchor)
            else:
                scores[item_id] = pull
                best_anchor[item_id] = (pull, anchor)
    place = segment.place
    for item_id in scores:
        if item_id in place:
            scores[item_id] += segment_weight * place[item_id]
    # An item only the segment list holds scores by its place alone, which falls with rank: only the
    # first n of those (outside the candidates) can reach the top n.
    filling: dict[str, Mapping[str, Any]] = {}
    for item in segment.items:
        if len(filling) >= n:
            break
        item_id = item["item_id"]
        if item_id not in skip and item_id not in scores and item_id not in unavailable:
            filling[item_id] = item
    ranked = _best([*scores.items(), *((item_id, segment_weight * place[item_id]) for item_id in filling)], n)
    reasons: dict[str, dict[str, str]] = {}  # one per anchor, however many items it placed
    out = []
    for item_id, score in ranked:
        if item_id in best_anchor:
            anchor = best_anchor[item_id][1]
            if anchor.item_id not in reasons:
                reasons[anchor.item_id] = anchor_reason(anchor, title_of)
            reason = reasons[anchor.item_id]
        else:
            reason = filling[item_id]["reason"]
        out.append({"item_id": item_id, "score": round(score, 4), "reason": reason})
    return out


def _best(scored: list[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The `n` best (item, score) pairs, ties by item id. Sorted on the score alone first, then the
    few at the top again with the tie-break, which costs a third of sorting them all on both."""
    scored.sort(key=itemgetter(1), reverse=True)
    cut = n
    while cut < len(scored) and scored[cut][1] == scored[n - 1][1]:
        cut += 1
    return sorted(scored[:cut], key=lambda kv: (-kv[1], kv[0]))[:n]


def anchor_reason(anchor: Anchor, title_of: Callable[[str], str | None]) -> dict[str, str]:
    """The reason an anchor gives its similar items, naming the anchor when its title is known."""
    code, template = ANCHOR_REASONS[anchor.kind]
    title = title_of(anchor.item_id)
    return {"code": code, "text": template.format(title=title) if title else REASON_TEXTS[code]}

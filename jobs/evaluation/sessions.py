"""The evaluation's tasks for visitors without a personal list: `sessions` and `new_shoppers`.

Both score what the API serves someone the batch has no list for, with the API's own rules
(`carousel.rules.sessions`, `carousel.rules.segments`) over the lists the batch would have published at
the cutoff (`PublishedLists`; `jobs.evaluation.published` builds them with the pipeline's code).

* **sessions.** Sessions without a known shopper that start in the evaluation window and touch at
  least `MIN_SESSION_ITEMS` distinct items (views, carts, purchases). Their items are ordered by first
  touch (time, then the events' order in the data: an invoice's lines share one time); the first half
  (``n // 2`` items) and every event before the first touch of the next item are what the visitor did,
  the other items are the targets. Models, each leaving out the first half's items:

  - ``bestsellers``: the global segment list;
  - ``segment``: the segment list `segment_order` picks from the first half's category interest
    (`INTEREST_WEIGHTS` per event) and the session's country, device and referrer;
  - ``session``: `session_list` of the first half's anchors, with the global list as segment;
  - ``served``: `session_list` with the segment list `segment_order` picks, over what the API's
    real-time state would hold (`StateBounds`: the newest views, purchases and cart items it keeps, the
    anchors within ``session_window_s``): what the route serves (before its overlay, which lives in
    `serving`).

* **new_shoppers.** Known shoppers whose first event is in the window and who buy there; targets are
  their purchases in the window. ``bestsellers`` (global) against ``segment``: the list `segment_order`
  picks from the context of their first event (no interest yet).

Metrics are those of the other tasks (`jobs.ranking.metrics`), with a session standing for a shopper.
Each session's list comes from one Python call of the route's rule (a few thousand sessions take
seconds); the rest is vectorized.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from carousel.rules.segments import CONTEXT_DIMENSIONS, GLOBAL_SEGMENT, INTEREST_WEIGHTS, segment_order
from carousel.rules.sessions import neighbours, placed, session_anchors, session_list
from configs.settings import Settings
from jobs.evaluation.protocol import (
    EvalContext,
    ExtraTasks,
    ExtraTasksFn,
    Progress,
    Split,
    catalog_items,
    clean_lists,
)
from jobs.ranking.metrics import evaluate_lists

__all__ = [
    "MIN_SESSION_ITEMS",
    "NEW_SHOPPER_MODELS",
    "SESSION_MODELS",
    "HeldOut",
    "HeldOutSessions",
    "NewShoppers",
    "PublishedLists",
    "StateBounds",
    "held_out_sessions",
    "new_shopper_lists",
    "new_shoppers",
    "session_lists",
    "visitor_tasks",
]

#: A session is scored when it touches at least this many distinct items (half given, half predicted).
MIN_SESSION_ITEMS = 4
SESSION_MODELS: tuple[str, ...] = ("bestsellers", "segment", "session", "served")
NEW_SHOPPER_MODELS: tuple[str, ...] = ("bestsellers", "segment")


# The event types that touch an item (a removal only undoes a cart).
_ITEM_EVENTS = ("view", "add_to_cart", "purchase")
_SESSION_EVENTS = (*_ITEM_EVENTS, "remove_from_cart")
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class PublishedLists:
    """What a version publishes for visitors, in the shapes the API reads.

    Attributes
    ----------
    segments:
        Segment name -> its list's items (``{"item_id", "score", "reason"}``) in rank order.
    similar:
        Item id -> its similar items (``{"item_id", "score"}``) in rank order.
    departments:
        Item id -> department (`carousel.rules.segments.department` of its category).
    """

    segments: Mapping[str, Sequence[dict[str, Any]]]
    similar: Mapping[str, Sequence[dict[str, Any]]]
    departments: Mapping[str, str] = field(default_factory=dict)

    def pick_segment(self, interest: Mapping[str, float], context: Mapping[str, str | None]) -> str:
        """The segment the route serves: the first of `segment_order` that is stored."""
        for name in segment_order(interest, context):
            if name in self.segments:
                return name
        return GLOBAL_SEGMENT


PublishedFn = Callable[[EvalContext], PublishedLists]


@dataclass(frozen=True)
class StateBounds:
    """How much of a session the API's real-time state keeps, and the route reads: the newest
    `views_max` views, `purchases_max` purchases and `cart_max` items in the cart (settings
    ``realtime_views_max``, ...) and the anchors within `window_s` seconds of the newest
    (``session_window_s``). None: no bound."""

    window_s: float | None = None
    views_max: int | None = None
    purchases_max: int | None = None
    cart_max: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> StateBounds:
        """The bounds a deployment's settings give the API."""
        return cls(
            settings.session_window_s,
            settings.realtime_views_max,
            settings.realtime_purchases_max,
            settings.realtime_cart_max,
        )


# --------------------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """What a task asks to find, and who: the `targets` pairs and their counts."""

    targets: pd.DataFrame
    stats: dict[str, Any]

    @property
    def users(self) -> np.ndarray:
        """Who is scored (a session id in `sessions`)."""
        return np.asarray(self.targets["user_id"].unique(), dtype=object)


@dataclass(frozen=True)
class HeldOutSessions(HeldOut):
    """Sessions split into what the visitor did and what is left to find.

    Attributes
    ----------
    targets:
        Distinct ``user_id, item_id`` pairs to find, ``user_id`` being the session id.
    stats:
        Counts: ``anonymous_sessions`` starting in the window, ``sessions`` scored, ``pairs``,
        ``given_items_median``.
    given:
        The first half's events (``session_id, item_id, event_type, ts`` and the context columns), in
        session order and time order within a session.
    """

    given: pd.DataFrame


def held_out_sessions(
    events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, *, min_items: int = MIN_SESSION_ITEMS
) -> HeldOutSessions:
    """The anonymous sessions that start in ``[start, end)`` with at least `min_items` items, halved.

    Parameters
    ----------
    events:
        Normalised canonical events (`jobs.evaluation.protocol.normalise_events`), in the data's order.
    start, end:
        The window; events at or after `end` are not read, and a session with an event before `start`
        did not start in the window.
    min_items:
        Distinct items a session must touch.

    Returns
    -------
    HeldOutSessions
    """
    columns = ["session_id", "item_id", "event_type", "ts", *CONTEXT_DIMENSIONS]
    before_end = events.loc[events["ts"] < end]
    anonymous = before_end["session_id"].notna() & before_end["event_type"].isin(_SESSION_EVENTS)
    started_before = before_end.loc[before_end["ts"] < start, "session_id"]
    known = before_end.loc[before_end["user_id"].notna(), "session_id"]
    outside = pd.Index(pd.concat([started_before, known]).dropna().unique())
    rows = before_end.loc[
        anonymous & (before_end["ts"] >= start) & ~before_end["session_id"].isin(outside), columns
    ]
    # Time order; equal times (an invoice's lines) keep the data's order.
    rows = rows.sort_values("ts", kind="stable")
    rows = rows.sort_values("session_id", kind="stable").reset_index(drop=True)
    position = rows.groupby("session_id", sort=False).cumcount().to_numpy()
    touches = rows.loc[rows["event_type"].isin(_ITEM_EVENTS)]
    first_touch = touches.drop_duplicates(["session_id", "item_id"])
    by_session = first_touch.groupby("session_id", sort=False)
    nth = by_session.cumcount()
    size = by_session["item_id"].transform("size")
    half = size // 2
    scored = size >= min_items
    # The first half ends just before the first touch of item number `half` (0-based).
    next_item = first_touch.loc[scored & (nth == half)]
    cut = pd.Series(position[next_item.index], index=next_item["session_id"].to_numpy())
    row_cut = rows["session_id"].map(cut).to_numpy(dtype="float64")
    given = rows.loc[position < row_cut].reset_index(drop=True)
    targets = first_touch.loc[scored & (nth >= half), ["session_id", "item_id"]]
    targets = targets.rename(columns={"session_id": "user_id"}).reset_index(drop=True)
    stats = {
        "anonymous_sessions": int(rows["session_id"].nunique()),
        "sessions": len(cut),
        "pairs": len(targets),
        "given_items_median": float(half[next_item.index].median()) if len(cut) else 0.0,
    }
    return HeldOutSessions(given=given, targets=targets, stats=stats)


def session_lists(
    held: HeldOutSessions, published: PublishedLists, k: int, *, bounds: StateBounds = StateBounds()
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Every session model's lists of `k` items, and how often each kind of segment was served.

    Each session's first half becomes the real-time state the API keeps (latest view and purchase of
    each item within `bounds`, the items still in the cart, category interest), then the route's rules
    pick its segment and build its session list from the anchors within ``bounds.window_s`` seconds of
    the newest.

    Returns
    -------
    (dict, dict)
        ``{model: frame of user_id (the session), item_id, rank}`` for `SESSION_MODELS`, and the count
        of sessions served from each kind of segment (``category``, ``country``, ..., ``global``).
    """
    given = held.given
    session_ids = given["session_id"].to_numpy()
    items = given["item_id"].to_numpy()
    kinds = given["event_type"].to_numpy()
    seconds = ((given["ts"] - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype="float64")
    contexts = given.groupby("session_id", sort=False)[list(CONTEXT_DIMENSIONS)].first().to_dict("index")
    # Where each session's rows start (and the end); none in a store without guest sessions.
    starts = np.flatnonzero(np.r_[True, session_ids[1:] != session_ids[:-1], True]) if len(given) else [0]
    global_items = list(published.segments.get(GLOBAL_SEGMENT, ()))
    # Prepared once, as the API prepares each stored list once per version.
    similar = {item_id: neighbours(listed) for item_id, listed in published.similar.items()}
    fills = {name: placed(listed) for name, listed in published.segments.items()}
    global_fill = fills.get(GLOBAL_SEGMENT, placed(()))
    rows: dict[str, list[tuple[str, str, int]]] = {model: [] for model in SESSION_MODELS}
    sources: Counter[str] = Counter()
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        session = str(session_ids[lo])
        views, cart, purchases, interest = _session_state(
            items[lo:hi], kinds[lo:hi], seconds[lo:hi], published.departments
        )
        views, cart = _newest(views, bounds.views_max), _newest(cart, bounds.cart_max)
        purchases = _newest(purchases, bounds.purchases_max)
        picked = published.pick_segment(interest, _context(contexts[session]))
        sources[_kind(picked)] += 1
        segment_items = list(published.segments.get(picked, ()))
        seen = set(items[lo:hi])
        anchors = session_anchors(views, cart, purchases, window_s=bounds.window_s)
        lists = {
            "bestsellers": _top(global_items, seen, k),
            "segment": _top(segment_items, seen, k),
            "session": session_list(anchors, similar, global_fill, n=k, exclude=seen),
            "served": session_list(anchors, similar, fills.get(picked, placed(())), n=k, exclude=seen),
        }
        for model, ranked in lists.items():
            rows[model] += [(session, item["item_id"], rank) for rank, item in enumerate(ranked, 1)]
    return {model: _frame(model_rows) for model, model_rows in rows.items()}, dict(sources)


def _session_state(
    items: np.ndarray, kinds: np.ndarray, seconds: np.ndarray, departments: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
    """What the API's real-time state holds after these events (in order): the latest view and
    purchase of each item, the items still in the cart (a removal or a purchase takes one out), and
    the category interest."""
    views: dict[str, float] = {}
    cart: dict[str, float] = {}
    purchases: dict[str, float] = {}
    interest: dict[str, float] = {}
    for item, kind, ts in zip(items, kinds, seconds, strict=True):
        if kind == "view":
            views[item] = ts
        elif kind == "add_to_cart":
            cart[item] = ts
        else:
            cart.pop(item, None)
            if kind == "purchase":
                purchases[item] = ts
        department = departments.get(item)
        if department is not None:
            interest[department] = interest.get(department, 0.0) + INTEREST_WEIGHTS[kind]
    return views, cart, purchases, interest


def _newest(latest: dict[str, float], keep: int | None) -> dict[str, float]:
    """The `keep` newest of `latest` (item -> time), as the real-time state's sorted sets keep them:
    among equal times the greater item id stays (Redis orders equal scores by member)."""
    if keep is None or len(latest) <= keep:
        return latest
    return dict(sorted(latest.items(), key=lambda kv: (kv[1], kv[0]))[-keep:])


# --------------------------------------------------------------------------------------------------
# new shoppers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewShoppers(HeldOut):
    """Shoppers first seen in the window who bought there.

    Attributes
    ----------
    targets:
        Distinct ``user_id, item_id`` purchases in the window.
    stats:
        Counts: ``first_seen`` (shoppers whose first event is in the window), ``users`` (of them, those
        who bought) and ``pairs``.
    context:
        Per shopper (index ``user_id``) the country, device and referrer of their first event.
    """

    context: pd.DataFrame


def new_shoppers(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> NewShoppers:
    """The known shoppers whose first event is in ``[start, end)``, their purchases there and the
    context of their first event (`events` normalised, in the data's order)."""
    known = events.loc[events["user_id"].notna() & (events["ts"] < end)]
    first = known.sort_values("ts", kind="stable").drop_duplicates("user_id")
    first = first.loc[first["ts"] >= start].set_index("user_id")
    bought = known.loc[
        (known["event_type"] == "purchase") & (known["ts"] >= start) & known["user_id"].isin(first.index)
    ]
    targets = bought[["user_id", "item_id"]].drop_duplicates().reset_index(drop=True)
    context = first.loc[first.index.isin(pd.Index(targets["user_id"])), list(CONTEXT_DIMENSIONS)]
    stats = {
        "first_seen": len(first),
        "users": int(targets["user_id"].nunique()),
        "pairs": len(targets),
    }
    return NewShoppers(targets=targets, context=context, stats=stats)


def new_shopper_lists(
    shoppers: NewShoppers, published: PublishedLists, k: int
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """``bestsellers`` and ``segment`` lists of `k` items for every new shopper, and how often each
    kind of segment was served."""
    picked = pd.Series(
        [published.pick_segment({}, _context(row)) for row in shoppers.context.to_dict("records")],
        index=shoppers.context.index,
        dtype=object,
    )
    long = pd.DataFrame(
        [
            (name, item["item_id"], rank)
            for name in set(picked) | {GLOBAL_SEGMENT}
            for rank, item in enumerate(published.segments.get(name, ())[:k], 1)
        ],
        columns=["segment", "item_id", "rank"],
    )
    out = {}
    for model, segments in (
        ("bestsellers", pd.Series(GLOBAL_SEGMENT, index=picked.index, dtype=object)),
        ("segment", picked),
    ):
        chosen = segments.rename("segment").rename_axis("user_id").reset_index()
        out[model] = chosen.merge(long, on="segment")[["user_id", "item_id", "rank"]]
    return out, dict(Counter(_kind(name) for name in picked))


# --------------------------------------------------------------------------------------------------
# both tasks in the run
# --------------------------------------------------------------------------------------------------


def visitor_tasks(published: PublishedFn, *, bounds: StateBounds = StateBounds()) -> ExtraTasksFn:
    """The `sessions` and `new_shoppers` tasks as `run_evaluation`'s ``extra_tasks``, with the lists
    `published` builds from the context (the history before the cutoff) and what the API's real-time
    state keeps of a session (`StateBounds.of` the settings)."""

    def run(events: pd.DataFrame, split: Split, ctx: EvalContext, k: int, say: Progress) -> ExtraTasks:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        held = held_out_sessions(events, split.test_start, split.test_end)
        shoppers = new_shoppers(events, split.test_start, split.test_end)
        timings["visitors"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        if len(held.targets) or len(shoppers.targets):
            lists = published(ctx)
            timings["published_lists"] = round(time.perf_counter() - t0, 3)
            say(
                f"published lists as of the cutoff: {len(lists.segments):,} segments, similar items of "
                f"{len(lists.similar):,} items ({timings['published_lists']:.1f}s)"
            )
        else:
            # A store without guest sessions or newcomers in the test window (a grocery chain's loyalty
            # cards): both tasks score nobody, and building the lists was a sixteenth of its evaluation.
            lists = PublishedLists(segments={}, similar={})
            timings["published_lists"] = 0.0
            say("published lists: not built, no session and no new shopper to score")
        catalog = catalog_items(ctx)
        t0 = time.perf_counter()
        session_models, session_sources = session_lists(held, lists, k, bounds=bounds)
        sessions = _scored(session_models, held.targets, held.users, k, catalog)
        timings["sessions"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        shopper_models, shopper_sources = new_shopper_lists(shoppers, lists, k)
        newcomers = _scored(shopper_models, shoppers.targets, shoppers.users, k, catalog)
        timings["new_shoppers"] = round(time.perf_counter() - t0, 3)
        for task, scored, who in (
            ("sessions", sessions, f"{len(held.users):,} sessions"),
            ("new_shoppers", newcomers, f"{len(shoppers.users):,} shoppers"),
        ):
            figures = ", ".join(f"{m} {v['ndcg@10']:.4f}" for m, v in scored.items())
            say(f"{task} ({who}): ndcg@10 {figures} ({timings[task]:.1f}s)")
        return ExtraTasks(
            tasks={"sessions": sessions, "new_shoppers": newcomers},
            targets={
                "sessions": {**held.stats, "served_from": session_sources},
                "new_shoppers": {**shoppers.stats, "served_from": shopper_sources},
            },
            timings=timings,
        )

    return run


def _scored(
    lists: Mapping[str, pd.DataFrame], targets: pd.DataFrame, users: np.ndarray, k: int, catalog: np.ndarray
) -> dict[str, dict[str, float | int]]:
    return {
        model: evaluate_lists(clean_lists(frame, users, k, name=model), targets, users, catalog)[0]
        for model, frame in lists.items()
    }


def _top(ranked: Iterable[dict[str, Any]], exclude: set[str], k: int) -> list[dict[str, Any]]:
    """The first `k` items of a list that are not in `exclude`."""
    out = []
    for item in ranked:
        if item["item_id"] not in exclude:
            out.append(item)
            if len(out) == k:
                break
    return out


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rank"]).astype(
        {"user_id": object, "item_id": object}
    )


def _context(row: Mapping[Any, Any]) -> dict[str, str | None]:
    """The country, device and referrer of a row, None where missing (pandas gives NaN or NA)."""
    values = {d: row.get(d) for d in CONTEXT_DIMENSIONS}
    return {d: v if isinstance(v, str) and v else None for d, v in values.items()}


def _kind(segment: str) -> str:
    """The kind of a segment: ``category``, ``country``, ``device``, ``referrer`` or ``global``."""
    return segment.split(":", 1)[0]

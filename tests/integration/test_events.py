"""`POST /v1/events` against a real Redis: validation, real-time state, the events stream, and the drain
that moves the stream into the lake exactly once (also when it is killed with SIGKILL and retried)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis.asyncio as aredis
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from carousel.cache import keys as layout
from carousel.cache import stream
from carousel.lake import Lake
from carousel.rules.erasure import erasure_digest
from carousel.rules.holdout import assign_variant
from configs.settings import Settings
from jobs.ingest import drain
from jobs.ingest.drain import drain_events
from jobs.publishing.loader import publish_version
from serving import realtime
from serving.app import create_app

pytestmark = pytest.mark.integration

CAROUSEL = str(Path(sys.executable).parent / "carousel")
NOW = datetime.now(UTC).replace(microsecond=0)


def _event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "user_id": "u1",
        "session_id": "s1",
        "item_id": "i1",
        "event_type": "view",
        "ts": (NOW - timedelta(hours=1)).isoformat(),
        "quantity": 1,
        "price": 12.5,
        "country": "France",
        "device": "mobile",
        "referrer": None,
    }
    event.update(overrides)
    return event


def _random_events(n: int, *, seed: int, end: datetime) -> list[dict[str, Any]]:
    """`n` events in time order up to `end`, with odd prices, microsecond timestamps and missing fields."""
    rng = random.Random(seed)
    users = [f"u{k}" for k in range(150)]
    start = end - timedelta(hours=2)
    step = (end - start) / (n + 1)
    events = []
    for k in range(n):
        anonymous = rng.random() < 0.3
        events.append(
            {
                "user_id": None if anonymous else rng.choice(users),
                "session_id": f"s{rng.randrange(400)}",
                "item_id": f"item-{rng.randrange(300)}",
                "event_type": rng.choice(
                    ["view", "view", "view", "add_to_cart", "remove_from_cart", "purchase"]
                ),
                "ts": (start + step * (k + 1) + timedelta(microseconds=rng.randrange(7))).isoformat(),
                "quantity": rng.randint(1, 4),
                "price": rng.uniform(0, 250),
                "country": rng.choice(["France", "Germany", None]),
                "device": rng.choice(["mobile", "desktop", None]),
                "referrer": rng.choice(["google", "email", None]),
            }
        )
    return events


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """One event as comparable values (timestamps in UTC, nulls as None)."""

    def text(value: Any) -> str | None:
        return None if value is None or value is pd.NA else str(value)

    ts = pd.Timestamp(row["ts"])
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return (
        text(row.get("user_id")),
        row["session_id"],
        row["item_id"],
        row["event_type"],
        ts.isoformat(),
        int(row["quantity"]),
        float(row["price"]),
        text(row.get("country")),
        text(row.get("device")),
        text(row.get("referrer")),
    )


def _lake_frame(settings: Settings) -> pd.DataFrame:
    return pq.read_table(Lake(settings.lake_dir).events_dir).to_pandas()


def _lake_rows(settings: Settings) -> Counter[tuple[Any, ...]]:
    if not Lake(settings.lake_dir).event_files():
        return Counter()
    frame = _lake_frame(settings)
    return Counter(_row_key(row) for row in frame.astype(object).to_dict("records"))


def _post(api: TestClient, events: list[dict[str, Any]], chunk: int = 500) -> None:
    for k in range(0, len(events), chunk):
        response = api.post("/v1/events", json={"events": events[k : k + chunk]})
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": len(events[k : k + chunk]), "duplicates": 0}


def _state(url: str, *, user_id: str | None, session_id: str | None) -> realtime.ShopperState:
    async def read() -> realtime.ShopperState:
        client = aredis.Redis.from_url(url)
        try:
            return await realtime.read_state(client, user_id=user_id, session_id=session_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Half the shoppers in the holdout, so the stream's variants are checked on both groups.
    return settings.model_copy(update={"holdout_percent": 50.0})


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=STOREFRONT) as client:
        yield client


# -- validation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"colour": "red"}, "events.1.colour"),
        ({"event_type": "like"}, "events.1.event_type"),
        ({"user_id": "bad id!"}, "events.1.user_id"),
        ({"item_id": ""}, "events.1.item_id"),
        ({"session_id": None, "user_id": None}, "events.1"),
        ({"quantity": 0}, "events.1.quantity"),
        ({"quantity": "2"}, "events.1.quantity"),
        ({"price": -0.01}, "events.1.price"),
        ({"ts": "yesterday"}, "events.1.ts"),
        ({"ts": "1969-12-31T23:59:59Z"}, "events.1.ts"),
        # Ten minutes ahead of the moment the request is made (not of collection: a long suite runs
        # this much later).
        ({"ts": "FUTURE"}, "events.1.ts"),
        ({"country": "<script>"}, "events.1.country"),
    ],
)
def test_a_bad_field_refuses_the_whole_request_naming_it(
    api: TestClient, redis_client: Any, overrides: dict[str, Any], field: str
) -> None:
    """One bad event gets 422 naming its field, and none of the request's events is stored."""
    if overrides.get("ts") == "FUTURE":
        overrides = {"ts": (datetime.now(UTC) + timedelta(minutes=10)).isoformat()}
    response = api.post("/v1/events", json={"events": [_event(), _event(**overrides)]})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    assert redis_client.exists(layout.EVENTS_STREAM) == 0
    assert redis_client.keys(f"{layout.REALTIME_PREFIX}:*") == []


def test_a_minimal_view_takes_its_time_quantity_and_price_from_the_server_and_the_catalog(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """A view with only a subject, an item and a type is stored (stream and, drained, lake) with the
    server's time, quantity 1 and the live catalog's price; a signed-in shopper without a session gets
    one per day; an item the catalog does not hold needs its price (422 naming it, nothing stored)."""
    catalog = pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["Mug", None],
            "category": ["home/kitchen", "garden"],
            "brand": None,
            "price": [12.5, 3.0],
            "in_stock": True,
        }
    )
    publish_version(
        redis_client,
        version="20261101T000000Z",
        user_lists=pd.DataFrame(
            columns=["user_id", "rank", "item_id", "score", "reason_code", "reason_text"]
        ),
        segment_lists=pd.DataFrame(
            [
                {
                    "segment": "global",
                    "rank": 1,
                    "item_id": "i1",
                    "score": 1.0,
                    "reason_code": "bestseller",
                    "reason_text": "Bestseller right now",
                }
            ]
        ),
        manifest={"run_id": "t", "generated_at": NOW.isoformat()},
        catalog=catalog,
    )
    unknown = api.post(
        "/v1/events", json={"events": [{"session_id": "s9", "item_id": "i3", "event_type": "view"}]}
    )
    assert unknown.status_code == 422 and "events.0.price" in unknown.json()["error"]
    assert "'i3' is not in the live catalog" in unknown.json()["problems"][0]["problem"]
    assert redis_client.exists(layout.EVENTS_STREAM) == 0
    before = datetime.now(UTC)
    minimal = [
        {"session_id": "s9", "item_id": "i1", "event_type": "view"},
        {"user_id": "u7", "item_id": "i2", "event_type": "view"},
        {"session_id": "s9", "item_id": "i3", "event_type": "view", "price": 1.25},
    ]
    assert api.post("/v1/events", json={"events": minimal}).status_code == 202
    after = datetime.now(UTC)
    assert drain_events(settings, interval_end=after + timedelta(seconds=1)).written == 3
    lake = _lake_frame(settings).sort_values("item_id").reset_index(drop=True)
    assert lake["price"].tolist() == [12.5, 3.0, 1.25]
    assert lake["quantity"].tolist() == [1, 1, 1]
    assert lake["session_id"].tolist() == ["s9", f"u7:{before:%Y%m%d}", "s9"]
    assert lake["user_id"].isna().tolist() == [True, False, True]
    assert all(before <= ts <= after for ts in lake["ts"])
    # The catalog's department made the view category interest (the visitor's `category:` list).
    assert _state(settings.redis_url, user_id=None, session_id="s9").interest == {"home": 1.0}


def test_an_unknown_top_level_field_and_too_many_events_are_refused(
    api: TestClient, settings: Settings
) -> None:
    """Unknown body fields and more events than `events_max_per_request` get 422 naming the field."""
    response = api.post("/v1/events", json={"events": [_event()], "batch": 1})
    assert response.status_code == 422 and "batch" in response.json()["error"]
    too_many = [_event(item_id=f"i{k}") for k in range(settings.events_max_per_request + 1)]
    response = api.post("/v1/events", json={"events": too_many})
    assert response.status_code == 422 and response.json()["error"] == "invalid request: events"


def test_a_body_over_the_size_limit_gets_413(api: TestClient, settings: Settings, redis_client: Any) -> None:
    """Bodies over `events_max_body_bytes` get 413, whether their size is declared or streamed in chunks."""
    oversize = b'{"events": [], "pad": "' + b"x" * settings.events_max_body_bytes + b'"}'
    headers = {"content-type": "application/json"}
    declared = api.post("/v1/events", content=oversize, headers=headers)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:
        for k in range(0, len(oversize), 64 * 1024):
            yield oversize[k : k + 64 * 1024]

    streamed = api.post("/v1/events", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert redis_client.exists(layout.EVENTS_STREAM) == 0


# -- real-time state ---------------------------------------------------------------------------------------
def test_accepted_events_update_the_shoppers_state(
    api: TestClient, settings: Settings, redis_url: str, redis_client: Any
) -> None:
    """Cart adds and removals, a purchase leaving the cart, views capped to the newest N, an anonymous
    session kept apart, and late events that do not undo newer ones."""
    t0 = NOW - timedelta(hours=3)

    def at(minutes: float) -> str:
        return (t0 + timedelta(minutes=minutes)).isoformat()

    views = [_event(item_id=f"v{k}", ts=at(k * 0.5)) for k in range(60)]
    cart = [
        _event(item_id="i1", event_type="add_to_cart", ts=at(40)),
        _event(item_id="i2", event_type="add_to_cart", ts=at(41)),
        _event(item_id="i3", event_type="add_to_cart", ts=at(42)),
        _event(item_id="i2", event_type="remove_from_cart", ts=at(43)),
        _event(item_id="i3", event_type="purchase", ts=at(44), quantity=2),
    ]
    anonymous = [_event(user_id=None, session_id="anon-1", item_id="v-anon", ts=at(45))]
    # Sent in reverse: the state must not depend on the order events arrive in within a request.
    response = api.post("/v1/events", json={"events": list(reversed(views + cart)) + anonymous})
    assert response.status_code == 202 and response.json() == {"accepted": 66, "duplicates": 0}

    state = _state(redis_url, user_id="u1", session_id="s1")
    ts = {name: (t0 + timedelta(minutes=m)).timestamp() for name, m in [("i1", 40), ("i3", 44)]}
    assert state.cart == {"i1": ts["i1"]}
    assert state.purchases == {"i3": ts["i3"]}
    newest = {
        f"v{k}": (t0 + timedelta(minutes=k * 0.5)).timestamp()
        for k in range(60 - settings.realtime_views_max, 60)
    }
    assert state.views == newest and state.interest == {}
    assert _state(redis_url, user_id=None, session_id="anon-1").views == {
        "v-anon": (t0 + timedelta(minutes=45)).timestamp()
    }
    assert _state(redis_url, user_id="nobody", session_id=None) == realtime.EMPTY_STATE
    assert _state(redis_url, user_id=None, session_id=None) == realtime.EMPTY_STATE

    # Late arrivals: an add older than the purchase stays out; an add newer than the removal counts.
    late = [
        _event(item_id="i3", event_type="add_to_cart", ts=at(43.5)),
        _event(item_id="i2", event_type="add_to_cart", ts=at(50)),
    ]
    assert api.post("/v1/events", json={"events": late}).status_code == 202
    assert _state(redis_url, user_id="u1", session_id=None).cart == {
        "i1": ts["i1"],
        "i2": (t0 + timedelta(minutes=50)).timestamp(),
    }

    keys = layout.shopper_state_keys("u1")
    assert 0 < redis_client.ttl(keys.cart) <= settings.realtime_cart_ttl_s
    assert (
        settings.realtime_views_ttl_s < redis_client.ttl(keys.purchases) <= settings.realtime_purchases_ttl_s
    )


def test_a_visitors_cart_is_bounded_by_count(
    api: TestClient, settings: Settings, redis_url: str, redis_client: Any
) -> None:
    """Item ids come from the client: a session that adds 250 made-up items and then removes 250 others
    keeps the newest `realtime_cart_max` of each, so no visitor can grow a key that every one of their
    requests reads whole."""
    cap = settings.realtime_cart_max
    t0 = NOW - timedelta(hours=2)

    def events(kind: str, prefix: str, offset: int) -> list[dict[str, Any]]:
        return [
            _event(
                user_id=None,
                session_id="hoarder",
                item_id=f"{prefix}{k}",
                event_type=kind,
                ts=(t0 + timedelta(seconds=offset + k)).isoformat(),
            )
            for k in range(cap + 50)
        ]

    assert api.post("/v1/events", json={"events": events("add_to_cart", "c", 0)}).status_code == 202
    state = _state(redis_url, user_id=None, session_id="hoarder")
    assert sorted(state.cart, key=lambda item: int(item[1:])) == [f"c{k}" for k in range(50, cap + 50)]

    assert api.post("/v1/events", json={"events": events("remove_from_cart", "r", 1000)}).status_code == 202
    cart = layout.session_state_keys("hoarder").cart
    assert redis_client.zcount(cart, "-inf", "(0") == cap  # the newest removals
    assert redis_client.zrangebyscore(cart, "-inf", "(0", start=0, num=1) == [f"r{cap + 49}".encode()]
    assert redis_client.zcount(cart, "(0", "+inf") == cap  # the cart itself untouched
    # ... and an older add of a removal that was kept is still refused.
    late = _event(user_id=None, session_id="hoarder", item_id=f"r{cap + 49}", event_type="add_to_cart")
    assert api.post("/v1/events", json={"events": [{**late, "ts": t0.isoformat()}]}).status_code == 202
    assert f"r{cap + 49}" not in _state(redis_url, user_id=None, session_id="hoarder").cart


def test_the_state_keeps_on_equal_times_what_the_evaluation_keeps(
    api: TestClient, settings: Settings, redis_url: str
) -> None:
    """An invoice's lines share one time: which of them the capped views and cart keep is Redis's order of
    equal scores (by member, bytewise), and the evaluation's session state (`_newest`) must keep the same
    ones, or `sessions` scores another state than the API serves from."""
    from jobs.evaluation.sessions import _newest

    rng = random.Random(5)
    older, newer = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    # Ids whose byte order differs from their numbers' and from case-blind order.
    items = [f"{prefix}{k}" for prefix in ("b", "B", "a-", "a_", "a.") for k in range(50)]
    rng.shuffle(items)
    times = {item: (older if k % 3 == 0 else newer) for k, item in enumerate(items)}
    events = [
        _event(user_id=None, session_id="invoice", item_id=item, event_type=kind, ts=times[item].isoformat())
        for kind in ("view", "add_to_cart")
        for item in items
    ]
    assert api.post("/v1/events", json={"events": events}).status_code == 202
    state = _state(redis_url, user_id=None, session_id="invoice")
    seconds = {item: ts.timestamp() for item, ts in times.items()}
    assert set(state.views) == set(_newest(seconds, settings.realtime_views_max))
    assert set(state.cart) == set(_newest(seconds, settings.realtime_cart_max))
    assert len(state.views) == settings.realtime_views_max < len(items)


def test_erasing_a_shopper_deletes_their_keys_and_their_sessions(
    api: TestClient, redis_url: str, redis_client: Any, settings: Settings
) -> None:
    """`DELETE /v1/users/{id}` removes the shopper's real-time keys and the anonymous state of the
    sessions they used, and nobody else's."""
    events = [
        _event(user_id=None, session_id="before-login", item_id="a", event_type="add_to_cart"),
        _event(user_id="u1", session_id="before-login", item_id="b", event_type="purchase"),
        _event(user_id="u2", session_id="other", item_id="c", event_type="add_to_cart"),
    ]
    assert api.post("/v1/events", json={"events": events}).status_code == 202
    # Signing in on the session moved its guest cart to u1 (and left the session its owner record).
    assert _state(redis_url, user_id=None, session_id="before-login").cart == {}
    assert _state(redis_url, user_id="u1", session_id=None).cart.keys() == {"a"}
    erased = api.delete("/v1/users/u1", headers={"Authorization": "Bearer test-admin-token-0123456789"})
    assert erased.status_code == 200
    # u1's purchases, cart (holding the removal of b) and sessions; the session's owner record.
    assert erased.json()["keys"] == 4
    assert redis_client.keys(f"{layout.REALTIME_PREFIX}:{{u:u1}}:*") == []
    assert redis_client.keys(f"{layout.REALTIME_PREFIX}:{{s:before-login}}:*") == []
    assert _state(redis_url, user_id="u2", session_id=None).cart.keys() == {"c"}
    # The guest events of the session u1 signed in on left the streams with u1's own, before any drain;
    # a digest of the session id is kept for the compaction of what an earlier drain filed.
    remaining = [f[b"session_id"] for _, f in redis_client.xrange(layout.EVENTS_STREAM)]
    links = [f[b"user_id"] for _, f in redis_client.xrange(layout.LINKS_STREAM)]
    assert remaining == [b"other"] and links == [b"u2"]
    recorded = erasure_digest("before-login", settings.erasure_salt_value())
    assert redis_client.smembers(layout.ERASED_SESSIONS_KEY) == {recorded.encode()}


def test_the_stream_holds_every_accepted_event_with_its_variant(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """Each accepted event is one stream entry with its canonical fields and the shopper's variant."""
    events = _random_events(300, seed=1, end=NOW)
    _post(api, events, chunk=120)
    entries = redis_client.xrange(layout.EVENTS_STREAM)
    assert len(entries) == len(events)
    decoded = [stream.decode_stream_entry(fields) for _, fields in entries]
    assert Counter(_row_key(row) for row in decoded) == Counter(_row_key(e) for e in events)
    variants = set()
    for (_, fields), event in zip(entries, events, strict=True):
        subject = event["user_id"] or event["session_id"]
        expected = assign_variant(
            subject, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent
        )
        assert fields[b"variant"].decode() == expected
        variants.add(expected)
    assert variants == {"treatment", "holdout"}


# -- the drain -------------------------------------------------------------------------------------------
def test_the_drain_writes_every_event_once_and_empties_the_stream(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """Every accepted event lands in the lake once; the stream is emptied; a second drain writes nothing."""
    events = _random_events(1_200, seed=2, end=NOW)
    _post(api, events, chunk=400)
    result = drain_events(settings, interval_end=NOW, batch_size=500)
    assert (result.written, len(result.parts), result.rejected, result.deleted) == (1_200, 3, 0, 0)
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events)
    assert result.backlog == stream.StreamBacklog(length=0, pending=0, lag=0, lost=False)
    again = drain_events(settings, interval_end=NOW)
    assert (again.written, again.parts, again.drained_through) == (0, (), result.drained_through)
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events)


def test_events_after_the_interval_end_wait_for_the_next_run(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """The drain stops at the first event after its interval end; the next run takes the rest."""
    events = _random_events(600, seed=3, end=NOW)
    _post(api, events)
    cut = datetime.fromisoformat(events[399]["ts"])
    first = drain_events(settings, interval_end=cut, batch_size=250)
    assert first.written == 400
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events[:400])
    assert first.backlog.length == 200 and first.backlog.pending > 0
    second = drain_events(settings, interval_end=NOW, batch_size=250)
    assert second.written == 200 and second.backlog.length == 0
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events)


def test_entries_erased_while_held_back_are_not_written(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """An entry deleted from the stream (as an erasure does) after the drain read it is counted as
    deleted and never written; the others are drained."""
    events = _random_events(100, seed=9, end=NOW)
    _post(api, events)
    cut = datetime.fromisoformat(events[59]["ts"])
    assert drain_events(settings, interval_end=cut).written == 60
    held = redis_client.xrange(layout.EVENTS_STREAM, count=5)  # read by the drain, held back
    redis_client.xdel(layout.EVENTS_STREAM, held[2][0])
    result = drain_events(settings, interval_end=NOW)
    assert (result.written, result.deleted) == (39, 1)
    assert _lake_rows(settings) == Counter(_row_key(e) for k, e in enumerate(events) if k != 62)
    assert result.backlog == stream.StreamBacklog(length=0, pending=0, lag=0, lost=False)


def test_a_drain_crashing_after_the_lake_write_is_retried_without_duplicates(
    api: TestClient, settings: Settings, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after a part is in the lake but before its entries are acknowledged, a drain retried with
    other batch boundaries writes the remaining events and none of the first part's again."""
    events = _random_events(500, seed=4, end=NOW)
    _post(api, events)
    acknowledge = drain._acknowledge
    calls = {"n": 0}

    def dies_on_second_ack(client: Any, ids: list[str]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        acknowledge(client, ids)

    monkeypatch.setattr(drain, "_acknowledge", dies_on_second_ack)
    with pytest.raises(RuntimeError, match="killed"):
        drain_events(settings, interval_end=NOW, batch_size=150)
    assert sum(_lake_rows(settings).values()) == 300  # two parts written, the second one unacknowledged
    assert redis_client.xpending(layout.EVENTS_STREAM, layout.DRAIN_GROUP)["pending"] == 150

    monkeypatch.setattr(drain, "_acknowledge", acknowledge)
    retried = drain_events(settings, interval_end=NOW, batch_size=70)
    assert retried.already_in_lake == 150 and retried.written == 200
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events)
    assert retried.backlog == stream.StreamBacklog(length=0, pending=0, lag=0, lost=False)


def test_an_entry_the_lake_refuses_is_set_aside_and_the_rest_drained(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """An entry that did not come through the API and fails the lake's validation goes to the rejected
    stream with the reason; the events around it are drained."""
    events = _random_events(40, seed=5, end=NOW)
    _post(api, events[:20])
    redis_client.xadd(
        layout.EVENTS_STREAM,
        {
            "session_id": "s1",
            "item_id": "i1",
            "event_type": "view",
            "ts": events[20]["ts"],
            "quantity": "0",
            "price": "1",
        },
    )
    _post(api, events[20:])
    result = drain_events(settings, interval_end=NOW)
    assert (result.written, result.rejected) == (40, 1)
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events)
    ((_, rejected),) = redis_client.xrange(layout.REJECTED_STREAM)
    assert b"quantity" in rejected[b"error"] and rejected[b"quantity"] == b"0"
    assert result.backlog.length == 0


def test_the_backlog_reports_events_the_length_cap_dropped(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """Entries removed by the length cap before the drain read them show as lost in the backlog."""
    _post(api, _random_events(10, seed=6, end=NOW))
    drain_events(settings, interval_end=NOW)
    _post(api, _random_events(10, seed=7, end=NOW))
    assert stream.stream_backlog(redis_client) == stream.StreamBacklog(
        length=10, pending=0, lag=10, lost=False
    )
    redis_client.xtrim(layout.EVENTS_STREAM, maxlen=4, approximate=False)  # what MAXLEN does when full
    backlog = stream.stream_backlog(redis_client)
    assert backlog.length == 4 and backlog.lost


def test_a_drain_killed_with_sigkill_and_retried_moves_every_event_exactly_once(
    api: TestClient, settings: Settings, redis_client: Any
) -> None:
    """`carousel drain-events` killed with SIGKILL at several points and run again leaves exactly the
    accepted events in the lake, row for row, and an empty stream."""
    events = _random_events(12_000, seed=8, end=NOW)
    _post(api, events)
    env = {
        **os.environ,
        "CAROUSEL_REDIS_URL": settings.redis_url,
        "CAROUSEL_VAR_DIR": str(settings.var_dir),
        "CAROUSEL_LAKE_DIR": str(settings.lake_dir),
        "CAROUSEL_DRAIN_BATCH_SIZE": "200",
        "COLUMNS": "200",
    }
    command = [CAROUSEL, "drain-events", "--interval-end", NOW.isoformat()]
    rng = random.Random(8)
    # Killed at once after a part is reported, the drain mostly dies between the lake write and the
    # acknowledgement; a little later, mostly while it reads or writes the next part.
    kills = [(1, 0.0), (2, rng.uniform(0, 0.04)), (4, 0.0), (6, rng.uniform(0, 0.04)), (8, 0.0)]
    for kill_after, delay_s in kills:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        written = 0
        for line in proc.stderr:
            written += "events -> part-stream-" in line
            if written == kill_after:
                time.sleep(delay_s)
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, "the drain finished before it could be killed"
        assert 0 < sum(_lake_rows(settings).values()) < len(events)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert _lake_rows(settings) == Counter(_row_key(e) for e in events)
    assert stream.stream_backlog(redis_client) == stream.StreamBacklog(length=0, pending=0, lag=0, lost=False)


def test_a_shopper_without_personalization_consent_is_not_tracked(
    api: TestClient, redis_url: str, redis_client: Any
) -> None:
    """After personalization consent is withdrawn, the shopper's views and carts are not stored (state or
    stream); purchases are, as the store's sales; the answer counts what was dropped."""
    admin = {"Authorization": "Bearer test-admin-token-0123456789"}
    consent = {"personalization": False, "marketing": False}
    assert api.put("/v1/users/u9/consent", json=consent, headers=admin).status_code == 200
    events = [
        _event(user_id="u9", item_id="a", event_type="view"),
        _event(user_id="u9", item_id="b", event_type="add_to_cart"),
        _event(user_id="u9", item_id="c", event_type="purchase"),
        _event(user_id="u8", item_id="d", event_type="view"),
    ]
    answer = api.post("/v1/events", json={"events": events})
    assert answer.json() == {"accepted": 2, "duplicates": 0, "not_consented_dropped": 2}
    stored = [(f[b"user_id"], f[b"event_type"]) for _, f in redis_client.xrange(layout.EVENTS_STREAM)]
    assert stored == [(b"u9", b"purchase"), (b"u8", b"view")]
    state = _state(redis_url, user_id="u9", session_id=None)
    assert state.views == {} and state.cart == {} and set(state.purchases) == {"c"}

"""The real-time key layout, the stream entry format and the lake's stream part names (no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest
from redis.crc import key_slot

from carousel.cache import keys as layout
from carousel.cache import stream
from carousel.lake import Lake, stream_part
from carousel.schema import EVENT_TYPES
from serving.routes.events import AcceptedEvent, EventType


def test_every_key_of_a_subject_is_in_one_hash_slot() -> None:
    """A shopper's keys share a hash slot (one round trip, cluster-safe); a session's are its own."""
    for keys in (layout.shopper_state_keys("u-42@shop.example"), layout.session_state_keys("s:abc-1")):
        assert len({key_slot(k.encode()) for k in keys.all}) == 1
    assert layout.shopper_state_keys("x").cart != layout.session_state_keys("x").cart
    assert layout.state_keys(user_id="u1", session_id="s1") == layout.shopper_state_keys("u1")
    assert layout.state_keys(user_id=None, session_id="s1") == layout.session_state_keys("s1")
    assert layout.state_keys(user_id=None, session_id=None) is None


def test_a_stream_entry_round_trips_the_canonical_fields() -> None:
    """Encoded and decoded, an event keeps its exact values; null fields are left out of the entry."""
    ts = datetime(2026, 11, 29, 10, 15, 3, 123456, tzinfo=UTC)
    event = AcceptedEvent(None, "s1", "i1", "purchase", ts, 3, 0.1 + 0.2, "France", None, None)
    entry = stream.stream_entry(event, "holdout")
    assert entry["variant"] == "holdout" and "user_id" not in entry and "device" not in entry
    decoded = stream.decode_stream_entry({k.encode(): v.encode() for k, v in entry.items()})
    assert decoded["user_id"] is None and decoded["country"] == "France"
    assert datetime.fromisoformat(decoded["ts"] or "") == ts
    assert float(decoded["price"] or "") == 0.1 + 0.2 and int(decoded["quantity"] or "") == 3


def test_the_api_accepts_exactly_the_lakes_event_types() -> None:
    """The API's event types are the canonical schema's."""
    assert set(get_args(EventType)) == set(EVENT_TYPES)


def test_drained_through_is_the_newest_stream_id_in_numeric_order(tmp_path: Path) -> None:
    """The lake's drain position is the largest last id of its stream parts, compared as numbers."""
    lake = Lake(tmp_path)
    assert lake.drained_through() is None
    lake.events_dir.mkdir(parents=True)
    for first, last in (("999-0", "999-17"), ("1000-0", "1000-2"), ("998-5", "999-3")):
        (lake.events_dir / stream_part(first, last)).touch()
    (lake.events_dir / "part-20261129T000000-abcdef.parquet").touch()
    assert lake.drained_through() == "1000-2"
    with pytest.raises(ValueError):
        stream_part("1000", "x-1")

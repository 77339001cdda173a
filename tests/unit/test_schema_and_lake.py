"""Canonical schema validation and the lake's refuse-without-touching behaviour."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from carousel.lake import Lake
from carousel.schema import SchemaError, validate_events

NOW = pd.Timestamp("2026-11-29T00:00:00Z")


def _events(**overrides: object) -> pd.DataFrame:
    row = {
        "user_id": "u1",
        "session_id": "s1",
        "item_id": "i1",
        "event_type": "purchase",
        "ts": "2026-11-28T10:00:00Z",
        "quantity": 2,
        "price": 3.5,
        "country": "France",
        "device": None,
        "referrer": None,
    }
    row.update(overrides)
    return pd.DataFrame([row])


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["Mug", "Lamp"],
            "category": ["kitchen/mugs", "home/lighting"],
            "brand": [None, "Acme"],
            "price": [3.5, 20.0],
            "in_stock": [True, False],
            "first_seen": ["2026-01-01", "2026-02-01"],
        }
    )


def test_valid_events_are_coerced_to_the_canonical_types() -> None:
    """A good row comes out with UTC timestamps, int quantities and float prices."""
    out = validate_events(_events(quantity="2", price="3.5"), now=NOW)
    assert str(out["ts"].dt.tz) == "UTC"
    assert out["quantity"].tolist() == [2] and out["price"].tolist() == [3.5]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_events().drop(columns=["session_id"]), "missing column(s) session_id"),
        (_events(quantity="two"), "column 'quantity'"),
        (_events(ts="not a date"), "column 'ts'"),
        (_events(ts="2027-01-01T00:00:00Z"), "in the future"),
        (_events(event_type="click"), "unknown value(s) ['click']"),
        (_events(quantity=0), "'quantity' must be >= 1"),
        (_events(price=-1), "'price' must be a finite number >= 0"),
        (_events(item_id=None), "'item_id' has 1 empty value"),
    ],
)
def test_bad_events_are_refused_with_the_problem_named(frame: pd.DataFrame, message: str) -> None:
    """Each kind of bad input raises SchemaError whose message names the column and problem."""
    with pytest.raises(SchemaError) as err:
        validate_events(frame, now=NOW)
    assert message in str(err.value)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_refused_import_leaves_the_lake_byte_identical(tmp_path: Path) -> None:
    """A malformed events file or catalog is refused and every lake file stays as it was."""
    lake = Lake(tmp_path / "lake")
    lake.upsert_items(_items(), source="items.csv")
    lake.append_events(_events(), now=NOW, source="good.csv")
    before = _snapshot(lake.root)
    with pytest.raises(SchemaError):
        lake.append_events(_events(ts="2030-01-01T00:00:00Z"), now=NOW, source="bad.csv")
    bad_items = _items().assign(price=["x", "1"])
    with pytest.raises(SchemaError, match="column 'price'"):
        lake.upsert_items(bad_items, source="bad-items.csv")
    assert _snapshot(lake.root) == before


def test_reimporting_the_same_events_is_a_no_op(tmp_path: Path) -> None:
    """The same input imported twice adds its events once."""
    lake = Lake(tmp_path / "lake")
    first = lake.append_events(_events(), now=NOW, source="a.csv", digest="abc")
    second = lake.append_events(_events(), now=NOW, source="a.csv", digest="abc")
    assert first.rows == 1 and second.rows == 0 and second.skipped_reason
    assert len(lake.event_files()) == 1


def test_item_upsert_replaces_rows_by_id(tmp_path: Path) -> None:
    """A later catalog row for the same item replaces the earlier one; other items stay."""
    lake = Lake(tmp_path / "lake")
    lake.upsert_items(_items(), source="a")
    update = _items().iloc[[1]].assign(in_stock=True, price=25.0)
    lake.upsert_items(update, source="b")
    items = lake.read_items()
    assert items is not None
    assert items.set_index("item_id").loc["i2", "price"] == 25.0
    assert items.set_index("item_id").loc["i2", "in_stock"]
    assert sorted(items["item_id"]) == ["i1", "i2"]

"""The canonical events / items / users schemas and their validation.

Every adapter (`carousel import ...`, `carousel generate`) produces pandas DataFrames in these shapes;
`validate_events`, `validate_items` and `validate_users` check them before anything is written to the
lake and raise `SchemaError` with a message that names the column and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "remove_from_cart", "purchase")

EVENTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("quantity", pa.int32()),
        ("price", pa.float64()),
        ("country", pa.string()),
        ("device", pa.string()),
        ("referrer", pa.string()),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
        ("first_seen", pa.timestamp("us", tz="UTC")),
    ]
)

USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("country", pa.string()),
        ("consent_personalization", pa.bool_()),
        ("consent_marketing", pa.bool_()),
    ]
)

# Sign-ins: a session first seen with a shopper (the API's `carousel:links`, drained into the lake), so the
# batch attributes the session's earlier anonymous events to the shopper.
SESSION_LINKS_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("linked_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Columns that may hold nulls; every other column must be filled on every row.
_NULLABLE = {
    "events": {"user_id", "country", "device", "referrer"},
    "items": {"title", "brand"},
    "users": {"country"},
    "session_links": set(),
}


class SchemaError(ValueError):
    """Input that does not fit a canonical schema; the message names the column and the problem."""


@dataclass(frozen=True)
class Table:
    """One canonical table: its name, Arrow schema and key column."""

    name: str
    schema: pa.Schema
    key: str


EVENTS = Table("events", EVENTS_SCHEMA, "item_id")
ITEMS = Table("items", ITEMS_SCHEMA, "item_id")
USERS = Table("users", USERS_SCHEMA, "user_id")
SESSION_LINKS = Table("session_links", SESSION_LINKS_SCHEMA, "session_id")
TABLES = {t.name: t for t in (EVENTS, ITEMS, USERS)}


def _coerce(df: pd.DataFrame, table: Table, source: str) -> pd.DataFrame:
    missing = [f.name for f in table.schema if f.name not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {', '.join(missing)} for {table.name}")
    out = pd.DataFrame(index=df.index)
    for field in table.schema:
        col = df[field.name]
        try:
            if pa.types.is_timestamp(field.type):
                out[field.name] = pd.to_datetime(col, utc=True, errors="raise", format="mixed")
            elif pa.types.is_integer(field.type):
                num = pd.to_numeric(col, errors="raise")
                if num.isna().any():
                    raise ValueError("empty value")
                if not np.all(np.mod(num.to_numpy(dtype="float64"), 1) == 0):
                    raise ValueError("not a whole number")
                out[field.name] = num.astype("int64")
            elif pa.types.is_floating(field.type):
                out[field.name] = pd.to_numeric(col, errors="raise").astype("float64")
            elif pa.types.is_boolean(field.type):
                out[field.name] = _to_bool(col)
            else:
                out[field.name] = col.astype("string").str.strip()
                out.loc[out[field.name] == "", field.name] = pd.NA
        except (ValueError, TypeError) as exc:
            bad = _first_bad_value(col, field.type)
            raise SchemaError(
                f"{source}: column {field.name!r} must be {field.type} ({exc}); first bad value: {bad!r}"
            ) from None
    return out


def _to_bool(col: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        return col.astype(bool)
    mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
    lowered = col.astype("string").str.strip().str.lower()
    mapped = lowered.map(mapping)
    if mapped.isna().any():
        raise ValueError("expected true/false")
    return mapped.astype(bool)


def _first_bad_value(col: pd.Series, typ: pa.DataType) -> object:
    for value in col.head(100_000):
        try:
            if pa.types.is_timestamp(typ):
                pd.to_datetime(value, utc=True)
            elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
                float(value)
        except (ValueError, TypeError):
            return value
    return None


def _check_nulls(df: pd.DataFrame, table: Table, source: str) -> None:
    for name in df.columns:
        if name in _NULLABLE[table.name]:
            continue
        nulls = int(df[name].isna().sum())
        if nulls:
            raise SchemaError(f"{source}: column {name!r} has {nulls} empty value(s); it is required")


def validate_events(df: pd.DataFrame, *, now: pd.Timestamp, source: str = "events") -> pd.DataFrame:
    """Check and coerce an events frame; `now` bounds the timestamps (no events from the future)."""
    out = _coerce(df, EVENTS, source)
    _check_nulls(out, EVENTS, source)
    bad_types = sorted(set(out["event_type"].dropna().unique()) - set(EVENT_TYPES))
    if bad_types:
        raise SchemaError(
            f"{source}: column 'event_type' has unknown value(s) {bad_types[:5]}; allowed: {list(EVENT_TYPES)}"
        )
    if (out["quantity"] < 1).any():
        raise SchemaError(
            f"{source}: column 'quantity' must be >= 1 ({int((out['quantity'] < 1).sum())} rows)"
        )
    if (out["price"] < 0).any() or not np.isfinite(out["price"].to_numpy()).all():
        raise SchemaError(f"{source}: column 'price' must be a finite number >= 0")
    future = out["ts"] > now
    if future.any():
        first = out.loc[future, "ts"].min()
        raise SchemaError(
            f"{source}: column 'ts' has {int(future.sum())} timestamp(s) in the future (first {first}, now {now})"
        )
    return out


def validate_items(df: pd.DataFrame, *, source: str = "items") -> pd.DataFrame:
    """Check and coerce an items frame: one row per item_id, prices finite and >= 0."""
    out = _coerce(df, ITEMS, source)
    _check_nulls(out, ITEMS, source)
    dupes = out["item_id"].duplicated()
    if dupes.any():
        raise SchemaError(f"{source}: item_id {out.loc[dupes, 'item_id'].iloc[0]!r} appears more than once")
    if (out["price"] < 0).any() or not np.isfinite(out["price"].to_numpy()).all():
        raise SchemaError(f"{source}: column 'price' must be a finite number >= 0")
    return out


def validate_users(df: pd.DataFrame, *, source: str = "users") -> pd.DataFrame:
    """Check and coerce a users frame: one row per user_id."""
    out = _coerce(df, USERS, source)
    _check_nulls(out, USERS, source)
    dupes = out["user_id"].duplicated()
    if dupes.any():
        raise SchemaError(f"{source}: user_id {out.loc[dupes, 'user_id'].iloc[0]!r} appears more than once")
    return out


def validate_session_links(df: pd.DataFrame, *, source: str = "session links") -> pd.DataFrame:
    """Check and coerce session links: every column filled."""
    out = _coerce(df, SESSION_LINKS, source)
    _check_nulls(out, SESSION_LINKS, source)
    return out


def to_arrow(df: pd.DataFrame, table: Table) -> pa.Table:
    """The validated frame as an Arrow table with exactly the canonical schema."""
    return pa.Table.from_pandas(df[[f.name for f in table.schema]], schema=table.schema, preserve_index=False)

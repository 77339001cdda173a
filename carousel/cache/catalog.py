"""A version's catalog as stored in Redis: one hash per version (`keys.catalog_key`), field = item id,
value = the item's attributes as orjson (`CATALOG_FIELDS`, nulls left out)::

    carousel:ver:<version>:catalog  {"i42": {"title": "Red Mug", "category": "home/kitchen",
                                              "brand": "Acme", "price": 12.5, "in_stock": true}, ...}

The loader writes it with each version; the API holds the live version's in memory (`serving.catalog`)
for the titles in reasons, a visitor's departments, the price of a view sent without one and the
attributes `fields=` asks for. Both sides name the attributes through `CATALOG_FIELDS` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

# The items table's columns a storefront may render (`fields=`), in the order they are documented.
CATALOG_FIELDS: tuple[str, ...] = ("title", "category", "brand", "price", "in_stock")


def encode_entries(rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, bytes]]:
    """(item id, stored value) of each item row (a mapping holding `item_id` and `CATALOG_FIELDS`)."""
    for row in rows:
        attributes = {f: _plain(row.get(f)) for f in CATALOG_FIELDS if row.get(f) is not None}
        yield str(row["item_id"]), orjson.dumps(attributes)


def decode_entry(raw: bytes) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(raw)
    return value


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (orjson refuses numpy bools without an option)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value

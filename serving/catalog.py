"""The catalog's departments as the API needs them: item_id -> department (the top level of the
category path), read from the live version (`carousel.cache.keys.departments_key`) once per version and held in
memory. Used to turn a visitor's views into category interest and to pick the `category:<department>`
segment list that fits an anonymous session."""

from __future__ import annotations

import orjson

from carousel.cache.keys import departments_key
from serving.store import ListStore


class DepartmentCache:
    def __init__(self) -> None:
        self._version: str | None = None
        self._departments: dict[str, str] = {}

    async def load(self, store: ListStore, version: str) -> dict[str, str]:
        """The map of `version` (fetched when the live version changed; empty if it has none)."""
        if version != self._version:
            raw = await store.call(lambda: store.client.get(departments_key(version)))
            self._departments = orjson.loads(raw) if raw else {}
            self._version = version
        return self._departments

    def department(self, item_id: str) -> str | None:
        """The department of an item in the last loaded version (None when unknown)."""
        return self._departments.get(item_id)

"""The live version's catalog in memory: each item's title, category, brand, price and stock as the
version's run read them (`carousel.cache.catalog`), loaded once per version.

The routes use it for what a list alone cannot say: the title a session reason names ("Because you viewed
Red Mug"), the department a view adds interest to (`carousel.rules.segments.department` of the category,
the batch's rule), the price of a view sent without one, and the attributes `fields=` adds to each item.

A new version's catalog is read in the background (HSCAN in slices, so Redis is never blocked and no
request waits on a large catalog) while the previous one keeps answering. The API loads the live one at
start (`serving.app`), so the first requests have it. Memory: about 250 bytes per item, so a million items
take some 250 MB per API worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from carousel.cache.catalog import decode_entry
from carousel.cache.client import AsyncRedis, text
from carousel.cache.keys import catalog_key
from carousel.rules.segments import department

# How long the events route waits for a new version's catalog (a view's price may come from it).
EVENTS_WAIT_S = 2.0
# A whole catalog's load gives up after this long (and is retried on the next request).
LOAD_TIMEOUT_S = 60.0
# Fields per HSCAN call.
SCAN_COUNT = 2_000


class Catalog:
    """Item attributes of the live version; `follow` keeps it on the live version."""

    def __init__(self) -> None:
        self._version: str | None = None
        self._entries: dict[str, bytes] = {}
        self._loading: tuple[str, asyncio.Task[None]] | None = None

    @property
    def version(self) -> str | None:
        """The version whose catalog is held (None before the first load)."""
        return self._version

    async def follow(self, client: AsyncRedis, version: str, *, wait_s: float = 0.0) -> None:
        """Start loading `version`'s catalog when it is not the one held, and wait up to `wait_s` for it
        (the events route waits, since a view's price may come from it; the read path waits only while
        nothing is held, and no longer than its Redis deadline). Meanwhile the previous catalog answers."""
        if version == self._version:
            return
        if self._loading is None or self._loading[0] != version or self._loading[1].done():
            task = asyncio.ensure_future(self._load(client, version))
            # A failed load (Redis down, timeout) is retried by the next request that sees the version.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._loading = (version, task)
        if wait_s > 0:
            try:
                await asyncio.wait_for(asyncio.shield(self._loading[1]), wait_s)
            except Exception:  # Redis slow or down: this answer goes without the new catalog
                pass

    async def _load(self, client: AsyncRedis, version: str) -> None:
        entries: dict[str, bytes] = {}
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            cursor: int = 0
            while True:
                reply: Any = await client.hscan(catalog_key(version), cursor, count=SCAN_COUNT)
                cursor, chunk = reply
                entries.update((text(k), v) for k, v in chunk.items())
                if not cursor:
                    break
        # Swapped whole: a request sees one version's catalog, never a mix.
        self._entries, self._version = entries, version

    def attributes(self, item_id: str) -> dict[str, Any] | None:
        """The item's stored attributes (None when the catalog does not hold it)."""
        raw = self._entries.get(item_id)
        return decode_entry(raw) if raw is not None else None

    def title(self, item_id: str) -> str | None:
        found = self.attributes(item_id)
        title = found.get("title") if found else None
        return str(title) if title else None

    def price(self, item_id: str) -> float | None:
        found = self.attributes(item_id)
        price = found.get("price") if found else None
        return float(price) if price is not None else None

    def department(self, item_id: str) -> str | None:
        """The item's department (None when unknown)."""
        found = self.attributes(item_id)
        category = found.get("category") if found else None
        return department(str(category)) if category else None

"""The last links of the fallback chain: personal -> segment -> global -> the last global list this
process read (in memory, also kept on disk) -> a list bundled with the package. A 200 is never empty.

The on-disk copy (`<var_dir>/fallback/global.json`) survives restarts, so an API process started
while Redis is down still serves the store's own bestsellers. The bundled list
(`serving/static/fallback_list.json`, the demo store's bestsellers) is the very last resort; a store
that wants its own before its first publish writes that list to the on-disk copy's path (the same
format: a JSON array of served items).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from carousel.cache.payload import decode_items

BUNDLED = Path(__file__).parent / "static" / "fallback_list.json"


class FallbackLists:
    """Remembers the newest global list and hands out the best fallback available, in the served shape
    (the files hold a JSON array of served items, so a store can write its own by hand)."""

    def __init__(self, var_dir: Path, bundled: Path | None = None) -> None:
        self._disk = var_dir / "fallback" / "global.json"
        self._bundled = bundled or BUNDLED
        self._version: str | None = None
        self._items: list[dict[str, Any]] = []

    def remember(self, version: str, payload: bytes) -> None:
        """Keep the live version's global list (a stored payload; written to disk once per version)."""
        if version == self._version:
            return
        self._version, self._items = version, decode_items(payload)
        try:
            self._disk.parent.mkdir(parents=True, exist_ok=True)
            staging = self._disk.with_suffix(".tmp")
            staging.write_bytes(orjson.dumps(self._items))
            os.replace(staging, self._disk)
        except OSError:
            pass  # the memory copy still serves; the disk copy is for the next start

    def items(self) -> list[dict[str, Any]]:
        """The best fallback list we have: memory, then disk, then the bundled one."""
        if self._items:
            return self._items
        for path in (self._disk, self._bundled):
            try:
                data = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if isinstance(data, list) and data and all(_is_item(i) for i in data):
                self._items = data
                return data
        raise RuntimeError(f"no fallback list: {self._bundled} is missing from the package")

    def available(self) -> bool:
        try:
            return bool(self.items())
        except RuntimeError:
            return False


def _is_item(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("item_id"), str) and "reason" in entry

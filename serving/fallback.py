"""The last links of the fallback chain: personal -> segment -> global -> the last global list this
process read (in memory, also kept on disk) -> a list bundled with the package. A 200 is never empty.

The on-disk copy (`<var_dir>/fallback/global.json`) survives restarts, so an API process started
while Redis is down still serves the store's own bestsellers. The bundled list
(`serving/static/fallback_list.json`, the demo store's bestsellers) is the very last resort; a store
replaces it by pointing `CAROUSEL_FALLBACK_FILE` at a list of its own items.
"""

from __future__ import annotations

import os
from pathlib import Path

from serving import keyspace

BUNDLED = Path(__file__).parent / "static" / "fallback_list.json"


class FallbackLists:
    """Remembers the newest global list payload and hands out the best fallback available."""

    def __init__(self, var_dir: Path, bundled: Path | None = None) -> None:
        self._disk = var_dir / "fallback" / "global.json"
        self._bundled = bundled or BUNDLED
        self._version: str | None = None
        self._payload: bytes | None = None

    def remember(self, version: str, payload: bytes) -> None:
        """Keep the live version's global list (written to disk once per version)."""
        if version == self._version:
            return
        self._version, self._payload = version, payload
        try:
            self._disk.parent.mkdir(parents=True, exist_ok=True)
            staging = self._disk.with_suffix(".tmp")
            staging.write_bytes(payload)
            os.replace(staging, self._disk)
        except OSError:
            pass  # the memory copy still serves; the disk copy is for the next start

    def payload(self) -> bytes:
        """The best fallback list we have: memory, then disk, then the bundled one."""
        if self._payload:
            return self._payload
        for path in (self._disk, self._bundled):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if data and keyspace.decode_items(data):
                self._payload = data
                return data
        raise RuntimeError(f"no fallback list: {self._bundled} is missing from the package")

    def available(self) -> bool:
        try:
            return bool(self.payload())
        except RuntimeError:
            return False

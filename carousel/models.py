"""The numbered model folders under `<var_dir>/models`, as anyone may read them: which models exist,
the newest, and each one's `model.json` (training windows, parameters, out-of-sample figures). Writing
and loading a model's parts is the batch's (`jobs.ranking.store`); the ops page only reads.

A model is written to a temporary folder and renamed into place, so a reader never sees half of one;
numbers only grow, and `latest()` is the highest complete number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_FILE = "model.json"


class ModelStoreError(RuntimeError):
    """No usable model (none trained yet, or a model folder is damaged)."""


class ModelCatalog:
    """The model folders under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def numbers(self) -> list[int]:
        if not self.root.exists():
            return []
        found = []
        for child in self.root.iterdir():
            if child.is_dir() and child.name.isdigit() and (child / MODEL_FILE).exists():
                found.append(int(child.name))
        return sorted(found)

    def latest(self) -> int | None:
        numbers = self.numbers()
        return numbers[-1] if numbers else None

    def path(self, number: int) -> Path:
        return self.root / f"{number:04d}"

    def describe(self, number: int) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self.path(number) / MODEL_FILE).read_text())
        return meta

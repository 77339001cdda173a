"""Run history: one row per pipeline run, kept in SQLite under `var/` so it survives restarts.

Each row holds the run id, its data interval, status, stage durations, counts, model and published
version and the validation outcome; `carousel publish status` and the ops page list them.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    record TEXT NOT NULL
)
"""


def folder_name(run_id: str) -> str:
    """A run id as a safe folder name (Airflow's ids hold ':' and '+'): the run's folders under var/."""
    return "".join(c if c.isalnum() or c in "-_.T" else "_" for c in run_id)


class RunHistory:
    """A small durable store of run records (JSON documents keyed by run id)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, run_id: str) -> dict[str, Any] | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def update(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into the run's record (nested `stages` dicts are merged too) and store it."""
        with closing(self._connect()) as conn, conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            record: dict[str, Any] = json.loads(row[0]) if row else {"run_id": run_id, "stages": {}}
            for key, value in fields.items():
                if key == "stages" and isinstance(value, dict):
                    record.setdefault("stages", {}).update(value)
                else:
                    record[key] = value
            conn.execute(
                "INSERT INTO runs (run_id, record) VALUES (?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "record = excluded.record, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                (run_id, json.dumps(record, default=str)),
            )
        return record

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT record FROM runs ORDER BY updated_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

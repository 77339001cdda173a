"""`carousel import` through the CLI: good files land in the lake, bad files are refused untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from carousel import cli
from configs.settings import get_settings


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CAROUSEL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CAROUSEL_LAKE_DIR", str(tmp_path / "lake"))
    get_settings.cache_clear()
    yield tmp_path / "lake"
    get_settings.cache_clear()


GOOD = """user_id,session_id,item_id,event_type,ts,quantity,price,country,device,referrer
u1,s1,i1,view,2026-11-01T10:00:00Z,1,2.5,France,mobile,
u1,s1,i1,purchase,2026-11-01T10:05:00Z,2,2.5,France,mobile,
,s2,i2,view,2026-11-02T09:00:00Z,1,4.0,Spain,desktop,google
"""


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_good_events_file_is_imported(lake_env: Path, tmp_path: Path) -> None:
    """A canonical CSV lands in the lake as one Parquet part with every row."""
    path = tmp_path / "events.csv"
    path.write_text(GOOD)
    assert cli.main(["import", "events", str(path)]) == 0
    parts = list((lake_env / "events").glob("part-*.parquet"))
    assert len(parts) == 1 and len(pd.read_parquet(parts[0])) == 3


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (GOOD.replace("quantity,", ""), "missing column(s) quantity"),
        (GOOD.replace(",2,2.5,", ",two,2.5,"), "column 'quantity'"),
        (GOOD.replace("2026-11-02T09:00:00Z", "2099-01-01T00:00:00Z"), "in the future"),
        (GOOD.replace("purchase", "bought"), "unknown value(s) ['bought']"),
    ],
)
def test_malformed_file_is_refused_and_lake_unchanged(
    lake_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    """A malformed file exits 1 with a message naming the problem, and the lake keeps every byte."""
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert cli.main(["import", "events", str(good)]) == 0
    before = _files(lake_env)
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    assert cli.main(["import", "events", str(bad)]) == 1
    assert needle in " ".join(capsys.readouterr().err.split())
    assert _files(lake_env) == before


def test_missing_file_is_a_clear_error(lake_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path that does not exist is named in the error."""
    assert cli.main(["import", "items", "/nonexistent/items.csv"]) == 1
    assert "no such file: /nonexistent/items.csv" in capsys.readouterr().err

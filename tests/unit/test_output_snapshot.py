"""The output comparison used to show a change keeps carousel's output (`infra.output_snapshot`)."""

from __future__ import annotations

import json
from pathlib import Path

from infra.output_snapshot import differing_figures, differing_lists, main


def _dump(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("\n".join(json.dumps({"key": k, "type": "string", "value": v}) for k, v in rows.items()))
    return path


def test_only_published_list_keys_are_compared(tmp_path: Path) -> None:
    """Audience rows may differ; a shopper's hash, a version's segment or the pointer may not."""
    before = _dump(tmp_path / "a", {"carousel:u:{u:1}": "01", "carousel:aud:{x}:rows": "aa"})
    same = _dump(tmp_path / "b", {"carousel:u:{u:1}": "01", "carousel:aud:{x}:rows": "bb"})
    other = _dump(tmp_path / "c", {"carousel:u:{u:1}": "02", "carousel:ver:V:s:global": "03"})
    assert differing_lists(before, same) == []
    assert differing_lists(before, other) == ["carousel:u:{u:1}", "carousel:ver:V:s:global"]
    assert main(["lists", str(before), str(other)]) == 1 and main(["lists", str(before), str(same)]) == 0


def test_every_figure_but_timings_is_compared(tmp_path: Path) -> None:
    """A changed NDCG is reported; a changed timing is not."""
    report = {
        "tasks": {"all": {"ranker": {"ndcg@10": 0.38}}},
        "deciles": [[1, 0.2]],
        "timings_s": {"total": 9},
    }
    changed = {
        "tasks": {"all": {"ranker": {"ndcg@10": 0.39}}},
        "deciles": [[1, 0.2]],
        "timings_s": {"total": 1},
    }
    (tmp_path / "a.json").write_text(json.dumps(report))
    (tmp_path / "b.json").write_text(json.dumps({**report, "timings_s": {"total": 1}}))
    (tmp_path / "c.json").write_text(json.dumps(changed))
    assert differing_figures(tmp_path / "a.json", tmp_path / "b.json") == []
    assert differing_figures(tmp_path / "a.json", tmp_path / "c.json") == [
        "/tasks/all/ranker/ndcg@10: 0.38 -> 0.39"
    ]

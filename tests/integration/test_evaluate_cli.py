"""`carousel evaluate` end to end: the contract report, and the ranker's margin on real data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from carousel import cli
from jobs.ingest.synthetic import StoreSpec, generate_store, write_store

pytestmark = pytest.mark.integration

MODELS = {"popularity", "repurchase", "cooccurrence", "als", "ranker"}
# The visitor tasks (jobs/evaluation/sessions.py) and their models.
VISITOR_MODELS = {
    "sessions": {"bestsellers", "segment", "session", "served"},
    "new_shoppers": {"bestsellers", "segment"},
}
METRICS = {"ndcg@10", "recall@10", "map@12", "coverage@10", "users"}


def _check_contract(report: dict[str, object]) -> None:
    assert set(report["split"]) >= {"train_end", "test_start", "test_end"}  # type: ignore[arg-type]
    tasks = report["tasks"]
    assert set(tasks) == {"all", "new_items", *VISITOR_MODELS}  # type: ignore[arg-type]
    expected = {"all": MODELS, "new_items": MODELS, **VISITOR_MODELS}
    for task, models in expected.items():
        per_model = tasks[task]  # type: ignore[index]
        assert set(per_model) == models
        for figures in per_model.values():
            assert set(figures) >= METRICS
            assert figures["users"] > 0
            assert all(0.0 <= figures[m] <= 1.0 for m in METRICS - {"users"})
    targets = report["targets"]
    assert targets["sessions"]["sessions"] == tasks["sessions"]["served"]["users"]  # type: ignore[index]
    # Shoppers first seen in the test period who bought there are the cold buyers the shoppers' tasks leave
    # out.
    assert targets["new_shoppers"]["users"] == targets["cold_buyers_excluded"]  # type: ignore[index]


def _margin(per_model: dict[str, dict[str, float]]) -> float:
    best_other = max(v["ndcg@10"] for k, v in per_model.items() if k != "ranker")
    return per_model["ranker"]["ndcg@10"] / best_other - 1.0


def test_evaluate_events_file_writes_contract_report(tmp_path: Path) -> None:
    """Another store's canonical events + items (the synthetic store: 20,000 shoppers, 2,000 items, 90
    days; about 2,500 scored shoppers per task, 250 per decile) get the contract JSON, a Markdown summary
    and a plot; the split puts the last 30 days in the test period; and the issue's bar holds as on
    Online Retail: the ranker beats the best other model by 10% in both tasks and is not more than 2%
    below ALS in any new_items decile. (On a 5,000-shopper store, 57 shoppers per decile, one decile
    came out 4% below ALS: within that sample's noise, which is why the store is this big.) The served
    session list at least doubles the bestsellers on the store's anonymous sessions."""
    store = generate_store(
        StoreSpec(users=20_000, items=2_000, days=90, seed=11, end=pd.Timestamp("2026-11-01T00:00:00Z"))
    )
    write_store(store, tmp_path / "store")
    out = tmp_path / "report.json"
    code = cli.main(
        [
            "evaluate",
            "--dataset",
            "events",
            "--input",
            str(tmp_path / "store" / "events.parquet"),
            "--items",
            str(tmp_path / "store" / "items.parquet"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    _check_contract(report)
    split = report["split"]
    span = pd.Timestamp(split["test_end"]) - pd.Timestamp(split["test_start"])
    assert span == pd.Timedelta(days=30)
    assert pd.Timestamp(split["train_end"]) == pd.Timestamp(split["test_start"])
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 1000
    _check_issue_bar(report)
    # Issue 18's bar on the synthetic store's anonymous sessions: the served session list at least doubles
    # the bestsellers' NDCG@10 (4.9x when measured; Online Retail's guest invoices fall short, see
    # docs/evaluation.md).
    sessions = report["tasks"]["sessions"]
    assert sessions["served"]["ndcg@10"] >= 2 * sessions["bestsellers"]["ndcg@10"]


def test_online_retail_ranker_beats_every_baseline_by_ten_percent(
    tmp_path: Path, shared_data: Callable[[str], Path]
) -> None:
    """On Online Retail the ranker's NDCG@10 is at least 10% above the best other model in both tasks
    and not more than 2% below ALS in any activity decile of new_items."""
    path = shared_data("online-retail/online_retail.csv.gz")
    out = tmp_path / "retail.json"
    assert cli.main(["evaluate", "--dataset", "online-retail", "--input", str(path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_contract(report)
    _check_issue_bar(report)


def _check_issue_bar(report: dict[str, object]) -> None:
    tasks = report["tasks"]
    assert _margin(tasks["all"]) >= 0.10  # type: ignore[index]
    assert _margin(tasks["new_items"]) >= 0.10  # type: ignore[index]
    deciles = report["deciles"]["new_items"]  # type: ignore[index]
    for ranker, als in zip(deciles["ranker"], deciles["als"], strict=True):
        assert ranker["ndcg@10"] >= 0.98 * als["ndcg@10"], f"decile {ranker['decile']}"


def test_evaluate_folds_reports_every_window_and_the_last_as_the_split(tmp_path: Path) -> None:
    """`--folds 2` on a small store (1,500 shoppers, 42 days, 7-day windows) runs the real ranker on two
    back-to-back test windows: the report's split and tasks are the last fold's, every fold has the same
    tasks and models, and each task's mean ratio lies inside its interval. (Two folds keep the test
    short: the windows' arithmetic for more is unit-tested.)"""
    store = generate_store(
        StoreSpec(users=1_500, items=300, days=42, seed=3, end=pd.Timestamp("2026-11-01T00:00:00Z"))
    )
    write_store(store, tmp_path / "store")
    out = tmp_path / "folds.json"
    args = ["evaluate", "--dataset", "events", "--input", str(tmp_path / "store" / "events.parquet")]
    args += ["--items", str(tmp_path / "store" / "items.parquet"), "--out", str(out)]
    assert cli.main([*args, "--test-days", "7", "--val-days", "7", "--folds", "2"]) == 0
    report = json.loads(out.read_text())
    folds = report["folds"]
    assert len(folds) == 2
    assert folds[-1]["split"] == report["split"] and folds[-1]["tasks"] == report["tasks"]
    assert folds[-1]["deciles"] == report["deciles"]
    # Each fold keeps what its ranker said about itself (its window figures, the guard it chose).
    assert folds[-1]["models"] == report["models"] and "window_evaluation" in folds[0]["models"]["ranker"]
    starts = [pd.Timestamp(f["split"]["test_start"]) for f in folds]
    ends = [pd.Timestamp(f["split"]["test_end"]) for f in folds]
    assert ends[:-1] == starts[1:] and {e - s for s, e in zip(starts, ends, strict=True)} == {
        pd.Timedelta(days=7)
    }
    for fold in folds:
        assert {t: set(m) for t, m in fold["tasks"].items()} == {
            t: set(m) for t, m in report["tasks"].items()
        }
        assert set(fold["tasks"]["all"]) == MODELS
    for task in ("all", "new_items"):
        ratio = report["folds_summary"]["tasks"][task]["ranker_vs_best_other"]
        low, high = ratio["ci"]
        assert low <= ratio["mean_ratio"] <= high
        assert len(ratio["folds"]) == 2
        # Every fold's weakest activity decile against ALS, as its own decile rows give it.
        for fold, lowest in zip(
            folds, report["folds_summary"]["tasks"][task]["lowest_decile_vs_als"], strict=True
        ):
            rows = {r["decile"]: r["ndcg@10"] for r in fold["deciles"][task]["ranker"]}
            als = {r["decile"]: r["ndcg@10"] for r in fold["deciles"][task]["als"]}
            assert lowest["ratio"] == pytest.approx(
                min(rows[d] / als[d] for d in als if als[d] > 0), abs=1e-4
            )
            assert rows[lowest["decile"]] / als[lowest["decile"]] == pytest.approx(lowest["ratio"], abs=1e-4)
            # Its interval is drawn within that decile's shoppers.
            sizes = {r["decile"]: r["users"] for r in fold["deciles"][task]["ranker"]}
            assert lowest["users"] == sizes[lowest["decile"]]
            assert 0 <= lowest["ci"][0] <= lowest["ci"][1]
    md = out.with_suffix(".md").read_text()
    assert md.count("| **mean** |") == 2

"""`carousel bench serve` end to end at a toy size: it starts its own Redis, API, baseline and wrk, and
writes the contract's JSON. Only that the work was done is checked; how fast is what the command prints."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from carousel import cli

pytestmark = pytest.mark.integration


def test_bench_serve_writes_the_contract_report(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "--concurrency", "2", "--duration", "1", "--rounds", "1", "--users", "300"]
    assert cli.main([*argv, "--publish-lists", "2000", "--out", str(out)]) == 0
    report = orjson.loads(out.read_bytes())
    assert report["endpoint"] == "/v1/recommendations" and report["concurrency"] == 2
    assert report["rps"] > 0 and report["p99_ms"] >= report["p50_ms"] > 0 and report["errors"] == 0
    assert report["baseline"]["what"] == "bare FastAPI route returning one Redis GET"
    assert report["baseline"]["rps"] > 0 and report["baseline"]["errors"] == 0
    assert report["redis_get_rps"] > 0
    assert report["ratio_to_baseline"] == pytest.approx(report["rps"] / report["baseline"]["rps"], abs=1e-3)
    for name in ("full", "baseline"):
        (only,) = report["rounds"][name]
        assert 0 < only["busiest_worker_share"] <= 1
        assert report["uneven_rounds"][name] == ([1] if only["busiest_worker_share"] > 0.8 else [])
    during = report["during_publish"]
    assert during["lists"] == 2000 and during["publish_s"] > 0 and during["slices"] >= 1
    assert during["errors"] == 0 and during["rps"] > 0
    steps = during["loader_steps_s"]
    assert list(steps)[0] == "checked" and list(steps)[-1] == "pruned" and "switched" in steps
    assert list(steps.values()) == sorted(steps.values())
    assert len(during["slice_start_s"]) == during["slices"]
    control = during["control"]
    assert len(control["slice_p99_ms"]) == during["slices"] and control["errors"] == 0
    assert during["p99_ratio_to_control"] == pytest.approx(during["p99_ms"] / control["p99_ms"], abs=0.01)


def test_bench_serve_refuses_a_publish_smaller_than_the_served_shoppers(tmp_path: Path) -> None:
    argv = ["bench", "serve", "--users", "300", "--publish-lists", "100", "--out", str(tmp_path / "x.json")]
    assert cli.main(argv) != 0
    assert not (tmp_path / "x.json").exists()

"""Unit tests for `carousel bench batch` (`carousel.bench.batch`): presets, stores and its jobs'
environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from carousel.bench.batch import DAYS, PRESETS, Preset, local_cores, on_cpus, store_size, store_spec
from carousel.cli import build_parser
from jobs.ingest.synthetic import generate_store
from jobs.publishing.loader import loader_env


@pytest.mark.parametrize(("users", "items", "events"), [(2_000, 300, 100_000), (500, 2_000, 60_000)])
def test_store_has_the_requested_events_within_ten_percent(users: int, items: int, events: int) -> None:
    """The generated store holds the requested number of events within 10%, whatever the ratios."""
    store = generate_store(store_spec(users, items, events))
    assert abs(len(store.events) - events) <= 0.1 * events
    assert len(store.users) == users and len(store.items) == items


def test_store_spans_both_ranker_label_windows() -> None:
    """The events cover more than the two 21-day label windows, so the benchmark trains the ranker."""
    store = generate_store(store_spec(300, 100, 10_000))
    span = store.events["ts"].max() - store.events["ts"].min()
    assert DAYS > 2 * 21
    assert span > pd.Timedelta(days=2 * 21)


def test_presets_grow_to_the_issue_sizes() -> None:
    """The large preset is the issue's 1M shoppers, 100k items and 20M events; each preset is larger."""
    assert PRESETS["large"].users == 1_000_000
    assert PRESETS["large"].items == 100_000
    assert PRESETS["large"].events == 20_000_000
    sizes = [PRESETS[name].events for name in ("small", "medium", "large")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_explicit_figures_override_the_preset() -> None:
    """`--preset` fills in what --users/--items/--events leave unset, and nothing else."""
    args = build_parser().parse_args(
        ["bench", "batch", "--preset", "medium", "--events", "7000", "--out", "x"]
    )
    size = store_size(args.preset, args.users, args.items, args.events)
    assert size == Preset(users=200_000, items=20_000, events=7_000)
    assert store_size("small", None, None, None) == PRESETS["small"]


def test_loader_env_keeps_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish job started with an environment of its own (the bench's private Redis) keeps it: only
    the loader's NumPy setting is added, nothing of this process's environment."""
    monkeypatch.setenv("CAROUSEL_REDIS_URL", "redis://127.0.0.1:6399/0")
    given = {"CAROUSEL_REDIS_URL": "redis://127.0.0.1:7001/0", "PATH": "/usr/bin"}
    assert loader_env(given) == {**given, "NUMPY_MADVISE_HUGEPAGE": "0"}
    assert loader_env()["CAROUSEL_REDIS_URL"] == "redis://127.0.0.1:6399/0"


@pytest.mark.parametrize(
    ("master", "cores"),
    [("local[1]", 1), ("local[2]", 2), ("local", 1), ("local[*]", None), ("spark://127.0.0.1:7077", None)],
)
def test_a_local_master_with_n_slots_is_measured_on_n_cpus(master: str, cores: int | None) -> None:
    assert local_cores(master) == cores


def test_a_job_on_one_cpu_and_its_children_see_one_cpu() -> None:
    """A rescore on `local[1]` runs with one CPU's affinity, which its JVM and Python workers inherit."""
    child = "import os, subprocess, sys; print(len(os.sched_getaffinity(0))); sys.stdout.flush(); " + (
        "subprocess.run([sys.executable, '-c', 'import os; print(len(os.sched_getaffinity(0)))'])"
    )
    out = subprocess.run(
        [*on_cpus(1), sys.executable, "-c", child], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "1"]
    with pytest.raises(ValueError, match="CPUs"):
        on_cpus(len(os.sched_getaffinity(0)) + 1)

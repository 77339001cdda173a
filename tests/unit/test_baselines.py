"""The evaluation baselines (popularity, repurchase, co-occurrence, ALS) and their tuning, on small data."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from jobs.evaluation import baselines as bl
from jobs.evaluation import protocol as ev
from jobs.ingest.synthetic import StoreSpec, generate_store
from jobs.ranking.als import AlsParams

T0 = pd.Timestamp("2026-01-01", tz="UTC")
CUTOFF = T0 + pd.Timedelta(days=100)


def _events(rows: list[tuple[str | None, str, str, str, float]]) -> pd.DataFrame:
    """Normalised canonical events from (user_id, session_id, item_id, event_type, day offset from T0)."""
    frame = pd.DataFrame(rows, columns=["user_id", "session_id", "item_id", "event_type", "day"])
    frame["ts"] = T0 + pd.to_timedelta(frame.pop("day"), unit="D")
    frame["quantity"] = 1
    frame["price"] = 1.0
    for name in ("country", "device", "referrer"):
        frame[name] = None
    return ev.normalise_events(frame)


def _users(*ids: str) -> np.ndarray:
    return np.array(ids, dtype=object)


def _list_of(lists: pd.DataFrame, user: str) -> list[str]:
    return lists.loc[lists["user_id"] == user].sort_values("rank")["item_id"].tolist()


def _background(n_buyers: int = 8) -> list[tuple[str | None, str, str, str, float]]:
    """Other shoppers who make P1 > P2 > P3 the bestsellers."""
    rows: list[tuple[str | None, str, str, str, float]] = []
    for n, item in enumerate(["P1", "P2", "P3"]):
        for b in range(n_buyers - 2 * n):
            rows.append((f"b{b}", f"bg-{item}-{b}", item, "purchase", 95.0))
    return rows


def test_repurchase_ranks_by_frequency_then_recency_then_popular() -> None:
    """Own purchases come first by distinct purchase sessions, ties by the latest purchase, then
    bestsellers."""
    rows = [
        ("u", "s1", "A", "purchase", 1),
        ("u", "s2", "A", "purchase", 2),
        ("u", "s3", "A", "purchase", 3),
        ("u", "s3", "A", "purchase", 3),  # two lines of one order are one purchase session
        ("u", "s1", "D", "purchase", 1),
        ("u", "s2", "D", "purchase", 2),
        ("u", "s5", "C", "purchase", 5),
        ("u", "s9", "B", "purchase", 9),
        ("u", "s9", "V", "view", 9),  # viewed, never bought: not a re-buy
    ] + _background()
    ctx = ev.make_context(_events(rows), None, CUTOFF)
    lists = bl.repurchase(ctx, _users("u"), 6, False)
    assert _list_of(lists, "u") == ["A", "D", "B", "C", "P1", "P2"]


def test_repurchase_for_new_items_is_popularity_without_the_shoppers_purchases() -> None:
    """With exclude_bought, repurchase shows the bestsellers the shopper has not bought."""
    rows = [("u", "s1", "P1", "purchase", 1)] + _background()
    ctx = ev.make_context(_events(rows), None, CUTOFF)
    assert _list_of(bl.repurchase(ctx, _users("u"), 2, True), "u") == ["P2", "P3"]
    assert _list_of(bl.popularity(ctx, _users("u"), 2, True), "u") == ["P2", "P3"]


def test_popularity_counts_recent_distinct_buyers_and_skips_out_of_stock() -> None:
    """Popularity ranks by distinct buyers in the tuned window and never shows an out-of-stock item."""
    rows = []
    rows += [(f"r{n}", f"r{n}", "RECENT", "purchase", 97) for n in range(3)]
    rows += [("same", f"x{n}", "ONE_BUYER", "purchase", 98) for n in range(9)]  # one buyer, nine orders
    rows += [(f"o{n}", f"o{n}", "OLD", "purchase", 20) for n in range(6)]
    rows += [(None, f"a{n}", "SOLD_OUT", "purchase", 99) for n in range(9)]  # anonymous buyers count too
    items = pd.DataFrame(
        {
            "item_id": ["RECENT", "ONE_BUYER", "OLD", "SOLD_OUT"],
            "in_stock": [True, True, True, False],
            "first_seen": [T0] * 4,
        }
    )
    ctx = ev.make_context(_events(rows), items, CUTOFF)
    ctx.tuned = {"popularity": {"window_days": 7}}
    assert _list_of(bl.popularity(ctx, _users("u"), 3, False), "u") == ["RECENT", "ONE_BUYER", "OLD"]
    ctx.tuned = {"popularity": {"window_days": 90}}
    assert _list_of(bl.popularity(ctx, _users("u"), 3, False), "u") == ["OLD", "RECENT", "ONE_BUYER"]


def test_cooccurrence_finds_a_planted_pair() -> None:
    """A shopper who bought X is shown Y first when X and Y are often bought in the same basket."""
    rng = np.random.default_rng(1)
    rows: list[tuple[str | None, str, str, str, float]] = []
    for n in range(30):
        day = float(rng.uniform(60, 99))
        rows += [(None, f"pair{n}", "X", "purchase", day), (None, f"pair{n}", "Y", "purchase", day)]
    for n in range(200):  # noise baskets over other items, some far more popular than Y
        day = float(rng.uniform(60, 99))
        for item in rng.choice(20, size=3, replace=False):
            rows.append((f"n{n}", f"noise{n}", f"N{item}", "purchase", day))
    rows.append(("u", "mine", "X", "purchase", 90))
    ctx = ev.make_context(_events(rows), None, CUTOFF)
    for exclude in (False, True):
        lists = bl.cooccurrence(ctx, _users("u"), 5, exclude)
        assert _list_of(lists, "u")[0] == "Y"


@pytest.fixture(scope="module")
def small_store() -> tuple[pd.DataFrame, pd.DataFrame]:
    store = generate_store(StoreSpec(users=400, items=150, days=60, seed=3))
    return ev.normalise_events(store.events), ev.normalise_items(store.items)  # type: ignore[return-value]


@pytest.mark.parametrize("name", list(bl.BASELINES))
def test_every_baseline_honours_exclude_bought_and_fills_lists(
    name: str, small_store: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Every baseline gives each shopper k distinct in-stock items, none of them bought before with
    exclude_bought."""
    events, items = small_store
    cutoff = events["ts"].max() - pd.Timedelta(days=15)
    ctx = ev.make_context(events, items, cutoff)
    bought = bl._bought(ctx)
    users = np.asarray(pd.unique(bought["user_id"])[:150], dtype=object)
    users = np.concatenate([users, _users("never-seen")])  # an unknown shopper still gets a full list
    in_stock = set(items.loc[items["in_stock"] & (items["first_seen"] < cutoff), "item_id"])
    k = 12
    for exclude in (False, True):
        lists = bl.BASELINES[name](ctx, users, k, exclude)
        assert set(lists["user_id"]) == set(users)
        sizes = lists.groupby("user_id").agg(n=("item_id", "size"), distinct=("item_id", "nunique"))
        assert (sizes["n"] == k).all() and (sizes["distinct"] == k).all()
        ranks_ok = lists.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, k + 1)))
        assert ranks_ok.all()
        assert set(lists["item_id"]) <= in_stock
        if exclude:
            clash = lists.merge(bought, on=["user_id", "item_id"])
            assert clash.empty, f"{name} showed {len(clash)} already-bought items"


def _other_task_lists(ctx: ev.EvalContext) -> list[str]:
    return [key for key in ctx.cache if key.startswith("cooccurrence:other-task")]


def test_cooccurrence_lists_made_for_the_other_task_equal_its_own(
    small_store: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """With both tasks on the same parameters, one call makes the other task's lists as well; they equal
    those of a context that never made them, for a subset of the shoppers too, and a call with other
    parameters does not take them."""
    events, items = small_store
    cutoff = events["ts"].max() - pd.Timedelta(days=15)
    users = np.asarray(pd.unique(bl._bought(ev.make_context(events, items, cutoff))["user_id"]), dtype=object)

    def alone(exclude: bool, some: np.ndarray, params: dict[str, float]) -> pd.DataFrame:
        """The lists of a context whose other task has other parameters, so that it makes one task's only."""
        differ = {"shrink": 30.0}
        mine, theirs = (differ, params) if exclude else (params, differ)
        ctx = ev.make_context(
            events, items, cutoff, tuned={"cooccurrence": mine, "new_items": {"cooccurrence": theirs}}
        )
        lists = bl.cooccurrence(ctx, some, 12, exclude)
        assert not _other_task_lists(ctx)
        return lists

    for first in (False, True):
        shared = ev.make_context(events, items, cutoff)
        for some in (users, users[::3]):
            bl.cooccurrence(shared, users, 12, first)
            assert _other_task_lists(shared)
            got = bl.cooccurrence(shared, some, 12, not first)
            pd.testing.assert_frame_equal(got, alone(not first, some, {}))
    bl.cooccurrence(shared, users, 12, False)  # keeps new_items lists of the default parameters
    shared.tuned = {"new_items": {"cooccurrence": {"shrink": 3.0}}}
    got = bl.cooccurrence(shared, users, 12, True)
    pd.testing.assert_frame_equal(got, alone(True, users, {"shrink": 3.0}))
    assert not got.equals(alone(True, users, {}))  # the parameters matter here


def test_als_learns_taste_clusters_and_keeps_rebuys_only_in_all() -> None:
    """ALS recommends items of the shopper's own taste cluster; already-bought items return only in `all`."""
    rng = np.random.default_rng(2)
    rows: list[tuple[str | None, str, str, str, float]] = []
    for u in range(60):
        cluster = u % 2
        for s, item in enumerate(rng.choice(np.arange(cluster, 20, 2), size=6, replace=False)):
            rows.append((f"u{u}", f"u{u}-{s}", f"i{item}", "purchase", float(s)))
    ctx = ev.make_context(_events(rows), None, CUTOFF)
    # Two factors for two clusters: the model has room for the structure and nothing else.
    ctx.tuned = {"als": {"factors": 2, "regularization": 0.1, "alpha": 5.0, "iterations": 15}}
    users = np.array([f"u{u}" for u in range(60)], dtype=object)
    new = bl.als(ctx, users, 4, True)
    parity = new["item_id"].str[1:].astype(int) % 2 == new["user_id"].str[1:].astype(int) % 2
    assert parity.all()
    everything = bl.als(ctx, users, 4, False)
    rebuys = everything.merge(bl._bought(ctx), on=["user_id", "item_id"])
    assert len(rebuys) > 0
    assert new.merge(bl._bought(ctx), on=["user_id", "item_id"]).empty


def test_tune_baselines_chooses_from_the_grids_in_the_ranker_compatible_layout(
    small_store: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tuning returns grid points per task, `als` as plain AlsParams fields, and every validation score."""
    monkeypatch.setattr(bl, "ALS_GRID", bl.ALS_GRID[:2])
    events, items = small_store
    split = ev.temporal_split(events, test_days=15, val_days=15)
    tuned = bl.tune_baselines(events, items, split)
    als_fields = {f.name for f in dataclasses.fields(AlsParams)} - {"seed"}
    assert set(tuned["als"]) == als_fields
    AlsParams(**tuned["als"])  # what the ranker does with it
    for model, grid_size in (("popularity", 4), ("cooccurrence", len(bl.COOCCURRENCE_GRID) + 2), ("als", 2)):
        scored = tuned["validation"][model]
        assert len(scored) == grid_size
        assert tuned[model] in [row["params"] for row in scored]
        assert tuned["new_items"][model] in [row["params"] for row in scored]
        best_all = max(row["all"] for row in scored)
        assert next(row for row in scored if row["params"] == tuned[model])["all"] == best_all


def test_fill_reaches_past_a_long_run_of_excluded_bestsellers() -> None:
    """A shopper who bought the 40 bestsellers still gets a full new_items list: the 41st and next ones."""
    rows: list[tuple[str | None, str, str, str, float]] = []
    for rank in range(60):  # item p{rank} has 60 - rank distinct buyers
        rows += [(f"b{n}", f"s{rank}-{n}", f"p{rank:02d}", "purchase", 90.0) for n in range(60 - rank)]
    rows += [("u", f"mine{rank}", f"p{rank:02d}", "purchase", 50.0) for rank in range(40)]
    ctx = ev.make_context(_events(rows), None, CUTOFF)
    lists = bl.popularity(ctx, _users("u", "fresh"), 5, True)
    assert _list_of(lists, "u") == [f"p{rank}" for rank in range(40, 45)]
    assert _list_of(lists, "fresh") == [f"p{rank:02d}" for rank in range(5)]


def test_sparse_scores_rank_only_their_stored_positive_values_as_written_plainly() -> None:
    """A sparse score block (co-occurrence) ranks each row's stored positive scores that are shown and
    not banned, best first, k at most; zeros, negatives, hidden columns and banned pairs never appear."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    n_rows, n_cols, k = 40, 300, 12
    dense = rng.permutation(n_rows * n_cols).reshape(n_rows, n_cols) / (n_rows * n_cols) - 0.1
    dense[rng.random((n_rows, n_cols)) < 0.9] = 0.0  # mostly no evidence; some negatives stored
    scores = sp.csr_matrix(dense)
    allowed = rng.random(n_cols) < 0.8
    banned = sp.csr_matrix((rng.random((n_rows, n_cols)) < 0.05).astype(np.float64))
    users = np.array([f"u{r}" for r in range(n_rows)], dtype=object)
    items = np.array([f"i{c}" for c in range(n_cols)], dtype=object)
    got = bl._rank_rows(users, items, lambda rows: scores[rows], k, blocked=[banned, None], allowed=allowed)
    for lists, mask in zip(got, [banned, None], strict=True):
        expected = []
        for r in range(n_rows):
            ok = [
                c
                for c in range(n_cols)
                if dense[r, c] > 0 and allowed[c] and (mask is None or not mask[r, c])
            ]
            expected += [(users[r], items[c]) for c in sorted(ok, key=lambda c: -dense[r, c])[:k]]
        assert list(zip(lists["user_id"], lists["item_id"], strict=True)) == expected
        assert len(expected) > n_rows  # the rule had something to rank
    assert not got[0].equals(got[1])  # the banned pairs were masked in the first only


def test_factor_scores_rank_every_shown_unbanned_item_as_written_plainly() -> None:
    """ALS's lists: each row's k best dot products among the shown, unbanned items, best first, negative
    scores included (a score is evidence, however low), as a dense product sorted plainly."""
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    n_rows, n_cols, factors, k = 30, 200, 8, 12
    user_factors = rng.normal(size=(n_rows, factors)).astype(np.float32)
    item_factors = rng.normal(size=(n_cols, factors)).astype(np.float32)
    allowed = rng.random(n_cols) < 0.7
    allowed[: n_cols - 15] = False  # 15 items or fewer shown: some rows have fewer than k left
    banned = sp.csr_matrix((rng.random((n_rows, n_cols)) < 0.2).astype(np.float64))
    users = np.array([f"u{r}" for r in range(n_rows)], dtype=object)
    items = np.array([f"i{c}" for c in range(n_cols)], dtype=object)
    got = bl._factor_top_k(users, items, user_factors, item_factors, k, blocked=banned, allowed=allowed)
    dense = user_factors @ item_factors.T
    expected = []
    for r in range(n_rows):
        ok = [c for c in range(n_cols) if allowed[c] and not banned[r, c]]
        expected += [(users[r], items[c]) for c in sorted(ok, key=lambda c: -dense[r, c])[:k]]
    assert list(zip(got["user_id"], got["item_id"], strict=True)) == expected
    assert (dense[allowed[None, :].repeat(n_rows, 0)] < 0).any()  # negative scores were there to rank
    assert any(sum(1 for u in got["user_id"] if u == user) < k for user in users)  # short rows too


def test_tuning_two_grid_points_at_once_chooses_and_scores_as_one_at_a_time(
    small_store: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grid points scored side by side (`TUNING_THREADS`) share the context's cache and keep their own
    parameters: every validation score and every choice equals that of a tuning one point at a time."""
    monkeypatch.setattr(bl, "ALS_GRID", bl.ALS_GRID[:3])
    events, items = small_store
    split = ev.temporal_split(events, test_days=15, val_days=15)
    monkeypatch.setattr(bl, "TUNING_THREADS", 1)
    one_at_a_time = bl.tune_baselines(events, items, split)
    monkeypatch.setattr(bl, "TUNING_THREADS", 2)
    lines: list[str] = []
    side_by_side = bl.tune_baselines(events, items, split, progress=lines.append)
    assert side_by_side == one_at_a_time
    # One line per grid point, in grid order, with its scores.
    expected = [
        (f"validation {model} ", f"all {row['all']:.4f}, new_items {row['new_items']:.4f}")
        for model in ("popularity", "cooccurrence", "als")
        for row in one_at_a_time["validation"][model]
    ]
    assert len(lines) == len(expected)
    assert all(
        line.startswith(start) and scores in line
        for line, (start, scores) in zip(lines, expected, strict=True)
    )


def test_a_cached_matrix_is_built_once_when_two_threads_ask_for_it_at_once() -> None:
    """The second of two threads asking for the same key waits for the first one's build."""
    ctx = ev.make_context(_events(_background()), None, CUTOFF)
    builds: list[int] = []
    first_started = threading.Event()

    def build() -> int:
        first_started.set()
        time.sleep(0.2)
        builds.append(1)
        return len(builds)

    def ask() -> int:
        value: int = bl._cached(ctx, "test:matrix", build)
        return value

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(ask)
        assert first_started.wait(timeout=30)
        second = pool.submit(ask)
        assert (first.result(), second.result()) == (1, 1)
    assert builds == [1]

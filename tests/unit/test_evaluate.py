"""The offline evaluation harness: split, targets, metrics on hand-computed examples, deciles, report."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from jobs.evaluation import protocol as ev
from jobs.evaluation import sessions
from jobs.evaluation.report import write_report
from jobs.ranking import metrics

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _events(rows: list[tuple[str | None, str, str, str, float]]) -> pd.DataFrame:
    """Canonical events from (user_id, session_id, item_id, event_type, day offset from T0)."""
    frame = pd.DataFrame(rows, columns=["user_id", "session_id", "item_id", "event_type", "day"])
    frame["ts"] = T0 + pd.to_timedelta(frame.pop("day"), unit="D")
    frame["quantity"] = 1
    frame["price"] = 1.0
    for name in ("country", "device", "referrer"):
        frame[name] = None
    return frame


def _lists(rows: dict[str, list[str]]) -> pd.DataFrame:
    out = [(u, item, r + 1) for u, items in rows.items() for r, item in enumerate(items)]
    return pd.DataFrame(out, columns=["user_id", "item_id", "rank"])


def _targets(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame([(u, i) for u, items in rows.items() for i in items], columns=["user_id", "item_id"])


# -- metrics -------------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values() -> None:
    """NDCG@10, Recall@10 and MAP@12 equal their textbook values for hits at ranks 2 and 4 of 3 targets."""
    lists = _lists({"u1": ["a", "b", "c", "d", "e"], "u2": ["a", "b"]})
    targets = _targets({"u1": ["b", "d", "z"], "u2": ["q"]})
    m = metrics.per_user_metrics(lists, targets, np.array(["u1", "u2"], dtype=object))

    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert m.loc["u1", "ndcg@10"] == pytest.approx(dcg / idcg)
    assert m.loc["u1", "recall@10"] == pytest.approx(2 / 3)
    assert m.loc["u1", "map@12"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert m.loc["u2", ["ndcg@10", "recall@10", "map@12"]].tolist() == [0.0, 0.0, 0.0]


def test_ideal_dcg_and_map_denominators_are_capped_at_the_cutoffs() -> None:
    """A perfect top-10 is NDCG 1 even with 15 targets, and a perfect top-12 is AP 1 even with 20 targets."""
    items = [f"i{n}" for n in range(20)]
    lists = _lists({"u": items[:12]})
    m15 = metrics.per_user_metrics(lists, _targets({"u": items[:15]}), np.array(["u"], dtype=object))
    m20 = metrics.per_user_metrics(lists, _targets({"u": items}), np.array(["u"], dtype=object))
    assert m15.loc["u", "ndcg@10"] == pytest.approx(1.0)
    assert m15.loc["u", "recall@10"] == pytest.approx(10 / 15)
    assert m20.loc["u", "map@12"] == pytest.approx(1.0)


def test_hits_beyond_the_cutoffs_do_not_count() -> None:
    """A hit at rank 11 adds nothing to NDCG@10 or Recall@10 but counts for MAP@12; rank 13 counts nowhere."""
    items = [f"i{n}" for n in range(13)]
    lists = _lists({"u": items})
    m = metrics.per_user_metrics(lists, _targets({"u": ["i10", "i12"]}), np.array(["u"], dtype=object))
    assert m.loc["u", "ndcg@10"] == 0.0
    assert m.loc["u", "recall@10"] == 0.0
    assert m.loc["u", "map@12"] == pytest.approx((1 / 11) / 2)


def test_coverage_counts_distinct_top10_items_over_the_catalog() -> None:
    """coverage@10 is the number of distinct items in all top-10 lists divided by the catalog size."""
    lists = _lists({"u1": ["a", "b"] + [f"x{n}" for n in range(10)], "u2": ["a", "c"]})
    summary, _ = metrics.evaluate_lists(
        lists,
        _targets({"u1": ["a"], "u2": ["a"]}),
        np.array(["u1", "u2"], dtype=object),
        np.array(["a", "b", "c", "d"] + [f"x{n}" for n in range(16)], dtype=object),
    )
    # Top-10 of u1 is a, b, x0..x7 (x8, x9 are ranks 11-12); u2 adds c: 11 distinct items of 20.
    assert summary["coverage@10"] == pytest.approx(11 / 20)
    assert summary["users"] == 2
    assert summary["ndcg@10"] == pytest.approx(1.0)


def test_clean_lists_renumbers_drops_repeats_and_strangers() -> None:
    """Lists keep only requested shoppers, the first occurrence of each item and ranks 1..k in model order."""
    recs = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "stranger"],
            "item_id": ["a", "b", "a", "c", "a"],
            "rank": [5, 7, 9, 11, 1],
        }
    )
    out = ev.clean_lists(recs, np.array(["u"], dtype=object), k=2)
    assert out[["user_id", "item_id", "rank"]].values.tolist() == [["u", "a", 1], ["u", "b", 2]]
    with pytest.raises(ev.EvaluationError, match="rank"):
        ev.clean_lists(recs.drop(columns="rank"), np.array(["u"], dtype=object), k=2, name="bad")


# -- split and targets ---------------------------------------------------------------------------------


def test_split_boundaries() -> None:
    """test_end is just after the last event, the test and validation windows are back to back before it."""
    events = _events([("u", "s1", "a", "view", 0.0), ("u", "s2", "a", "purchase", 100.25)])
    split = ev.temporal_split(events, test_days=30, val_days=20)
    last = events["ts"].max()
    assert split.test_end == last.floor("s") + pd.Timedelta(seconds=1) and split.test_end > last
    assert split.train_end == split.test_start == split.test_end - pd.Timedelta(days=30)
    assert split.val_start == split.test_start - pd.Timedelta(days=20)
    assert set(split.to_json()) == {"train_end", "test_start", "test_end", "val_start"}
    with pytest.raises(ev.EvaluationError, match="nothing would be left to train on"):
        ev.temporal_split(events, test_days=60, val_days=60)


def test_targets_keep_known_warm_buyers_and_new_items_drop_rebuys() -> None:
    """Targets are test purchases of shoppers seen before the cutoff; new_items drops what they bought
    before."""
    events = _events(
        [
            ("u1", "s1", "a", "purchase", 1),
            ("u1", "s2", "b", "view", 2),
            ("u2", "s3", "a", "view", 3),
            ("u3", "s4", "a", "purchase", 4),
            ("u1", "t1", "a", "purchase", 11),  # a re-buy: `all` only
            ("u1", "t1", "b", "purchase", 11),  # new for u1
            ("u2", "t2", "a", "purchase", 12),  # u2 only viewed a before: new
            ("u3", "t3", "a", "purchase", 12),  # u3's only target is a re-buy: not in new_items
            ("cold", "t4", "a", "purchase", 12),  # no history: cold, left out
            (None, "t5", "a", "purchase", 12),  # anonymous: left out
        ]
    )
    targets = ev.build_targets(
        ev.normalise_events(events), T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=20)
    )
    pairs = {task: sorted(map(tuple, targets[task].values.tolist())) for task in ("all", "new_items")}
    assert pairs["all"] == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u3", "a")]
    assert pairs["new_items"] == [("u1", "b"), ("u2", "a")]
    assert targets["stats"]["cold_buyers_excluded"] == 1
    assert targets["stats"]["anonymous_purchases_excluded"] == 1


# -- deciles -------------------------------------------------------------------------------------------


def test_deciles_partition_users_into_ten_ordered_groups() -> None:
    """Every shopper lands in exactly one of ten near-equal deciles, and activity never decreases with
    decile."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(95):
        for s in range(int(rng.integers(1, 6)) if u % 3 else 1):  # many ties at one session
            rows.append((f"u{u}", f"s{u}-{s}", f"i{s}", "purchase", float(s)))
    history = ev.normalise_events(_events(rows))
    users = np.array([f"u{u}" for u in range(95)], dtype=object)
    table, measure = ev.activity_deciles(history, users, measure="purchase_sessions")
    assert measure == "purchase_sessions"
    assert sorted(table.index) == sorted(users)
    sizes = table["decile"].value_counts()
    assert sorted(sizes.index) == list(range(1, 11))
    assert sizes.max() - sizes.min() <= 1
    bounds = table.groupby("decile")["activity"].agg(["min", "max"])
    assert (bounds["max"].to_numpy()[:-1] <= bounds["min"].to_numpy()[1:]).all()


def test_deciles_fall_back_to_events_when_purchases_are_few() -> None:
    """With fewer than two purchase sessions for the median shopper, deciles are cut by event counts."""
    rows = [(f"u{u}", f"s{u}-{e}", "a", "view", float(e)) for u in range(20) for e in range(u + 1)]
    history = ev.normalise_events(_events(rows))
    table, measure = ev.activity_deciles(history, np.array([f"u{u}" for u in range(20)], dtype=object))
    assert measure == "events"
    assert table.loc["u0", "decile"] == 1 and table.loc["u19", "decile"] == 10


# -- the whole run -------------------------------------------------------------------------------------


def _store() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forty days of purchases by 30 shoppers over 12 items, plus items (one listed only late)."""
    rng = np.random.default_rng(5)
    rows = []
    for day in range(40):
        for u in rng.choice(30, size=6, replace=False):
            for item in rng.choice(12, size=2, replace=False):
                rows.append((f"u{u}", f"s{day}-{u}", f"i{item}", "purchase", day + 0.5))
        rows.append((None, f"anon{day}", "i0", "view", day + 0.25))
    events = _events(rows)
    items = pd.DataFrame(
        {
            "item_id": [f"i{n}" for n in range(13)],
            "in_stock": True,
            "first_seen": [T0] * 12 + [T0 + pd.Timedelta(days=39)],
        }
    )
    return events, items


def test_no_model_sees_the_test_period() -> None:
    """Recommenders and the tuner only ever get events (and items) strictly before their cutoff."""
    events, items = _store()
    seen: list[pd.Timestamp] = []
    tuner_saw: list[pd.Timestamp] = []

    def spy(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        assert ctx.history["ts"].max() < ctx.cutoff
        assert ctx.items is not None and (ctx.items["first_seen"] < ctx.cutoff).all()
        seen.append(ctx.cutoff)
        return pd.DataFrame({"user_id": users, "item_id": "i1", "rank": 1})

    def tune(before: pd.DataFrame, _items: pd.DataFrame | None, split: ev.Split) -> dict[str, object]:
        tuner_saw.append(before["ts"].max())
        assert before["ts"].max() < split.test_start
        return {"spy": {"x": 1}, "validation": {"spy": []}}

    report = ev.run_evaluation(events, items, {"spy": spy}, dataset="t", test_days=10, val_days=10, tune=tune)
    test_start = pd.Timestamp(report["split"]["test_start"])
    assert seen == [test_start, test_start]  # once per task
    assert tuner_saw and tuner_saw[0] < test_start
    assert report["tuned"] == {"spy": {"x": 1}} and report["validation"] == {"spy": []}
    assert events["ts"].max() >= test_start  # the test period is not empty: the guard above meant something


def test_every_model_is_told_up_front_which_shoppers_both_tasks_will_ask_for() -> None:
    """`ctx.asked` is set before the first call to the shoppers of both tasks, so the ranker scores them
    once, and no other shopper, for both."""
    events, items = _store()
    calls: list[tuple[set[str], set[str]]] = []

    def spy(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        assert ctx.asked is not None
        calls.append((set(users), set(ctx.asked)))
        return pd.DataFrame({"user_id": users, "item_id": "i1", "rank": 1})

    split = ev.temporal_split(events, test_days=10, val_days=10)
    targets = ev.build_targets(events, split.test_start, split.test_end)
    ctx = ev.make_context(events.loc[events["ts"] < split.test_start], items, split.test_start)
    ev.score_models(ctx, targets, {"spy": spy})
    everyone = set(targets["all"]["user_id"]) | set(targets["new_items"]["user_id"])
    assert [users for users, _ in calls] == [set(targets[t]["user_id"]) for t in ("all", "new_items")]
    assert all(asked == everyone for _, asked in calls)


def test_the_last_model_is_scored_beside_the_others_and_its_figures_and_errors_come_back() -> None:
    """`score_models` runs the last model (the ranker) on a thread of its own while the others run one
    after the other: the first model below waits for the last one to have started, which would never
    happen if they ran in turn. The figures come back in the models' order, equal to those of each model
    scored alone, and an error of the model beside the others is raised to the caller."""
    events, items = _store()
    split = ev.temporal_split(events, test_days=10, val_days=10)
    targets = ev.build_targets(events, split.test_start, split.test_end)
    started = threading.Event()

    def items_of(exclude_bought: bool) -> list[str]:
        return ["i3", "i1", "i2"] if exclude_bought else ["i1", "i2", "i4"]

    def first(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        assert started.wait(timeout=60), "the last model did not start while the first one ran"
        return pd.DataFrame({"user_id": users, "item_id": items_of(exclude_bought)[0], "rank": 1})

    def last(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        started.set()
        lists = pd.DataFrame(
            {"user_id": np.repeat(users, 2), "item_id": items_of(exclude_bought)[1:] * len(users)}
        )
        lists["rank"] = lists.groupby("user_id").cumcount() + 1
        return lists

    def context() -> ev.EvalContext:
        return ev.make_context(events.loc[events["ts"] < split.test_start], items, split.test_start)

    together = ev.score_models(context(), targets, {"first": first, "last": last})
    for task in ("all", "new_items"):
        assert list(together[task]) == ["first", "last"]
        for name, model in (("first", first), ("last", last)):
            alone = ev.score_models(context(), targets, {name: model})[task][name]
            assert together[task][name][0] == alone[0]
            pd.testing.assert_frame_equal(together[task][name][1], alone[1])
    assert together["all"]["last"][0]["ndcg@10"] != together["all"]["first"][0]["ndcg@10"]

    def broken(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        raise RuntimeError("the ranker failed")

    with pytest.raises(RuntimeError, match="the ranker failed"):
        ev.score_models(context(), targets, {"first": last, "broken": broken})


def test_report_has_the_contract_shape_and_an_oracle_scores_one() -> None:
    """The report has the contract keys for every model and task, and lists equal to the targets score 1."""
    events, items = _store()
    split = ev.temporal_split(events, test_days=10, val_days=10)
    truth = ev.build_targets(ev.normalise_events(events), split.test_start, split.test_end)

    def oracle(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        pairs = truth["new_items" if exclude_bought else "all"]
        pairs = pairs.loc[pairs["user_id"].isin(users)]
        return pairs.assign(rank=pairs.groupby("user_id").cumcount() + 1)

    def nothing(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        return pd.DataFrame(columns=["user_id", "item_id", "rank"])

    report = ev.run_evaluation(
        events, items, {"oracle": oracle, "nothing": nothing}, dataset="t", test_days=10, val_days=10
    )
    assert {"dataset", "split", "tasks"} <= set(report)
    assert set(report["split"]) >= {"train_end", "test_start", "test_end"}
    for task in ("all", "new_items"):
        for model in ("oracle", "nothing"):
            assert set(report["tasks"][task][model]) == {
                "ndcg@10",
                "recall@10",
                "map@12",
                "coverage@10",
                "users",
            }
            assert len(report["deciles"][task][model]) == 10
        assert report["tasks"][task]["oracle"]["map@12"] == pytest.approx(1.0)
        assert report["tasks"][task]["nothing"]["ndcg@10"] == 0.0
        assert (
            sum(row["users"] for row in report["deciles"][task]["oracle"])
            == report["tasks"][task]["oracle"]["users"]
        )
    # The catalog is the 12 items listed before the cutoff (i12 arrives on day 39).
    assert report["data"]["catalog_items"] == 12


def test_write_report_writes_json_markdown_and_png(tmp_path: Path) -> None:
    """write_report leaves the JSON, a Markdown summary naming the best model, and a PNG plot side by side."""
    deciles = [
        {"decile": d, "users": 3, "ndcg@10": 0.1 * d, "activity_min": d, "activity_max": d}
        for d in range(1, 11)
    ]
    metrics = {"ndcg@10": 0.2, "recall@10": 0.1, "map@12": 0.1, "coverage@10": 0.5, "users": 30}
    report = {
        "dataset": "demo",
        "split": {"train_end": "a", "test_start": "a", "test_end": "b", "val_start": "c"},
        "tasks": {
            task: {"als": metrics, "ranker": {**metrics, "ndcg@10": 0.25}} for task in ("all", "new_items")
        },
        "deciles": {task: {"als": deciles, "ranker": deciles} for task in ("all", "new_items")},
        "deciles_by": "events",
        "timings_s": {"total": 1.0},
        "tuned": {"als": {"factors": 8}},
    }
    paths = write_report(report, tmp_path / "out" / "r.json")
    assert orjson.loads(paths["json"].read_bytes()) == report
    md = paths["md"].read_text()
    assert "Best model: **ranker**" in md and "+25.0%" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["md"].parent == paths["png"].parent == paths["json"].parent


def test_an_empty_test_period_is_an_error_before_any_tuning() -> None:
    """With no purchase of a known shopper in the test period the run stops with a reason, before tuning."""
    rows = [(f"u{n % 5}", f"s{n}", "a", "purchase", float(n)) for n in range(60)]
    rows.append(("u1", "late", "a", "view", 75.0))  # the test period holds only a view

    def tune(*_args: object) -> dict[str, object]:
        raise AssertionError("tuning must not start")

    with pytest.raises(ev.EvaluationError, match="nothing to score"):
        ev.run_evaluation(_events(rows), None, {}, dataset="t", test_days=10, val_days=10, tune=tune)


# -- the command ---------------------------------------------------------------------------------------


def _store_files(tmp_path: Path) -> tuple[Path, Path]:
    from jobs.ingest.synthetic import StoreSpec, generate_store

    store = generate_store(StoreSpec(users=300, items=100, days=50, seed=4))
    events, items = tmp_path / "events.parquet", tmp_path / "items.csv"
    store.events.to_parquet(events)
    store.items.to_csv(items, index=False)
    return events, items


def test_cli_evaluate_writes_the_report_with_the_ranker_plugged_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`carousel evaluate --dataset events` scores the four baselines and the plugged-in ranker, then the
    visitor tasks on the plugged-in published lists, and writes all three files."""
    import jobs.evaluation.published
    import jobs.evaluation.ranker
    from carousel import cli
    from jobs.evaluation.baselines import popularity

    calls: list[bool] = []

    def fake_ranker(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        calls.append(exclude_bought)
        return popularity(ctx, users, k, exclude_bought)

    def fake_published(ctx: ev.EvalContext) -> sessions.PublishedLists:
        # No Spark in the unit tier: the history's most viewed items stand for every list.
        top = ctx.history["item_id"].value_counts().index[:30]
        return sessions.PublishedLists(segments={"global": _served(*top)}, similar={})

    monkeypatch.setattr(jobs.evaluation.ranker, "evaluation_ranker", fake_ranker)
    monkeypatch.setattr(jobs.evaluation.ranker, "start_spark", lambda: None)
    monkeypatch.setattr(jobs.evaluation.published, "published_lists", fake_published)
    events, items = _store_files(tmp_path)
    out = tmp_path / "report" / "r.json"
    args = [
        "evaluate",
        "--dataset",
        "events",
        "--input",
        str(events),
        "--items",
        str(items),
        "--out",
        str(out),
    ]
    assert cli.main([*args, "--test-days", "10", "--val-days", "10"]) == 0
    report = orjson.loads(out.read_bytes())
    for task in ("all", "new_items"):
        assert list(report["tasks"][task]) == ["popularity", "repurchase", "cooccurrence", "als", "ranker"]
    assert calls == [False, True]
    assert list(report["tasks"]["sessions"]) == ["bestsellers", "segment", "session", "served"]
    assert list(report["tasks"]["new_shoppers"]) == ["bestsellers", "segment"]
    assert report["tasks"]["sessions"]["served"]["users"] == report["targets"]["sessions"]["sessions"] > 0
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    assert report["timings_s"]["load"] >= 0 and report["tuned"]["als"]


# -- visitor tasks: sessions and new shoppers ----------------------------------------------------------


def _served(*items: str, code: str = "bestseller") -> list[dict[str, object]]:
    """A published list's items in the served shape."""
    return [{"item_id": i, "score": 1.0, "reason": {"code": code, "text": code}} for i in items]


def _day(offset: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=offset)


def test_held_out_sessions_give_the_first_half_of_each_anonymous_session() -> None:
    """Anonymous sessions starting in the window with at least 4 items are cut after their first n // 2
    items in time order (an invoice's simultaneous lines in the data's order); the other items are
    the targets, and short, earlier, signed-in and later sessions are left out."""
    rows = [
        (None, "s1", "a", "view", 10.1),
        (None, "s1", "b", "view", 10.2),
        (None, "s1", "a", "view", 10.25),
        (None, "s1", "b", "add_to_cart", 10.3),
        (None, "s1", "c", "view", 10.4),  # the third item: the second half starts here
        (None, "s1", "a", "view", 10.45),
        (None, "s1", "d", "view", 10.5),
        (None, "s1", "e", "view", 10.6),
        (None, "s1", "c", "purchase", 10.7),
        (None, "s2", "x", "view", 11.0),  # three items only
        (None, "s2", "y", "view", 11.1),
        (None, "s2", "z", "view", 11.2),
        (None, "s3", "a", "view", 9.9),  # started before the window
        *[(None, "s3", item, "view", 10.1 + n / 10) for n, item in enumerate("bcde")],
        *[("u1", "s4", item, "view", 10.1 + n / 10) for n, item in enumerate("abcd")],  # signed in
        *[(None, "s5", item, "purchase", 12.0) for item in "zyxw"],  # one invoice: file order
        *[(None, "s6", item, "view", 20.5 + n / 10) for n, item in enumerate("abcd")],  # after the window
    ]
    held = sessions.held_out_sessions(ev.normalise_events(_events(rows)), _day(10), _day(20))

    given = held.given.groupby("session_id")["item_id"].apply(list).to_dict()
    assert given == {"s1": ["a", "b", "a", "b"], "s5": ["z", "y"]}
    assert held.given.loc[held.given["session_id"] == "s1", "event_type"].tolist()[-1] == "add_to_cart"
    assert sorted(map(tuple, held.targets.values.tolist())) == [
        ("s1", "c"),
        ("s1", "d"),
        ("s1", "e"),
        ("s5", "w"),
        ("s5", "x"),
    ]
    assert held.stats == {"anonymous_sessions": 3, "sessions": 2, "pairs": 5, "given_items_median": 2.0}


def test_the_session_state_is_the_apis_after_the_first_half() -> None:
    """A removed cart item is no anchor, a purchase is, and the department with the most interest
    (view 1, cart 3, purchase 5 per event) picks the segment list: one book bought outweighs three toy
    events."""
    rows = [
        (None, "s", "p", "view", 10.1),  # books
        (None, "s", "q", "view", 10.2),  # toys
        (None, "s", "r", "view", 10.3),  # toys
        (None, "s", "s", "add_to_cart", 10.4),  # toys, then removed
        (None, "s", "s", "remove_from_cart", 10.45),
        (None, "s", "p", "purchase", 10.5),
        *[(None, "s", item, "view", 10.6 + n / 100) for n, item in enumerate(["t1", "t2", "t3", "t4"])],
    ]
    held = sessions.held_out_sessions(ev.normalise_events(_events(rows)), _day(10), _day(20))
    published = sessions.PublishedLists(
        segments={
            "global": _served("g1", "g2"),
            "category:books": _served("t3", "b1", code="popular_in_category"),
            "category:toys": _served("t4", code="popular_in_category"),
        },
        similar={"s": _served("t1"), "p": _served("t2")},
        departments={"p": "books", "q": "toys", "r": "toys", "s": "toys"},
    )
    lists, served_from = sessions.session_lists(held, published, k=12)

    assert served_from == {"category": 1}
    assert lists["segment"]["item_id"].tolist() == ["t3", "b1"]
    served = lists["served"]["item_id"].tolist()
    assert served[0] == "t2" and "t1" not in served  # p's similar item leads; the removed s pulls nothing
    assert not set(served) & {"p", "q", "r", "s"}


def test_the_session_state_keeps_only_what_the_api_keeps() -> None:
    """With room for 2 purchases, a 6-line invoice (one time) keeps the 2 greatest item ids, as the
    real-time state's sorted set does: only their similar items are served."""
    rows = [(None, "s", item, "purchase", 10.5) for item in ["a", "b", "c", "d", "e", "f"]]
    rows += [(None, "s", item, "purchase", 10.6) for item in ["x1", "x2", "x3", "x4", "x5", "x6"]]
    held = sessions.held_out_sessions(ev.normalise_events(_events(rows)), _day(10), _day(20))
    similar = {item: _served(f"{item}-like") for item in "abcdef"}
    published = sessions.PublishedLists(segments={"global": _served("g1")}, similar=similar)

    bounded, _ = sessions.session_lists(held, published, k=12, bounds=sessions.StateBounds(purchases_max=2))
    unbounded, _ = sessions.session_lists(held, published, k=12)

    assert sorted(bounded["served"]["item_id"]) == ["e-like", "f-like", "g1"]
    assert sorted(unbounded["served"]["item_id"]) == sorted([f"{item}-like" for item in "abcdef"] + ["g1"])


def test_a_store_without_guest_sessions_scores_no_session() -> None:
    """A purchases-only store (the grocery preset, a chain's loyalty-card data) has no anonymous
    session: the task scores nobody instead of failing."""
    rows = [("u1", "s1", item, "purchase", 10.1) for item in "abcd"]
    held = sessions.held_out_sessions(ev.normalise_events(_events(rows)), _day(10), _day(20))
    published = sessions.PublishedLists(segments={"global": _served("g1")}, similar={})
    lists, served_from = sessions.session_lists(held, published, k=12)

    assert held.given.empty and served_from == {}
    assert all(frame.empty for frame in lists.values())


def _visitor_report(
    events: pd.DataFrame, items: pd.DataFrame, published: sessions.PublishedFn
) -> dict[str, Any]:
    """The evaluation with no model, only the visitor tasks on `published`'s lists."""
    return ev.run_evaluation(
        events,
        items,
        {},
        dataset="t",
        test_days=10,
        val_days=10,
        extra_tasks=sessions.visitor_tasks(published),
    )


def test_sessions_and_new_shoppers_score_what_the_route_serves() -> None:
    """Through the whole run: a session whose first half's similar items are two of its second half
    scores NDCG@10 (1 + 1/log2 4) / (1 + 1/log2 3) served (hits at ranks 1 and 3), the bestsellers miss;
    a new shopper from Germany who buys the second item of the German list scores 1/log2 3 there and
    0 on bestsellers; the lists are built from the history before the cutoff only."""
    events, items = _store()
    visit = _events(
        [
            (None, "visit", "a", "view", 35.0),
            (None, "visit", "b", "view", 35.01),
            (None, "visit", "c", "view", 35.02),
            (None, "visit", "d", "view", 35.03),
            ("newbie", "n1", "de0", "view", 36.0),
            ("newbie", "n1", "de1", "purchase", 36.1),
        ]
    )
    visit.loc[visit["user_id"] == "newbie", "country"] = "Germany"
    events = pd.concat([events, visit], ignore_index=True)
    cutoffs: list[pd.Timestamp] = []

    def published(ctx: ev.EvalContext) -> sessions.PublishedLists:
        cutoffs.append(ctx.cutoff)
        assert ctx.history["ts"].max() < ctx.cutoff and "visit" not in set(ctx.history["session_id"])
        return sessions.PublishedLists(
            segments={
                "global": _served(*[f"g{n}" for n in range(20)]),
                "category:toys": _served("t0", "d", "t1"),
                "country:germany": _served("de0", "de1", "de2"),
            },
            similar={
                "a": [{"item_id": "x", "score": 0.9}, {"item_id": "c", "score": 0.45}],
                "b": [{"item_id": "d", "score": 0.2}],
            },
            departments={"a": "toys", "b": "toys"},
        )

    # x and c go with a (scores 1 and 1/2 of a's best), d with b, the newest anchor: d, x, c lead.
    report = _visitor_report(events, items, published)
    assert cutoffs == [pd.Timestamp(report["split"]["test_start"])]
    figures = report["tasks"]["sessions"]
    assert list(figures) == ["bestsellers", "segment", "session", "served"]
    assert figures["served"]["ndcg@10"] == pytest.approx((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))
    assert figures["session"]["ndcg@10"] == figures["served"]["ndcg@10"]
    assert figures["segment"]["ndcg@10"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert figures["bestsellers"]["ndcg@10"] == 0.0
    assert figures["served"]["users"] == 1
    assert report["targets"]["sessions"]["served_from"] == {"category": 1}
    newcomers = report["tasks"]["new_shoppers"]
    assert newcomers["segment"]["ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert newcomers["bestsellers"]["ndcg@10"] == 0.0
    assert report["targets"]["new_shoppers"] == {
        "first_seen": 1,
        "users": 1,
        "pairs": 1,
        "served_from": {"country": 1},
    }
    assert "sessions" not in report["deciles"]


def test_visitor_lists_are_not_built_when_no_visitor_is_scored() -> None:
    """A store whose test window has no guest session and no newcomer: the published lists (a Spark
    job over the history) are not built, and both tasks report zero shoppers in the usual shape."""
    events, items = _store()

    def published(ctx: ev.EvalContext) -> sessions.PublishedLists:
        raise AssertionError("the lists were built for nobody")

    report = _visitor_report(events, items, published)
    assert list(report["tasks"]["sessions"]) == ["bestsellers", "segment", "session", "served"]
    assert all(figures["users"] == 0 for figures in report["tasks"]["sessions"].values())
    assert list(report["tasks"]["new_shoppers"]) == ["bestsellers", "segment"]
    assert all(figures["users"] == 0 for figures in report["tasks"]["new_shoppers"].values())
    assert report["timings_s"]["published_lists"] == 0.0


def test_new_shoppers_are_those_first_seen_in_the_window_with_their_first_context() -> None:
    """A shopper seen before the window is not new; a new one who does not buy counts as first seen only;
    the context is the first event's, even when later events come from elsewhere."""
    rows = [
        ("old", "o1", "a", "view", 5.0),
        ("old", "o2", "a", "purchase", 12.0),
        ("looker", "l1", "a", "view", 12.0),
        ("buyer", "b1", "a", "view", 13.0),
        ("buyer", "b2", "b", "purchase", 14.0),
        ("buyer", "b2", "c", "purchase", 14.0),
        ("buyer", "b3", "b", "purchase", 15.0),
        ("buyer", "b4", "d", "purchase", 25.0),  # after the window
    ]
    events = _events(rows)
    events["country"] = ["UK", "UK", "UK", "France", "Spain", "Spain", "Spain", "Spain"]
    new = sessions.new_shoppers(ev.normalise_events(events), _day(10), _day(20))
    assert sorted(map(tuple, new.targets.values.tolist())) == [("buyer", "b"), ("buyer", "c")]
    assert new.context.loc["buyer", "country"] == "France"
    assert new.stats == {"first_seen": 2, "users": 1, "pairs": 2}


def test_write_report_shows_the_visitor_tasks_against_bestsellers(tmp_path: Path) -> None:
    """Tasks without deciles get their table and their ratio to bestsellers, and the plot still draws."""
    metrics = {"ndcg@10": 0.1, "recall@10": 0.1, "map@12": 0.1, "coverage@10": 0.5, "users": 30}
    deciles = [
        {"decile": d, "users": 3, "ndcg@10": 0.1, "activity_min": d, "activity_max": d} for d in range(1, 11)
    ]
    report = {
        "dataset": "demo",
        "split": {"train_end": "a", "test_start": "a", "test_end": "b", "val_start": "c"},
        "tasks": {
            "all": {"als": metrics},
            "sessions": {"bestsellers": metrics, "served": {**metrics, "ndcg@10": 0.25}},
        },
        "deciles": {"all": {"als": deciles}},
        "targets": {
            "all": {"users": 30, "pairs": 40},
            "new_items": {"users": 20, "pairs": 25},
            "cold_buyers_excluded": 3,
            "anonymous_purchases_excluded": 4,
            "sessions": {
                "anonymous_sessions": 50,
                "sessions": 30,
                "pairs": 90,
                "given_items_median": 2.0,
                "served_from": {"category": 20, "global": 10},
            },
        },
    }
    paths = write_report(report, tmp_path / "r.json")
    md = paths["md"].read_text()
    assert "## Task `sessions`" in md and "served **x2.50**" in md
    assert "category 20, global 10" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- rolling origin: --folds ---------------------------------------------------------------------------


def test_rolling_splits_are_back_to_back_windows_ending_with_the_single_split() -> None:
    """Three folds are 10-day test windows, each starting where the one before ends, the last one equal
    to temporal_split's, each with its 7-day validation window right before its test window."""
    events = _events([("u", "s1", "a", "view", 0.0), ("u", "s2", "a", "purchase", 60.25)])
    splits = ev.rolling_splits(events, 3, test_days=10, val_days=7)
    end = T0 + pd.Timedelta(days=60.25) + pd.Timedelta(seconds=1)
    expected_starts = [end - pd.Timedelta(days=10 * n) for n in (3, 2, 1)]
    assert [s.test_start for s in splits] == expected_starts
    assert [s.test_end for s in splits] == [*expected_starts[1:], end]
    for split in splits:
        assert split.train_end == split.test_start
        assert split.test_end - split.test_start == pd.Timedelta(days=10)
        assert split.test_start - split.val_start == pd.Timedelta(days=7)
    assert splits[-1] == ev.temporal_split(events, test_days=10, val_days=7)
    assert ev.rolling_splits(events, 1, test_days=10, val_days=7) == [splits[-1]]


@pytest.mark.parametrize("folds", [0, -2, 1.5, "2", True, None])
def test_rolling_splits_refuse_a_fold_count_that_is_not_a_positive_integer(folds: object) -> None:
    """Anything but an integer >= 1 is refused with a message naming folds and the value given."""
    events = _events([("u", "s1", "a", "view", 0.0), ("u", "s2", "a", "purchase", 60.0)])
    with pytest.raises(ev.EvaluationError, match=r"folds must be an integer >= 1, got"):
        ev.rolling_splits(events, folds, test_days=10, val_days=7)  # type: ignore[arg-type]


def test_rolling_splits_refuse_data_too_short_for_the_folds_and_the_validation_window() -> None:
    """60 days hold five 10-day test windows and a 7-day validation window before them, not six."""
    events = _events([("u", "s1", "a", "view", 0.0), ("u", "s2", "a", "purchase", 60.0)])
    assert len(ev.rolling_splits(events, 5, test_days=10, val_days=7)) == 5
    with pytest.raises(
        ev.EvaluationError, match="6 consecutive 10-day test windows.*nothing would be left"
    ) as err:
        ev.rolling_splits(events, 6, test_days=10, val_days=7)
    assert str(err.value).endswith("at most 5 such test window(s) fit")


def _repurchase_or_first(
    ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool
) -> pd.DataFrame:
    """A deterministic model that depends on the history: the shopper's most bought items, then i0..i11."""
    from jobs.evaluation.baselines import repurchase

    return repurchase(ctx, users, k, exclude_bought)


def _popular(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    from jobs.evaluation.baselines import popularity

    return popularity(ctx, users, k, exclude_bought)


def _tune(before: pd.DataFrame, _items: pd.DataFrame | None, split: ev.Split) -> dict[str, object]:
    """A tuner whose choice depends on its window: the number of events it was handed."""
    return {"popularity": {"window_days": 7 if len(before) % 2 else 14}, "validation": {"n": len(before)}}


def test_the_last_fold_is_the_single_split_report() -> None:
    """With three folds the report's split, tasks, deciles, targets and tuning are exactly the single
    split's, and the last entry of folds repeats them; with one fold, folds holds that one report."""
    events, items = _store()
    models = {"popularity": _popular, "ranker": _repurchase_or_first}
    kwargs = {"dataset": "t", "test_days": 7, "val_days": 7, "tune": _tune}
    single = ev.run_evaluation(events, items, models, **kwargs)  # type: ignore[arg-type]
    three = ev.run_evaluation(events, items, models, folds=3, **kwargs)  # type: ignore[arg-type]
    for key in ("split", "tasks", "deciles", "deciles_by", "targets", "tuned", "validation"):
        assert three[key] == single[key], key
    assert len(three["folds"]) == 3
    assert three["folds"][-1]["split"] == single["split"] and three["folds"][-1]["tasks"] == single["tasks"]
    assert [f["split"] for f in single["folds"]] == [single["split"]]
    # The earlier folds are other windows with other figures: the comparison above meant something.
    assert three["folds"][0]["split"]["test_end"] == three["folds"][1]["split"]["test_start"]
    assert three["folds"][0]["tasks"] != three["folds"][2]["tasks"]


def test_no_fold_sees_its_own_test_window() -> None:
    """In every fold the models get only events before its test window, the tuner only events before it
    and that fold's validation window, and each fold's history runs up to its test window's start."""
    events, items = _store()
    cutoffs: list[pd.Timestamp] = []
    tuned_on: list[ev.Split] = []

    def spy(ctx: ev.EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
        assert ctx.history["ts"].max() < ctx.cutoff
        # Trained on everything before the window, the earlier folds' test windows included.
        assert ctx.history["ts"].max() > ctx.cutoff - pd.Timedelta(days=1)
        cutoffs.append(ctx.cutoff)
        return pd.DataFrame({"user_id": users, "item_id": "i1", "rank": 1})

    def tune(before: pd.DataFrame, _items: pd.DataFrame | None, split: ev.Split) -> dict[str, object]:
        assert before["ts"].max() < split.test_start
        tuned_on.append(split)
        return {}

    report = ev.run_evaluation(
        events, items, {"spy": spy}, dataset="t", test_days=7, val_days=5, folds=3, tune=tune
    )
    starts = [pd.Timestamp(f["split"]["test_start"]) for f in report["folds"]]
    assert cutoffs == [s for s in starts for _task in ev.TASKS]
    assert [s.test_start for s in tuned_on] == starts
    assert [s.val_start for s in tuned_on] == [s - pd.Timedelta(days=5) for s in starts]
    ends = [pd.Timestamp(f["split"]["test_end"]) for f in report["folds"]]
    assert ends[:-1] == starts[1:] and all(
        e - s == pd.Timedelta(days=7) for s, e in zip(starts, ends, strict=True)
    )


def test_a_fold_whose_history_reaches_its_test_window_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness checks each fold's training history itself: a context leaking one test event stops the
    run."""
    events, items = _store()
    honest = ev.make_context

    def leaky(
        events: pd.DataFrame, items: pd.DataFrame | None, cutoff: pd.Timestamp, **kw: object
    ) -> ev.EvalContext:
        return honest(events, items, cutoff + pd.Timedelta(days=1), **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ev, "make_context", leaky)
    with pytest.raises(ev.EvaluationError, match="at or after the test window's start"):
        ev.run_evaluation(events, items, {"p": _popular}, dataset="t", test_days=7, val_days=7, folds=2)


def test_ratio_to_best_other_on_known_answers() -> None:
    """A ranker at exactly 2x and 1.5x the best other model on every shopper gives those ratios with
    zero-width intervals and a mean of 1.75; the reference is the best other model, not the first."""
    from jobs.evaluation.intervals import ratio_to_best_other

    other = np.array([0.1, 0.3, 0.2, 0.4])
    fold1 = pd.DataFrame({"weak": other / 4, "best": other, "ranker": 2 * other})
    fold2 = pd.DataFrame({"weak": other[:3] / 2, "best": other[:3], "ranker": 1.5 * other[:3]})
    out = ratio_to_best_other([fold1, fold2], resamples=200)
    assert [f["ratio"] for f in out["folds"]] == [2.0, 1.5]
    assert [f["ci"] for f in out["folds"]] == [[2.0, 2.0], [1.5, 1.5]]
    assert [f["best_other"] for f in out["folds"]] == ["best", "best"]
    assert [f["users"] for f in out["folds"]] == [4, 3]
    assert out["mean_ratio"] == pytest.approx(1.75) and out["ci"] == [1.75, 1.75]


def test_ratio_interval_covers_the_estimate_and_widens_with_noise() -> None:
    """On noisy shoppers the interval brackets the point ratio, is reproducible with the seed, and is
    wider for 50 shoppers than for 5,000 drawn the same way; an all-zero reference gives no ratio."""
    from jobs.evaluation.intervals import ratio_to_best_other

    rng = np.random.default_rng(3)

    def fold(n: int) -> pd.DataFrame:
        return pd.DataFrame({"ranker": rng.binomial(1, 0.3, n), "other": rng.binomial(1, 0.2, n)}).astype(
            float
        )

    small, large = ratio_to_best_other([fold(50)]), ratio_to_best_other([fold(5000)])
    for out in (small, large):
        low, high = out["ci"]
        assert low <= out["mean_ratio"] <= high
    assert small["ci"][1] - small["ci"][0] > 2 * (large["ci"][1] - large["ci"][0])
    frame = fold(50)
    assert ratio_to_best_other([frame]) == ratio_to_best_other([frame])
    zero = pd.DataFrame({"ranker": [0.5, 0.1], "other": [0.0, 0.0]})
    assert ratio_to_best_other([zero])["mean_ratio"] is None


def test_folds_summary_and_markdown_show_every_fold_and_the_mean(tmp_path: Path) -> None:
    """folds_summary's means are the folds' figures averaged, and the Markdown lists each test window and the
    mean."""
    events, items = _store()
    models = {"popularity": _popular, "ranker": _repurchase_or_first}
    report = ev.run_evaluation(events, items, models, dataset="t", test_days=7, val_days=7, folds=3)
    summary = report["folds_summary"]["tasks"]["all"]
    per_fold = [f["tasks"]["all"]["ranker"]["ndcg@10"] for f in report["folds"]]
    assert summary["mean"]["ranker"]["ndcg@10"] == pytest.approx(np.mean(per_fold))
    ratios = summary["ranker_vs_best_other"]["folds"]
    others = [f["tasks"]["all"]["popularity"]["ndcg@10"] for f in report["folds"]]
    assert [r["ratio"] for r in ratios] == pytest.approx(
        [r / o for r, o in zip(per_fold, others, strict=True)], abs=1e-4
    )
    paths = write_report(report, tmp_path / "r.json")
    md = paths["md"].read_text()
    assert "## Folds: 3 consecutive test windows" in md
    for fold in report["folds"]:
        assert f"| {fold['split']['test_start'][:10]} – {fold['split']['test_end'][:10]} |" in md
    assert md.count("| **mean** |") == len(ev.TASKS)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_cli_refuses_a_bad_fold_count(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--folds` must be an integer >= 1; anything else stops argparse with an error naming the option."""
    from carousel import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", "--dataset", "events", "--input", "x", "--out", "y", "--folds", value])
    assert exited.value.code == 2
    assert "argument --folds: must be an integer >= 1" in capsys.readouterr().err


def test_cli_says_when_the_data_is_too_short_for_the_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fifty days cannot hold five 10-day test windows and a 10-day validation window: exit 1, saying why."""
    from carousel import cli

    events, items = _store_files(tmp_path)
    args = ["evaluate", "--dataset", "events", "--input", str(events), "--items", str(items)]
    code = cli.main(
        [*args, "--out", str(tmp_path / "r.json"), "--test-days", "10", "--val-days", "10", "--folds", "5"]
    )
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "5 consecutive 10-day test windows" in err and "nothing would be left to train on" in err


def test_lowest_decile_ratio_names_the_weakest_decile_and_skips_empty_references() -> None:
    """The ranker's weakest decile against ALS is the smallest ratio, not the smallest NDCG; a decile
    where ALS scores nothing has no ratio and is left out."""
    ranker = [{"decile": d, "ndcg@10": v} for d, v in [(1, 0.10), (2, 0.30), (3, 0.50), (4, 0.20)]]
    als = [{"decile": d, "ndcg@10": v} for d, v in [(1, 0.08), (2, 0.33), (3, 0.40), (4, 0.0)]]
    assert ev.lowest_decile_ratio(ranker, als) == {"decile": 2, "ratio": round(0.30 / 0.33, 4)}
    assert ev.lowest_decile_ratio(ranker[3:], als[3:]) == {"decile": None, "ratio": None}

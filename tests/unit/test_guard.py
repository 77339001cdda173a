"""The guard (`jobs.ranking.guard`): a baseline (or the explore model, on never-bought places) that
clearly beats the ranker on a band's label window serves that band, and only that band; small bands and
small gaps keep the ranker; the choice, and the explore model, are stored with the model."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from toy_store import toy_feature_set

from carousel.models import ModelStoreError
from configs.settings import Settings
from jobs.features.frames import FeatureSet
from jobs.ranking import guard as guard_module
from jobs.ranking.candidate_features import FEATURES
from jobs.ranking.guard import (
    POOLED,
    SCORERS,
    ScorerGuard,
    band_names,
    blend_key,
    choose_scorers,
    guarded_scores,
)
from jobs.ranking.lists import top_lists
from jobs.ranking.model import ModelParams, TrainedModel, fit_parts, save_model
from jobs.ranking.ranker import RankerParams, train_ranker
from jobs.ranking.scoring import explore_scores
from jobs.ranking.store import ModelStore
from jobs.stages.compute import resolve_mode
from serving.routes.ops import guard_table

CANDIDATES = 6


def _window(shoppers: dict[float, int], seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled candidates of buying shoppers, `shoppers[orders]` of them per past order count, and
    ranker scores. Each shopper bought one candidate: with one past order, the most popular (which the
    ranker puts last); otherwise the one the ranker puts first. ALS scores are noise."""
    rng = np.random.default_rng(seed)
    rows = []
    user = 0
    for orders, count in shoppers.items():
        for _ in range(count):
            pop = rng.permutation(CANDIDATES).astype(float) * 10 + 5
            ranker = rng.standard_normal(CANDIDATES)
            bought = int(np.argmax(pop)) if orders == 1 else int(np.argmax(ranker))
            if orders == 1:
                ranker[bought] = ranker.min() - 1.0
            for c in range(CANDIDATES):
                rows.append(
                    {
                        "user_id": f"u{user:04d}",
                        "item_id": f"i{c}",
                        "u_orders": orders,
                        "pop_30d": pop[c],
                        "pop_90d": pop[c],
                        "pop_rank": np.nan,
                        "als_score": rng.standard_normal(),
                        "ui_purchases": 0.0,
                        "ui_days_since_purchase": np.nan,
                        "label": int(c == bought),
                        "ranker": ranker[c],
                    }
                )
            user += 1
    frame = pd.DataFrame(rows)
    return frame.drop(columns="ranker"), frame["ranker"].to_numpy()


def test_a_baseline_that_clearly_wins_a_band_is_chosen_and_served_to_that_bands_shoppers_only() -> None:
    """Popularity beats the ranker on the one-order band (300 shoppers): it serves that band in both
    tasks; the ten-plus band keeps the ranker, and its shoppers' scores are untouched. Served shoppers of
    the guarded band get their most popular candidate first, their own ranker scores in popularity
    order, and popular as the reason."""
    window, ranker_scores = _window({1.0: 300, 12.0: 300})
    guard = choose_scorers(window, ranker_scores)
    one = band_names().index("1")
    assert guard.serve["all"][one] == guard.serve["new_items"][one] == "popularity"
    assert [s for b, s in enumerate(guard.serve["all"]) if b != one] == ["ranker"] * 4
    assert guard.comparison["all"]["1"]["shoppers"] == 300
    assert guard.comparison["all"]["1"]["ndcg@10"]["popularity"] == 1.0

    served, fresh_scores = _window({1.0: 20, 12.0: 20}, seed=9)
    scores, placed_by = guarded_scores(served, fresh_scores, guard)
    assert placed_by is not None
    guarded = served["u_orders"].to_numpy() == 1
    assert np.array_equal(scores[~guarded], fresh_scores[~guarded])
    assert set(placed_by[guarded]) == {SCORERS.index("popularity")} and set(placed_by[~guarded]) == {0}
    frame = served.assign(score=scores, ranker=fresh_scores)
    for _, shopper in frame[guarded].groupby("user_id"):
        by_score = shopper.sort_values("score", ascending=False)
        assert by_score["pop_30d"].tolist() == sorted(shopper["pop_30d"], reverse=True)
        np.testing.assert_allclose(by_score["score"], np.sort(shopper["ranker"])[::-1], atol=1e-6)
    featured = served.assign(
        ui_views=0.0, ui_carts=0.0, src_cooc=0.0, src_new=0.0, src_als=1.0, src_catpop=0.0
    )
    lists = top_lists(featured.assign(placed_by=placed_by), scores, 3, fill=pd.DataFrame({"item_id": []}))
    reasons = lists.set_index("user_id")["reason_code"]
    one_order = set(served.loc[guarded, "user_id"])
    assert set(reasons[reasons.index.isin(one_order)]) == {"popular"}
    assert set(reasons[~reasons.index.isin(one_order)]) == {"similar_shoppers"}

    page = guard_table(guard.to_json())
    assert "<td>1</td><td>300</td>" in page and "<td><b>1.000</b></td>" in page
    assert page.count("<td>popularity</td></tr>") == 2 and page.count("<td>ranker</td></tr>") == 8


def test_a_band_with_too_few_shoppers_or_a_small_gap_keeps_the_ranker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Popularity is far better on a band of 50 shoppers, yet the ranker keeps it (too few to trust);
    with the minimum lowered the same band flips, and a margin above the gap keeps the ranker again."""
    window, ranker_scores = _window({1.0: 50, 12.0: 300})
    guard = choose_scorers(window, ranker_scores)
    figures = guard.comparison["all"]["1"]
    assert figures["ndcg@10"]["popularity"] > 2 * figures["ndcg@10"]["ranker"]
    assert figures["serve"] == "ranker" and not guard.active
    monkeypatch.setattr(guard_module, "MIN_SHOPPERS", 40)
    assert choose_scorers(window, ranker_scores).serve["all"][band_names().index("1")] == "popularity"
    monkeypatch.setattr(guard_module, "MARGIN", 5.0)
    assert not choose_scorers(window, ranker_scores).active


def test_history_places_follow_the_all_scorer_and_new_places_the_explore_scorer() -> None:
    """With repurchase for `all` and ALS for `new_items`, a shopper's bought items keep repurchase's places
    (most bought first) and the places left are filled by never-bought items in ALS order."""
    guard = ScorerGuard(serve={"all": ("repurchase",) * 5, "new_items": ("als",) * 5})
    featured = pd.DataFrame(
        {
            "user_id": "u1",
            "item_id": ["a", "b", "c", "d", "e"],
            "u_orders": 5.0,
            "ui_purchases": [0.0, 3.0, 0.0, 1.0, 0.0],
            "ui_days_since_purchase": [np.nan, 10.0, np.nan, 2.0, np.nan],
            "als_score": [0.1, 0.0, 0.9, 0.0, 0.5],
            "pop_30d": [50.0, 1.0, 1.0, 1.0, 2.0],
            "pop_90d": 0.0,
            "pop_rank": np.nan,
        }
    )
    ranker_scores = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    scores, _ = guarded_scores(featured, ranker_scores, guard)
    # Repurchase: b (3 orders), d (1), then never-bought by popularity; those places go to c, e, a by ALS.
    assert featured["item_id"].to_numpy()[np.argsort(-scores)].tolist() == ["b", "d", "c", "e", "a"]


def test_an_explore_model_that_wins_the_never_bought_places_serves_them_and_only_them() -> None:
    """On a window where shoppers of 10+ orders buy the never-bought candidate the explore model puts
    first and the ranker last, the explore model wins the whole window and serves the `new_items` places,
    except on the 4-9 band, where the ranker puts the bought item first and clearly beats it; it is never
    compared in `all`. Serving puts the never-bought items in the explore model's order, and a guard
    that names the explore model without its scores is refused."""
    window, ranker_scores = _window({12.0: 300, 5.0: 300})
    rng = np.random.default_rng(3)
    explore_scores = rng.standard_normal(len(window))
    bought = window["label"].to_numpy() == 1
    heavy = window["u_orders"].to_numpy() == 12.0
    explore_scores[bought & heavy] = 10.0
    ranker_scores = ranker_scores.copy()
    ranker_scores[bought & heavy] = -10.0
    guard = choose_scorers(window, ranker_scores, explore_scores)
    ten = band_names().index("10+")
    assert guard.serve["new_items"][ten] == "explore"
    assert guard.comparison["new_items"][POOLED]["serve"] == "explore"
    # The 4-9 band keeps the ranker; the bands without shoppers in the window take the pooled choice.
    assert guard.serve["new_items"] == ("explore", "explore", "explore", "ranker", "explore")
    assert "explore" not in guard.serve["all"] and POOLED not in guard.comparison["all"]
    assert guard.comparison["new_items"]["10+"]["ndcg@10"]["explore"] == 1.0
    assert "explore" not in guard.comparison["all"]["10+"]["ndcg@10"]
    assert "explore" not in choose_scorers(window, ranker_scores).comparison["new_items"]["10+"]["ndcg@10"]

    scores, placed_by = guarded_scores(window, ranker_scores, guard, explore_scores)
    assert placed_by is not None and set(placed_by[heavy]) == {SCORERS.index("explore")}
    first = window.assign(score=scores).sort_values("score", ascending=False).groupby("user_id").head(1)
    assert first.loc[first["u_orders"] == 12.0, "label"].eq(1).all()
    with pytest.raises(ValueError, match="explore model, which is missing"):
        guarded_scores(window, ranker_scores, guard)


def test_blend_key_averages_the_two_models_percentile_ranks_among_each_shoppers_never_bought_items() -> None:
    users = np.array([0, 0, 0, 0, 1, 1])
    new = np.array([True, True, True, False, True, True])
    ranker = np.array([3.0, 2.0, 1.0, 9.0, 1.0, 2.0])
    explore = np.array([1.0, 3.0, 2.0, 9.0, 5.0, 4.0])
    key = blend_key(users, new, ranker, explore)
    np.testing.assert_allclose(
        key[[0, 1, 2, 4, 5]], [(1 + 1 / 3) / 2, (2 / 3 + 1) / 2, (1 / 3 + 2 / 3) / 2, 0.75, 0.75]
    )
    assert np.isnan(key[3])


def test_a_blend_that_wins_the_whole_window_fills_every_bands_never_bought_places() -> None:
    """Every shopper buys the item both models put second, each putting a different item first: the blend
    of their ranks puts it first. No band has the 200 shoppers a choice needs, the whole window has:
    the blend serves every band's never-bought places, first for each shopper the item they bought."""
    window, _ = _window({2.0: 150, 5.0: 150})
    shoppers = len(window) // CANDIDATES
    bought = window["label"].to_numpy().reshape(shoppers, CANDIDATES).argmax(axis=1)
    rng = np.random.default_rng(4)
    ranker, explore = rng.uniform(0, 4, (2, shoppers, CANDIDATES))
    every = np.arange(shoppers)
    for scores, first, last in ((ranker, 1, 2), (explore, 2, 1)):
        scores[every, bought] = 5.0
        scores[every, (bought + first) % CANDIDATES] = 6.0
        scores[every, (bought + last) % CANDIDATES] = -1.0
    ranker_scores, explore_scores = ranker.ravel(), explore.ravel()
    guard = choose_scorers(window, ranker_scores, explore_scores)
    figures = guard.comparison["new_items"]
    assert figures["2-3"]["shoppers"] == figures["4-9"]["shoppers"] == 150
    assert figures[POOLED]["ndcg@10"]["blend"] == 1.0 > figures[POOLED]["ndcg@10"]["ranker"]
    assert guard.serve["new_items"] == ("blend",) * 5 and guard.serve["all"] == ("ranker",) * 5

    scores, placed_by = guarded_scores(window, ranker_scores, guard, explore_scores)
    assert placed_by is not None and set(placed_by) == {SCORERS.index("blend")}
    first = window.assign(score=scores).sort_values("score", ascending=False).groupby("user_id").head(1)
    assert first["label"].eq(1).all()
    with pytest.raises(ValueError, match="blend model, which is missing"):
        guarded_scores(window, ranker_scores, guard)
    assert "<td>all bands</td><td>300</td>" in guard_table(guard.to_json())


def test_the_blend_fills_never_bought_places_unless_the_ranker_clearly_beats_it_on_the_whole_window() -> None:
    """An explore model that orders like the ranker makes a blend that ties it: the blend serves every
    band, but not on a window of fewer buying shoppers than a choice needs. One that orders at random,
    where the ranker puts each shopper's bought item first, makes a blend the ranker clearly beats: the
    ranker keeps the never-bought places."""
    window, ranker_scores = _window({12.0: 300})
    tie = choose_scorers(window, ranker_scores, ranker_scores.copy())
    assert (
        tie.serve["new_items"] == ("blend",) * 5 and tie.comparison["new_items"][POOLED]["serve"] == "blend"
    )
    noise = np.random.default_rng(8).standard_normal(len(window))
    beaten = choose_scorers(window, ranker_scores, noise)
    figures = beaten.comparison["new_items"][POOLED]
    assert figures["ndcg@10"]["ranker"] == 1.0 > figures["ndcg@10"]["blend"]
    assert beaten.serve["new_items"] == ("ranker",) * 5 and not beaten.needs_explore
    few, few_scores = _window({12.0: 150})
    assert choose_scorers(few, few_scores, few_scores.copy()).serve["new_items"] == ("ranker",) * 5


def _model_with_ranker() -> tuple[FeatureSet, ModelParams, TrainedModel, pd.DataFrame]:
    """A toy feature set's model with a two-tree ranker, and the rows the ranker learnt from."""
    fs = toy_feature_set()
    params = ModelParams.from_settings(Settings())
    trained = fit_parts(fs, params)
    labelled = pd.DataFrame({name: np.linspace(0, 1, 40) for name in FEATURES}).assign(
        user_id=np.repeat(np.arange(4), 10), label=np.tile([1] + [0] * 9, 4)
    )
    trained.booster = train_ranker(labelled, RankerParams(num_boost_round=2, min_data_in_leaf=1))
    return fs, params, trained, labelled


def test_model_json_round_trips_the_choice(tmp_path: Path) -> None:
    """A model saved with a guard loads with the same choice per band and task, and its model.json
    records the figures it was chosen on."""
    fs, params, trained, labelled = _model_with_ranker()
    trained.explore_booster = train_ranker(labelled, RankerParams(num_boost_round=3, min_data_in_leaf=1))
    trained.guard = ScorerGuard(
        serve={
            "all": ("ranker", "als", "ranker", "repurchase", "ranker"),
            "new_items": ("popularity",) * 4 + ("explore",),
        },
        comparison={"all": {"1": {"shoppers": 250, "serve": "als"}}},
    )
    store = ModelStore(tmp_path / "models")
    now = datetime(2026, 11, 1, tzinfo=UTC)
    number = save_model(store, trained, run_id="r1", interval_end=now, as_of=now, fs=fs)
    loaded = TrainedModel.from_stored(store.load(number), params)
    assert loaded.guard == trained.guard
    assert loaded.guard is not None and loaded.guard.comparison == trained.guard.comparison
    assert store.describe(number)["guard"]["bands"] == ["0", "1", "2-3", "4-9", "10+"]
    assert store.describe(number)["explore"] and loaded.explore_booster is not None
    assert set(store.describe(number)["digests"]) == {"ranker.txt", "explore.txt"}
    matrix = labelled[list(FEATURES)].to_numpy()
    assert loaded.explore is not None and trained.explore is not None
    np.testing.assert_allclose(loaded.explore.predict(matrix), trained.explore.predict(matrix), atol=1e-9)
    # Only the never-bought candidates of the band the explore model serves (10+ orders) are scored by it.
    rows = labelled.assign(u_orders=np.tile([12.0, 5.0], 20), ui_purchases=np.repeat([0.0, 1.0], 20))
    scores = explore_scores(rows, loaded)
    assert scores is not None
    scored = (rows["u_orders"] == 12.0) & (rows["ui_purchases"] == 0)
    assert np.isfinite(scores[scored]).all() and np.isnan(scores[~scored.to_numpy()]).all()
    np.testing.assert_allclose(
        scores[scored], loaded.explore.predict(rows.loc[scored, list(FEATURES)].to_numpy()), atol=1e-9
    )


def test_a_booster_file_changed_after_saving_is_refused_by_name_before_lightgbm_reads_it(
    tmp_path: Path,
) -> None:
    """LightGBM aborts the process on a model file it cannot parse (a ranker.txt with one leaf value
    edited no longer matches its tree sizes): the store compares the file with the digest model.json
    recorded and raises a clear error instead. A model saved before the digests loads as it did."""
    fs, params, trained, labelled = _model_with_ranker()
    store = ModelStore(tmp_path / "models")
    now = datetime(2026, 11, 1, tzinfo=UTC)
    number = save_model(store, trained, run_id="r1", interval_end=now, as_of=now, fs=fs)
    assert set(store.describe(number)["digests"]) == {"ranker.txt"} and trained.booster is not None
    ranker = store.path(number) / "ranker.txt"
    ranker.write_text(ranker.read_text().replace("leaf_value=", "leaf_value=-1", 1))
    with pytest.raises(ModelStoreError, match="ranker.txt differs from the file the model was saved with"):
        store.load(number)

    meta_path = store.path(number) / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["digests"] = {"explore.txt": "0" * 64}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelStoreError, match="explore.txt is missing"):
        store.load(number)
    del meta["digests"]
    meta_path.write_text(json.dumps(meta))
    trained.booster.save_model(str(ranker))
    assert store.load(number).booster is not None


def test_a_model_trained_on_other_features_is_refused_with_what_changed_and_the_next_run_trains(
    tmp_path: Path,
) -> None:
    """Scoring reads the feature matrix by position, so a booster trained before an upgrade changed
    `FEATURES` would score every candidate on the wrong columns without an error: the store refuses it,
    saying which features differ and that a retrain fixes it, and an `auto` run trains a model rather
    than fail every 15 minutes until the nightly retrain."""
    fs, params, trained, labelled = _model_with_ranker()
    settings = Settings(var_dir=tmp_path / "var")
    store = ModelStore(settings.models_dir)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    number = save_model(store, trained, run_id="r1", interval_end=now, as_of=now, fs=fs)
    assert store.load(number).booster is not None and store.features_differ(number) is None
    older = [f for f in FEATURES if f != "src_new"] + ["legacy_score"]
    rows = labelled.rename(columns={"src_new": "legacy_score"})
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "min_data_in_leaf": 1},
        lgb.Dataset(
            rows[older].to_numpy(),
            label=rows["label"].to_numpy(),
            group=rows.groupby("user_id", sort=False).size().to_numpy(),
            feature_name=older,
        ),
        num_boost_round=2,
    )
    ranker = store.path(number) / "ranker.txt"
    booster.save_model(str(ranker))
    meta_path = store.path(number) / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["digests"] = {}  # as a model from before the digests: the features are what is judged
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        ModelStoreError, match=r"not computed now: \['legacy_score'\]; new: \['src_new'\].*retrain"
    ):
        store.load(number)
    assert store.features_differ(number) == "ranker.txt: not computed now: ['legacy_score']; new: ['src_new']"
    assert resolve_mode(settings, "auto") == "full" and resolve_mode(settings, "incremental") == "incremental"

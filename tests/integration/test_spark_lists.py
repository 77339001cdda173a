"""Lists scored by Spark tasks (`jobs.ranking.spark_lists`) are the lists scoring everyone at once on
the driver gives, written as parts in shopper order that the loader streams."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from toy_store import toy_feature_set

from configs.settings import Settings
from jobs.features.frames import SHOPPER_FRAMES, FeatureSet
from jobs.publishing.lists_file import SortedListsFile
from jobs.ranking import spark_lists
from jobs.ranking.als import AlsParams, fold_in
from jobs.ranking.guard import SCORERS, ScorerGuard
from jobs.ranking.lists import LIST_SCHEMA, explain_goes_with, top_lists
from jobs.ranking.model import ModelParams, TrainedModel, fit_parts
from jobs.ranking.ranker import RankerParams, feature_matrix, train_ranker
from jobs.ranking.scoring import score_shoppers
from jobs.ranking.spark_als import fit_item_factors
from jobs.ranking.spark_lists import ScoringJob, write_user_lists

LENGTH = 75  # longer than some shoppers' candidates, so the second pass tops lists up


@pytest.fixture
def toy() -> tuple[FeatureSet, TrainedModel, ModelParams, pd.Series]:
    fs = toy_feature_set(n_users=60, n_items=80)
    params = ModelParams.from_settings(Settings(candidates_per_user=5))
    titles = pd.Series({f"i{n}": f"item {n}" for n in range(80)})
    return fs, fit_parts(fs, params), params, titles


def _spark_frames(spark: SparkSession, fs: FeatureSet) -> dict[str, object]:
    # Shuffled, as Spark hands rows over in no fixed order.
    return {
        name: spark.createDataFrame(getattr(fs, name).sample(frac=1.0, random_state=1))
        for name in SHOPPER_FRAMES
    }


def test_lists_scored_by_spark_tasks_are_the_whole_runs_lists(
    spark: SparkSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toy: tuple[FeatureSet, TrainedModel, ModelParams, pd.Series],
) -> None:
    """Nine shoppers per partition and four per scoring block: the parts hold, in shopper order, what
    scoring everyone at once gives, short lists filled below the lowest score of all lists."""
    fs, trained, params, titles = toy
    users = fs.users["user_id"].to_numpy()
    featured, scores, covis = score_shoppers(fs, trained, users, params)
    whole = explain_goes_with(
        top_lists(featured, scores, LENGTH, fill=fs.popular_items(LENGTH * 2)), covis, titles
    )

    monkeypatch.setattr(spark_lists, "PARTITION_SHOPPERS", 9)
    path = tmp_path / "user_lists.parquet"
    job = ScoringJob(trained, params, fs.as_of, fs.items, titles, LENGTH, block_shoppers=4)
    scored = write_user_lists(spark, _spark_frames(spark, fs), job, path)  # type: ignore[arg-type]

    assert scored.lists == 60
    assert scored.rows == {name: len(getattr(fs, name)) for name in SHOPPER_FRAMES}
    lists_file = SortedListsFile(path, block_rows=100)
    assert len(lists_file.parts()) >= 6 and lists_file.is_sorted()
    for part in lists_file.parts():
        assert pq.ParquetFile(part).schema_arrow.equals(LIST_SCHEMA, check_metadata=False)
    lists = pd.concat(list(lists_file.blocks()), ignore_index=True)
    assert lists_file.rows() == len(lists) == 60 * LENGTH
    filled = lists["score"] < whole.loc[whole["reason_code"] != "popular", "score"].min()
    assert filled.any() and (lists.loc[filled, "reason_code"] == "popular").all()
    pd.testing.assert_frame_equal(lists, whole.astype({"rank": np.int64}), check_dtype=False)
    # Written beside the folder and renamed into place: nothing else is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user_lists.parquet"]


@pytest.mark.parametrize("scorer", ["explore", "blend"])
def test_never_bought_places_follow_the_explore_model_where_the_guard_serves_it(
    spark: SparkSession,
    tmp_path: Path,
    toy: tuple[FeatureSet, TrainedModel, ModelParams, pd.Series],
    scorer: str,
) -> None:
    """A model whose guard serves never-bought places with its explore model, or with its blend with the
    ranker: each shopper's bought items keep the ranker's order, the places left go to never-bought items
    in the explore model's (or the blend's) order, and Spark tasks (the model shipped without its
    compiled code, shoppers in blocks of 7) give the same lists."""
    fs, trained, params, titles = toy
    users = fs.users["user_id"].to_numpy()
    featured, _, _ = score_shoppers(fs, trained, users, params)
    rng = np.random.default_rng(2)
    quick = RankerParams(num_boost_round=20, min_data_in_leaf=5)
    labelled = featured.assign(label=(rng.random(len(featured)) < 0.2).astype(int))
    model = replace(
        trained,
        booster=train_ranker(labelled, quick),
        explore_booster=train_ranker(labelled.assign(label=1 - labelled["label"]), quick),
        guard=ScorerGuard(serve={"all": ("ranker",) * 5, "new_items": (scorer,) * 5}),
    )
    assert model.ranker is not None and model.explore is not None
    featured, scores, covis = score_shoppers(fs, model, users, params)
    matrix = feature_matrix(featured, order="C")
    frame = featured.assign(
        score=scores, ranker=model.ranker.predict(matrix), explore=model.explore.predict(matrix)
    )
    new = frame["ui_purchases"] == 0
    assert new.any() and (~new).any() and set(featured["placed_by"][new]) == {SCORERS.index(scorer)}
    # The blend: the mean of the two models' percentile ranks among the shopper's never-bought items.
    by_shopper = frame[new].groupby("user_id")
    frame["blend"] = (by_shopper["ranker"].rank(pct=True) + by_shopper["explore"].rank(pct=True)) / 2
    assert not frame.loc[new, "blend"].corr(frame.loc[new, "explore"]) > 0.999
    for _, shopper in frame.groupby("user_id"):
        served = shopper.sort_values("score", ascending=False)
        is_new = served["ui_purchases"] == 0
        assert served.loc[is_new, scorer].is_monotonic_decreasing
        assert served.loc[~is_new, "ranker"].is_monotonic_decreasing
        np.testing.assert_allclose(np.sort(served["score"]), np.sort(shopper["ranker"]), atol=1e-6)
    assert not np.allclose(scores, frame["ranker"])

    whole = explain_goes_with(
        top_lists(featured, scores, LENGTH, fill=fs.popular_items(LENGTH * 2)), covis, titles
    )
    path = tmp_path / "user_lists.parquet"
    job = ScoringJob(model, params, fs.as_of, fs.items, titles, LENGTH, block_shoppers=7)
    write_user_lists(spark, _spark_frames(spark, fs), job, path)  # type: ignore[arg-type]
    lists = pd.concat(list(SortedListsFile(path, block_rows=100).blocks()), ignore_index=True)
    pd.testing.assert_frame_equal(lists, whole.astype({"rank": np.int64}), check_dtype=False)


def test_a_run_without_shoppers_writes_an_empty_readable_folder(
    spark: SparkSession, tmp_path: Path, toy: tuple[FeatureSet, TrainedModel, ModelParams, pd.Series]
) -> None:
    fs, trained, params, titles = toy
    frames = {name: frame.limit(0) for name, frame in _spark_frames(spark, fs).items()}  # type: ignore[attr-defined]
    path = tmp_path / "user_lists.parquet"
    path.mkdir()  # an earlier attempt's folder is replaced
    (path / "part-00000-old.parquet").write_bytes(b"left over")
    scored = write_user_lists(
        spark, frames, ScoringJob(trained, params, fs.as_of, fs.items, titles, 10), path
    )
    assert scored.lists == 0 and scored.rows["users"] == 0
    assert pd.read_parquet(path).empty and list(pd.read_parquet(path).columns) == LIST_SCHEMA.names


def test_spark_mllib_item_factors_learn_the_taste_clusters(spark: SparkSession) -> None:
    """`CAROUSEL_ALS_ENGINE=spark`: MLlib's item factors, with a shopper folded in against them as at
    scoring, put the shopper's own taste cluster first, as implicit's do."""
    fs = toy_feature_set(n_users=60, n_items=40)
    params = AlsParams(factors=8, iterations=10)
    ids, factors = fit_item_factors(spark.createDataFrame(fs.interactions), params)
    assert list(ids) == sorted(fs.interactions["item_id"].unique()) and factors.shape == (len(ids), 8)
    assert np.isfinite(factors).all() and np.abs(factors).sum() > 0
    shoppers = fold_in(fs.interactions, ids, factors, params)
    top = shoppers.recommend(10)
    for user in ("u0", "u1"):  # an even and an odd shopper
        own = top.loc[top["user_id"] == user, "item_id"].str[1:].astype(int) % 2
        assert (own == int(user[1:]) % 2).mean() >= 0.8, user

"""The production ranker as an offline-evaluation `Recommender` (`jobs.evaluation.protocol`): exactly the
pipeline's training and scoring (`jobs.ranking.training.rank_candidates`) on the evaluation's history."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
import pandas as pd

from configs.settings import get_settings
from jobs.evaluation.protocol import EvalContext
from jobs.evaluation.spark_history import history_frames
from jobs.features import transforms
from jobs.features.session import spark_session
from jobs.features.signals import CoocParams
from jobs.ranking.als import AlsParams
from jobs.ranking.lists import top_lists
from jobs.ranking.model import ModelParams
from jobs.ranking.training import RankedCandidates, rank_candidates

# Where the trained and scored candidates are kept on the context: one training, and one scoring of
# every shopper either task asks for (`EvalContext.asked`), serves both tasks.
_CACHE_KEY = "ranker:ranked"


def start_spark() -> None:
    """Start the ranker's Spark session on a daemon thread, so that the JVM starts while the data loads
    and the baselines are tuned (the ranker's own `spark_session` call then finds it, or waits for it).
    A failure here is left for that call to report."""

    def start() -> None:
        with contextlib.suppress(Exception):
            spark_session(get_settings())

    threading.Thread(target=start, name="spark-start", daemon=True).start()


def _cooc_params(tuned: Any) -> CoocParams:
    """Co-visitation settings from the evaluation's tuning (unknown keys ignored), else the defaults."""
    if not isinstance(tuned, dict):
        return CoocParams()
    known = set(CoocParams.__dataclass_fields__)
    return CoocParams(**{k: v for k, v in tuned.items() if k in known})


def evaluation_ranker(ctx: EvalContext, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    """The production ranker as an offline-evaluation Recommender (see `jobs.evaluation.protocol`).

    Runs exactly the pipeline's `rank_candidates` on the evaluation's history (events before the
    cutoff) and returns (user_id, item_id, rank). With `exclude_bought`, items the shopper bought before
    the cutoff are left out (the `new_items` task).
    """
    if _CACHE_KEY not in ctx.cache:
        ctx.cache[_CACHE_KEY] = _rank_asked(ctx)
    ranked: RankedCandidates = ctx.cache[_CACHE_KEY]
    guard = ranked.trained.guard
    ctx.notes["ranker"] = {
        "window_evaluation": ranked.trained.evaluation,
        "guard": guard.to_json() if guard is not None else None,
    }
    wanted = pd.Index(np.asarray(users, dtype=object))
    featured, scores = ranked.featured, ranked.scores
    keep = featured["user_id"].isin(wanted).to_numpy()
    if exclude_bought:
        # The never-bought items in the order the pipeline serves them: the ranker's, or where the guard
        # chose it on the newest label window, the explore model's or a baseline's (`jobs.ranking.guard`).
        keep &= featured["ui_purchases"].to_numpy() == 0
    featured, scores = featured[keep], scores[keep]
    fill = ranked.features.popular_items(k * 4 + 50)
    lists = top_lists(featured, scores, k + 50, fill=fill)
    if exclude_bought:
        bought = ranked.features.user_item.loc[
            ranked.features.user_item["ui_purchases"] > 0, ["user_id", "item_id"]
        ]
        lists = lists.merge(bought.assign(_bought=True), on=["user_id", "item_id"], how="left")
        lists = lists[lists["_bought"].isna()].drop(columns="_bought")
    lists = lists.sort_values(["user_id", "rank"]).groupby("user_id", sort=False).head(k)
    lists["rank"] = lists.groupby("user_id").cumcount() + 1
    return lists[["user_id", "item_id", "rank"]].reset_index(drop=True)


def _rank_asked(ctx: EvalContext) -> RankedCandidates:
    """Train on the history as the pipeline does, and score the shoppers the tasks ask for at the cutoff."""
    settings = get_settings()
    cutoff = pd.Timestamp(ctx.cutoff).to_pydatetime()
    spark = spark_session(settings)
    columns = ["user_id", "session_id", "item_id", "event_type", "ts", "quantity", "price", "country"]
    events, items = history_frames(spark, ctx, columns)
    tuned = ctx.tuned or {}
    base = ModelParams.from_settings(settings)
    params = ModelParams(
        als=AlsParams(**tuned["als"]) if isinstance(tuned.get("als"), dict) else base.als,
        ranker=base.ranker,
        label_days=int(tuned.get("label_days", base.label_days)),
        candidates_per_user=base.candidates_per_user,
        new_item_days=base.new_item_days,
        train_windows=base.train_windows,
        cooc=_cooc_params(tuned.get("cooccurrence")),
        fit_max_shoppers=base.fit_max_shoppers,
        als_engine=base.als_engine,
    )
    modelling = transforms.modelling_events(events, cutoff).cache()
    try:
        return rank_candidates(modelling, items, cutoff, params, users=ctx.asked)
    finally:
        # What comes back is pandas; released so that `--folds` does not keep every fold's history cached.
        modelling.unpersist()

"""The refresh pipeline: compute lists (Spark + ALS + LightGBM), validate them (Great Expectations),
publish them (Redis). Each stage is a function the Airflow DAG calls as one task and `carousel refresh`
calls in a row; stages hand over through the run's folder `var/runs/<run_id>/`, so a retried task
redoes only its own stage.

Nothing here reads the wall clock: every stage gets the run's data interval end (`interval_end`), and
the model's "now" is the newest event before it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from carousel.lake import Lake
from carousel.redis_conn import sync_client
from configs.settings import Settings
from jobs import features, model
from jobs.input_check import InputValidationFailed, check_inputs
from jobs.model_store import ModelStore, StoredModel
from jobs.publish import PublishResult, SortedListsFile, publish_version
from jobs.run_history import RunHistory, folder_name
from jobs.spark import spark_session

Progress = Callable[[str], None]


class PipelineError(RuntimeError):
    """A stage could not run; the message says why. Nothing was published."""


class ValidationFailed(PipelineError):
    """The output gate refused the run's lists; they are not published."""


@dataclass(frozen=True)
class RefreshResult:
    run_id: str
    version: str
    published: PublishResult
    stages: dict[str, float]
    counts: dict[str, int]


def version_for(interval_end: datetime) -> str:
    """The sortable version id of the lists covering data up to `interval_end`."""
    return interval_end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def run_dir(settings: Settings, run_id: str) -> Path:
    return settings.runs_dir / folder_name(run_id)


def history(settings: Settings) -> RunHistory:
    return RunHistory(settings.runs_dir / "history.sqlite")


@contextmanager
def _stage(settings: Settings, run_id: str, name: str, progress: Progress | None) -> Iterator[None]:
    started = time.perf_counter()
    if progress:
        progress(f"{name} ...")
    try:
        yield
    except Exception as exc:
        history(settings).update(run_id, status="failed", failed_stage=name, error=str(exc)[:2000])
        raise
    took = round(time.perf_counter() - started, 2)
    history(settings).update(run_id, stages={name: took})
    if progress:
        progress(f"{name} done in {took:.1f}s")


# -- stage 1: compute ---------------------------------------------------------------------------------
def _collect_feature_set(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    cooc: model.CoocParams | None = None,
    *,
    shoppers: DataFrame | None = None,
    baskets: bool = True,
) -> model.FeatureSet:
    """Every feature frame as of `as_of`. With `shoppers` (a frame of user_id), the shopper-level frames
    cover only them; item-level frames always cover every event. Without `baskets` the session baskets
    are skipped (a run scoring with a stored model takes the item-item similarity from it)."""
    cooc = cooc or model.CoocParams()
    # The given shoppers' events are read by several feature frames: kept once, they are a small share.
    own = events if shoppers is None else events.join(F.broadcast(shoppers), "user_id").cache()
    basket_frame = (
        features.session_baskets(events, as_of, cooc.basket_half_life).toPandas()
        if baskets
        else pd.DataFrame(columns=["session_id", "item_id", "weight"])
    )
    touches = features.session_touches(own).cache()
    feature_set = model.FeatureSet(
        as_of=pd.Timestamp(as_of),
        interactions=_sorted(features.als_interactions(touches).toPandas(), ["user_id", "item_id"]),
        user_item=_sorted(features.user_item_stats(touches, as_of).toPandas(), ["user_id", "item_id"]),
        items=_sorted(features.item_stats(events, items, as_of, model.POP_WINDOWS).toPandas(), ["item_id"]),
        users=_sorted(features.user_stats(own, as_of).toPandas(), ["user_id"]),
        affinity=_sorted(features.user_category_affinity(own, items).toPandas(), ["user_id", "category"]),
        baskets=_sorted(basket_frame, ["session_id", "item_id"]),
        interest=_sorted(
            features.shopper_interest(
                touches, as_of, cooc.half_life_days, cooc.cart_weight, cooc.view_weight
            ).toPandas(),
            ["user_id", "item_id"],
        ),
    )
    touches.unpersist()
    if shoppers is not None:
        own.unpersist()
    return feature_set


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Spark returns rows in no fixed order; sorting makes every downstream step (and so a rerun of the
    same interval) reproducible to the byte."""
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ModelParams:
    """Everything that shapes the model, from settings (production) or the evaluation's tuning."""

    als: model.AlsParams
    ranker: model.RankerParams
    label_days: int
    candidates_per_user: int
    new_item_days: int = 14
    train_windows: int = 2
    cooc: model.CoocParams = field(default_factory=model.CoocParams)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelParams:
        return cls(
            als=model.AlsParams(
                factors=settings.als_factors,
                iterations=settings.als_iterations,
                regularization=settings.als_regularization,
                alpha=settings.als_alpha,
            ),
            ranker=model.RankerParams(),
            label_days=settings.label_days,
            candidates_per_user=settings.candidates_per_user,
            new_item_days=settings.new_item_days,
            train_windows=settings.ranker_train_windows,
        )


@dataclass
class TrainedModel:
    """What scoring needs besides the features: ALS item factors, item-item similarity, item re-buy
    rates and the ranker. Fitted on a feature set (a training window, or everything up to `as_of`), kept
    in memory by the full run and stored as a numbered model (`jobs/model_store.py`) for the 15-minute
    incremental runs."""

    als_params: model.AlsParams
    item_ids: np.ndarray
    item_factors: np.ndarray
    similarity: tuple[sp.csr_matrix, pd.Index] | None
    item_rebuy: tuple[pd.DataFrame, float]
    booster: lgb.Booster | None = None
    train_rows: int = 0
    train_cutoff: datetime | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    _compiled: model.CompiledRanker | None = field(default=None, repr=False, compare=False)

    @property
    def ranker(self) -> model.CompiledRanker | None:
        """The booster compiled for scoring, once per model (compiling takes about half a second)."""
        if self.booster is None:
            return None
        if self._compiled is None or self._compiled.booster is not self.booster:
            self._compiled = model.CompiledRanker(self.booster)
        return self._compiled

    @classmethod
    def from_stored(cls, stored: StoredModel, params: ModelParams) -> TrainedModel:
        return cls(
            als_params=params.als,
            item_ids=stored.item_ids,
            item_factors=stored.item_factors,
            similarity=(stored.covis, pd.Index(stored.covis_item_ids))
            if len(stored.covis_item_ids)
            else None,
            item_rebuy=(stored.item_rebuy, stored.overall_rebuy),
            booster=stored.booster,
            train_rows=int(stored.meta.get("train_rows", 0)),
            train_cutoff=datetime.fromisoformat(stored.meta["train_cutoff"]),
            windows=list(stored.meta.get("windows", [])),
            evaluation=dict(stored.meta.get("evaluation", {})),
        )


def _fit_parts(fs: model.FeatureSet, params: ModelParams) -> TrainedModel:
    """ALS item factors, basket similarity and re-buy rates of one feature set (no ranker yet)."""
    als = model.fit_als(fs.interactions, params.als)
    similarity = (
        model.basket_similarity(fs.baskets, params.cooc.shrink, params.cooc.neighbours)
        if not fs.baskets.empty
        else None
    )
    _, item_rebuy = model.rebuy_rates(fs.user_item)
    return TrainedModel(
        als_params=params.als,
        item_ids=als.item_ids,
        item_factors=als.item_factors,
        similarity=similarity,
        item_rebuy=(item_rebuy, model.overall_rebuy_rate(fs.user_item)),
    )


def score_shoppers(
    fs: model.FeatureSet, trained: TrainedModel, users: np.ndarray, params: ModelParams
) -> tuple[pd.DataFrame, np.ndarray, model.CoVisitation]:
    """Every candidate of `users` with its features and ranker score: the one path shared by training
    windows, the full run and the incremental run. Shoppers' ALS factors are always folded in against
    the fixed item factors, so a shopper scored in a 15-minute run is scored exactly as in a full one."""
    fs = replace(fs, item_rebuy=trained.item_rebuy)
    wanted = pd.Index(users)
    own = fs.interactions[fs.interactions["user_id"].isin(wanted)]
    als = model.fold_in(own, trained.item_ids, trained.item_factors, params.als)
    covis = model.co_visitation(fs, users, params=params.cooc, similarity=trained.similarity)
    cands = model.build_candidates(
        fs, als, users, covis, als_k=params.candidates_per_user, new_item_days=params.new_item_days
    )
    featured = model.add_features(cands, fs, als)
    return featured, model.score_candidates(featured, trained.ranker), covis


# Shoppers scored at once when lists are built: candidates with their features take about 0.4 KB
# each and a shopper has up to ~300, so a block of 10,000 shoppers holds about 1 GB whatever the store's
# size, where scoring everyone at once grew with the shoppers (14 GB at 45,000).
SCORE_BLOCK_USERS = 10_000


def _shopper_frames(fs: model.FeatureSet, change: Callable[[pd.DataFrame], pd.DataFrame]) -> model.FeatureSet:
    """`fs` with `change` applied to each of its shopper-level frames; item-level frames are shared."""
    return replace(
        fs,
        interactions=change(fs.interactions),
        user_item=change(fs.user_item),
        users=change(fs.users),
        affinity=change(fs.affinity),
        interest=change(fs.interest),
    )


def _by_shopper(fs: model.FeatureSet) -> model.FeatureSet:
    """`fs` with every shopper-level frame sorted by user_id (`_sorted` already does; a frame that is
    not is sorted here), checked once so that `_shoppers_block` can slice each block."""
    return _shopper_frames(
        fs, lambda frame: frame if frame["user_id"].is_monotonic_increasing else _sorted(frame, ["user_id"])
    )


def _shoppers_block(fs: model.FeatureSet, users: np.ndarray) -> model.FeatureSet:
    """`fs` (sorted by `_by_shopper`) with its shopper-level frames cut down to `users` (sorted ids):
    each is a slice found by binary search."""
    lo, hi = users[0], users[-1]

    def rows_of(frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["user_id"].to_numpy()
        start = int(np.searchsorted(ids, lo, side="left"))
        end = int(np.searchsorted(ids, hi, side="right"))
        return frame.iloc[start:end]

    return _shopper_frames(fs, rows_of)


# The schema of a run's user_lists.parquet, given to the writer so every block is written alike.
LIST_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int64()),
        ("item_id", pa.string()),
        ("score", pa.float64()),
        ("reason_code", pa.string()),
        ("reason_text", pa.string()),
    ]
)


def _list_table(lists: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(lists[model.LIST_COLUMNS], schema=LIST_SCHEMA, preserve_index=False)


def write_lists(
    fs: model.FeatureSet,
    trained: TrainedModel,
    users: np.ndarray,
    params: ModelParams,
    *,
    length: int,
    titles: pd.Series,
    path: Path,
    block_users: int = SCORE_BLOCK_USERS,
) -> int:
    """Every shopper's list (`model.top_lists` with the "goes with" reasons named) written to `path`
    sorted by shopper, a block of shoppers at a time: memory stays bounded by the block, not by the
    store, and the loader can stream the file (`SortedListsFile`). Returns the number of lists.

    Scoring is per shopper, so the lists are the ones a single `score_shoppers` call over everyone
    would give. Short lists are filled below the lowest score of all lists, as `top_lists` does: the
    blocks go to a side file first, and a second pass fills them once that floor is known. The side
    file becomes `path` by a rename, so `path` is never seen half written."""
    users = np.sort(np.asarray(users, dtype=object))
    fs = _by_shopper(fs)
    unfilled = path.with_name(f"{path.stem}.unfilled.parquet")
    floor, short, n_lists = np.inf, False, 0
    no_fill = pd.DataFrame({"item_id": pd.Series(dtype=object)})
    with pq.ParquetWriter(unfilled, LIST_SCHEMA) as writer:
        for start in range(0, len(users), block_users):
            block = users[start : start + block_users]
            featured, scores, covis = score_shoppers(_shoppers_block(fs, block), trained, block, params)
            lists = model.explain_goes_with(model.top_lists(featured, scores, length, fill=no_fill), covis, titles)
            del featured, scores, covis
            if lists.empty:
                continue
            sizes = lists.groupby("user_id", sort=False).size()
            floor = min(floor, float(lists["score"].min()))
            short = short or bool((sizes < length).any())
            n_lists += len(sizes)
            writer.write_table(_list_table(lists))
    fill = fs.popular_items(length * 2)
    if short and not fill.empty:
        filled = path.with_name(f"{path.stem}.filled.parquet")
        with pq.ParquetWriter(filled, LIST_SCHEMA) as writer:
            for lists in SortedListsFile(unfilled).blocks():
                writer.write_table(_list_table(model.fill_short_lists(lists, length, fill, floor=floor)))
        unfilled.unlink()
        unfilled = filled
    # Renamed into place whole: a run that fails part way never leaves a truncated file behind.
    unfilled.replace(path)
    return n_lists


@dataclass
class RankedCandidates:
    """Candidates of every scored shopper with their features and ranker scores, as of one moment."""

    features: model.FeatureSet
    featured: pd.DataFrame
    scores: np.ndarray
    covis: model.CoVisitation
    trained: TrainedModel

    @property
    def booster(self) -> lgb.Booster | None:
        return self.trained.booster


def _training_window(
    events: DataFrame, items: DataFrame, cutoff: datetime, label_end: datetime, params: ModelParams
) -> tuple[pd.DataFrame, int] | None:
    """Candidates with features as of `cutoff`, labelled by the purchases in [cutoff, label_end), of
    the shoppers with at least one bought candidate, and how many shoppers bought in the window.

    Only those shoppers teach the ranker or measure it (`train_ranker` and `_window_evaluation` drop
    the others), so the others' candidates are dropped block by block as they are scored: memory
    follows the buying shoppers of one block, not every buyer's candidates at once."""
    future = (
        events.where(
            (F.col("ts") >= F.lit(cutoff))
            & (F.col("ts") < F.lit(label_end))
            & (F.col("event_type") == "purchase")
        )
        .select("user_id", "item_id")
        .distinct()
        .toPandas()
    )
    fs = _collect_feature_set(events.where(F.col("ts") < F.lit(cutoff)), items, cutoff, params.cooc)
    train_users = np.sort(fs.users["user_id"][fs.users["user_id"].isin(future["user_id"])].to_numpy())
    if not len(train_users) or fs.interactions.empty:
        return None
    parts = _fit_parts(fs, params)
    fs = _by_shopper(fs)
    frames = []
    for start in range(0, len(train_users), SCORE_BLOCK_USERS):
        block = train_users[start : start + SCORE_BLOCK_USERS]
        featured, _, _ = score_shoppers(_shoppers_block(fs, block), parts, block, params)
        labelled = model.label_candidates(featured, future)
        # Only what the ranker and its evaluation read: the shopper (its group), features and label,
        # sorted by shopper as the ranker groups them (the blocks are in shopper order, so the window
        # comes out sorted and the ranker need not copy it to sort it).
        bought = labelled.groupby("user_id")["label"].transform("max") > 0
        kept = labelled.loc[bought, ["user_id", *model.FEATURES, "label"]]
        frames.append(kept.sort_values("user_id", kind="stable"))
    return pd.concat(frames, ignore_index=True), len(train_users)


def train_model(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    params: ModelParams,
    progress: Progress | None = None,
) -> tuple[TrainedModel, model.FeatureSet]:
    """Fit ALS, the co-visitation similarity and the LightGBM ranker as of `as_of`.

    `events` are modelling events (known, consenting shoppers) strictly before `as_of`. The ranker learns
    from `train_windows` windows: features computed up to `as_of - w * label_days` with the purchases of
    the following `label_days` as labels (more windows, more examples of sparse shoppers). Its figures
    (`evaluation`) come from a ranker trained on the older windows alone and measured on the newest one,
    so they are out of sample. Returns the model and the feature set as of `as_of`.
    """
    frames: list[pd.DataFrame] = []
    windows: list[dict[str, Any]] = []
    for window in range(1, params.train_windows + 1):
        cutoff = as_of - timedelta(days=params.label_days * window)
        label_end = cutoff + timedelta(days=params.label_days)
        window_result = _training_window(events, items, cutoff, label_end, params)
        if window_result is None:
            continue
        labelled, shoppers = window_result
        del window_result
        # A shopper of one window is a ranker group of its own: the window's number above the shopper's
        # position. Integers, not "w1:<id>" strings (5.4M new Python strings at 20M events), and set in
        # place (`assign` would copy every column); the windows stay in order, so the ranker sorts none.
        positions = pd.factorize(labelled["user_id"], sort=True)[0].astype(np.int64)
        labelled["user_id"] = (window << 32) + positions
        frames.append(labelled)
        del labelled
        windows.append(
            {
                "features_until": cutoff.isoformat(),
                "labels_until": label_end.isoformat(),
                "shoppers": shoppers,
            }
        )
        if progress:
            progress(f"training window {window}: {shoppers} shoppers from {cutoff:%Y-%m-%d}")
    # The ranker is trained, and its training rows dropped, before the full feature set is collected:
    # the windows' candidates, a window's feature set and the full one are never held at once (at 20M
    # events each is gigabytes).
    evaluation = _window_evaluation(frames, params)
    train = pd.concat(frames, ignore_index=True) if frames else None
    del frames
    booster = model.train_ranker(train, params.ranker) if train is not None else None
    train_rows = 0 if train is None else len(train)
    del train
    fs_full = _collect_feature_set(events, items, as_of, params.cooc)
    trained = _fit_parts(fs_full, params)
    trained.booster = booster
    trained.train_rows = train_rows
    trained.train_cutoff = as_of - timedelta(days=params.label_days)
    trained.windows = windows
    trained.evaluation = evaluation
    return trained, fs_full


def _window_evaluation(frames: list[pd.DataFrame], params: ModelParams, k: int = 10) -> dict[str, Any]:
    """NDCG@k on the newest label window of a ranker trained on the older windows only, against the
    candidates ordered by ALS score: out-of-sample figures kept with every model."""
    if len(frames) < 2:
        return {"note": "fewer than two label windows with purchases: no out-of-sample figures"}
    # With the default two windows the older one is used as it is (a concat would copy it whole).
    newest, older = frames[0], (frames[1] if len(frames) == 2 else pd.concat(frames[1:], ignore_index=True))
    booster = model.train_ranker(older, params.ranker)
    bought = newest.groupby("user_id")["label"].transform("max") > 0
    buyers = newest if bought.all() else newest[bought]  # the pipeline's windows hold buyers only
    if booster is None or buyers.empty:
        return {"note": "no buyers to measure on"}
    ranker_scores = model.score_candidates(buyers, model.CompiledRanker(booster))
    als_scores = np.nan_to_num(buyers["als_score"].to_numpy(dtype="float64"), nan=-1e9)
    return {
        "window": "newest label window; ranker trained on the older windows",
        "shoppers": int(buyers["user_id"].nunique()),
        f"ndcg@{k}": {
            "ranker": round(_ndcg_at(buyers, ranker_scores, k), 4),
            "als": round(_ndcg_at(buyers, als_scores, k), 4),
        },
    }


def _ndcg_at(labelled: pd.DataFrame, scores: np.ndarray, k: int) -> float:
    """Mean NDCG@k over shoppers of their candidates ordered by `scores` (binary labels)."""
    frame = labelled[["user_id", "label"]].assign(score=scores)
    frame = frame.sort_values(["user_id", "score"], ascending=[True, False], kind="stable")
    frame["pos"] = frame.groupby("user_id").cumcount()
    gains = frame["label"].to_numpy() / np.log2(frame["pos"].to_numpy() + 2.0)
    dcg = (
        pd.Series(np.where(frame["pos"].to_numpy() < k, gains, 0.0))
        .groupby(frame["user_id"].to_numpy())
        .sum()
    )
    positives = frame.groupby("user_id")["label"].sum().clip(upper=k)
    ideal = positives.map(lambda n: float(np.sum(1.0 / np.log2(np.arange(n) + 2.0))))
    return float((dcg / ideal.reindex(dcg.index)).mean())


def rank_candidates(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    params: ModelParams,
    *,
    users: np.ndarray | None = None,
    progress: Progress | None = None,
) -> RankedCandidates:
    """Train (`train_model`) and score every shopper's candidates at `as_of`: the full run and the
    offline evaluation. `users` limits scoring to some shoppers (the evaluation's test users); default:
    every shopper with events."""
    trained, fs_full = train_model(events, items, as_of, params, progress)
    score_users = fs_full.users["user_id"].to_numpy() if users is None else np.asarray(users, dtype=object)
    if progress:
        progress(f"scoring {len(score_users)} shoppers")
    featured, scores, covis = score_shoppers(fs_full, trained, score_users, params)
    return RankedCandidates(fs_full, featured, scores, covis, trained)


Mode = str
# train: fit and store a numbered model, no lists (the nightly retrain DAG). full: train, then score
# every shopper. rescore: every shopper with the newest stored model. incremental: the shoppers active in
# the interval with the newest stored model, published on top of the live version. auto: what the
# 15-minute DAG runs (see `_resolve_mode`).
MODES = ("auto", "full", "rescore", "incremental", "train")


def compute_lists(
    settings: Settings,
    *,
    run_id: str,
    interval_end: datetime,
    interval_start: datetime | None = None,
    mode: Mode = "full",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the run's lists into its folder.

    Modes: `train` fits a new numbered model (ALS, co-visitation, ranker) and writes no lists; `full`
    trains and scores every shopper; `rescore` scores every shopper with the newest stored model;
    `incremental` loads the newest model and scores only the shoppers with events in the data interval
    [interval_start, interval_end), folding them into ALS with the item factors fixed. Segment lists are
    rebuilt by every mode that writes lists.
    """
    if mode not in MODES:
        raise PipelineError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    interval_end = interval_end.astimezone(UTC)
    interval_start = (interval_start or interval_end - timedelta(minutes=15)).astimezone(UTC)
    if interval_start >= interval_end:
        raise PipelineError(
            f"the data interval is empty: start {interval_start.isoformat()} is not before end {interval_end.isoformat()}"
        )
    history(settings).update(
        run_id,
        status="running",
        interval_start=interval_start.isoformat(),
        interval_end=interval_end.isoformat(),
        version=version_for(interval_end),
    )
    with _stage(settings, run_id, "compute", progress):
        manifest = _compute(
            settings,
            run_id=run_id,
            interval_start=interval_start,
            interval_end=interval_end,
            mode=_resolve_mode(settings, mode),
            progress=progress,
        )
    # A train run ends here; a run that writes lists goes on to validate and publish.
    done = {"status": "trained"} if manifest["mode"] == "train" else {}
    history(settings).update(
        run_id, mode=manifest["mode"], counts=manifest["counts"], model=manifest["model"], **done
    )
    return manifest


def _resolve_mode(settings: Settings, mode: Mode) -> str:
    """`auto`: train when there is no model yet; score everyone when nothing is live or a newer model
    than the live version's has been trained (the nightly retrain); else incremental."""
    if mode != "auto":
        return mode
    latest = ModelStore(settings.models_dir).latest()
    if latest is None:
        return "full"
    from jobs.publish import live_version, read_meta

    client = sync_client(settings)
    live = live_version(client)
    meta = read_meta(client, live) if live else None
    if meta is None:
        return "rescore"
    live_model = (meta.get("model") or {}).get("number")
    return "incremental" if live_model == latest else "rescore"


def _compute(
    settings: Settings,
    *,
    run_id: str,
    interval_start: datetime,
    interval_end: datetime,
    mode: str,
    progress: Progress | None,
) -> dict[str, Any]:
    lake = Lake(settings.lake_dir)
    if not lake.has_data():
        raise PipelineError(
            f"the lake at {settings.lake_dir} has no events or items yet: run `carousel import ...` first"
        )
    spark = spark_session(settings)
    events = spark.read.parquet(str(lake.events_dir)).where(F.col("ts") < F.lit(interval_end))
    items = spark.read.parquet(str(lake.items_path))
    users = spark.read.parquet(str(lake.users_path)) if lake.users_path.exists() else None
    newest = events.agg(F.max("ts")).first()
    if newest is None or newest[0] is None:
        raise PipelineError(f"the lake holds no events before {interval_end.isoformat()}")
    # The model's "now" is just after the newest event: windows stay meaningful on historic data.
    as_of = min(newest[0].astimezone(UTC) + timedelta(seconds=1), interval_end)

    # Consent withdrawn and erasures made through the API since the lake's users table was written.
    events = _without_withdrawn_shoppers(settings, spark, events)
    modelling = features.modelling_events(events, users, as_of)
    if mode != "incremental":
        # Training and scoring everyone read the modelling events many times over; an incremental run
        # reads them twice (its shoppers' events, items' statistics), where caching them all would cost
        # more than it saves.
        modelling = modelling.cache()
    params = ModelParams.from_settings(settings)
    store = ModelStore(settings.models_dir)
    out = run_dir(settings, run_id)
    out.mkdir(parents=True, exist_ok=True)
    recorded = out / "manifest.json"
    if mode in ("full", "train"):
        if progress:
            progress(f"{mode} run as of {as_of.isoformat()}: training")
        trained, fs = train_model(modelling, items, as_of, params, progress)
        model_number = _save_model(
            store, trained, run_id=run_id, interval_end=interval_end, as_of=as_of, fs=fs
        )
        if progress:
            progress(f"model {model_number} saved under {store.path(model_number)}: {trained.evaluation}")
        if mode == "train":
            modelling.unpersist()
            manifest = _manifest(
                run_id, mode, interval_start, interval_end, as_of, params, trained, model_number, fs
            )
            return _write_manifest(recorded, manifest)
    else:
        # A rerun of this run reuses the model it used first, so the interval's lists come out the same.
        number = json.loads(recorded.read_text())["model"]["number"] if recorded.exists() else None
        stored = store.load(number)
        model_number = stored.number
        trained = TrainedModel.from_stored(stored, params)
        shoppers = None
        if mode == "incremental":
            shoppers = modelling.where(F.col("ts") >= F.lit(interval_start)).select("user_id").distinct()
        fs = _collect_feature_set(modelling, items, as_of, params.cooc, shoppers=shoppers, baskets=False)
        if progress:
            progress(f"{mode} run with model {model_number}: {len(fs.users)} shoppers to score")
    stored_length = stored_list_length(settings)
    titles = items.select("item_id", "title").toPandas().set_index("item_id")["title"]
    n_user_lists = write_lists(
        fs,
        trained,
        fs.users["user_id"].to_numpy(),
        params,
        length=stored_length,
        titles=titles,
        path=out / "user_lists.parquet",
    )
    seg_lists = _segment_lists(settings, events, items, users, as_of, fs)
    modelling.unpersist()

    seg_lists.to_parquet(out / "segment_lists.parquet", index=False)
    departments = fs.items[["item_id", "category"]].assign(
        department=lambda f: f["category"].astype(str).str.split("/").str[0].str.strip().str.lower()
    )
    departments[["item_id", "department"]].to_parquet(out / "departments.parquet", index=False)
    if mode != "incremental":
        # Similar items change with the model only: full versions carry them, deltas inherit the base's.
        model.similar_item_lists(trained.similarity, fs.items, stored_length).to_parquet(
            out / "item_lists.parquet", index=False
        )
    manifest = _manifest(run_id, mode, interval_start, interval_end, as_of, params, trained, model_number, fs)
    manifest["model"]["path"] = str(store.path(model_number))
    manifest["counts"].update(
        user_lists=n_user_lists, segment_lists=int(seg_lists["segment"].nunique())
    )
    return _write_manifest(recorded, manifest)


def _manifest(
    run_id: str,
    mode: str,
    interval_start: datetime,
    interval_end: datetime,
    as_of: datetime,
    params: ModelParams,
    trained: TrainedModel,
    model_number: int,
    fs: model.FeatureSet,
) -> dict[str, Any]:
    ranker = "lightgbm-lambdarank" if trained.booster is not None else "none: no purchases in label window"
    return {
        "run_id": run_id,
        "mode": mode,
        "version": version_for(interval_end),
        "interval_start": interval_start.isoformat(),
        "interval_end": interval_end.isoformat(),
        "as_of": as_of.isoformat(),
        "model": {
            "number": model_number,
            "als": params.als.__dict__,
            "ranker": ranker,
            "train_cutoff": trained.train_cutoff.isoformat() if trained.train_cutoff else None,
            "ranker_train_rows": trained.train_rows,
            "evaluation": trained.evaluation,
        },
        "counts": {
            "modelled_users": int(len(fs.users)),
            "items": int(len(fs.items)),
            "in_stock_items": int(fs.items["in_stock"].sum()),
            "interactions": int(len(fs.interactions)),
        },
    }


def _write_manifest(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def _without_withdrawn_shoppers(settings: Settings, spark: Any, events: DataFrame) -> DataFrame:
    """`events` without the shoppers the API recorded as opted out of personalization or erased."""
    from serving.consent import recorded_consents
    from serving.erasure import DIGEST_PREFIX, ERASURES_KEY

    client = sync_client(settings)
    opted_out = [user for user, c in recorded_consents(client).items() if c.personalization is False]
    digests = sorted(d.decode() for d in client.smembers(ERASURES_KEY))
    if not opted_out and not digests:
        return events
    return features.without_shoppers(
        events,
        spark.createDataFrame(
            pd.DataFrame({"user_id": pd.Series(opted_out, dtype=object)}), "user_id string"
        ),
        spark.createDataFrame(pd.DataFrame({"digest": pd.Series(digests, dtype=object)}), "digest string"),
        DIGEST_PREFIX,
    )


def _save_model(
    store: ModelStore,
    trained: TrainedModel,
    *,
    run_id: str,
    interval_end: datetime,
    as_of: datetime,
    fs: model.FeatureSet,
) -> int:
    similarity, ids = (
        trained.similarity if trained.similarity is not None else (sp.csr_matrix((0, 0)), pd.Index([]))
    )
    return store.save(
        meta={
            "run_id": run_id,
            "interval_end": interval_end.isoformat(),
            "as_of": as_of.isoformat(),
            "train_cutoff": trained.train_cutoff.isoformat() if trained.train_cutoff else as_of.isoformat(),
            "windows": trained.windows,
            "train_rows": trained.train_rows,
            "als": trained.als_params.__dict__,
            "evaluation": trained.evaluation,
            "shoppers": int(len(fs.users)),
            "items": int(len(fs.items)),
        },
        item_ids=trained.item_ids,
        item_factors=trained.item_factors,
        covis_item_ids=np.asarray(ids, dtype=object),
        covis=similarity,
        item_rebuy=trained.item_rebuy[0],
        overall_rebuy=trained.item_rebuy[1],
        booster=trained.booster,
    )


def stored_list_length(settings: Settings) -> int:
    """Items stored per list: the served length plus an overflow that refills a list at read time when
    some of its items became unavailable."""
    return settings.list_length + settings.list_overflow


def _segment_lists(
    settings: Settings,
    events: DataFrame,
    items: DataFrame,
    users: DataFrame | None,
    as_of: datetime,
    fs: model.FeatureSet,
) -> pd.DataFrame:
    """Segment lists (global, country, device, referrer, category) from every event before `as_of`."""
    # Segment lists are not personal, so anonymous sessions count; opted-out shoppers' events do not.
    segment_events = events.where(F.col("ts") < F.lit(as_of))
    if users is not None:
        opted_out = users.where(~F.col("consent_personalization")).select("user_id")
        segment_events = segment_events.join(opted_out, "user_id", "left_anti")
    popularity = features.segment_popularity(
        segment_events, items, as_of, settings.popularity_days
    ).toPandas()
    if popularity.empty:
        # A quiet window: fall back to all-time popularity so segment lists are never empty.
        popularity = features.segment_popularity(segment_events, items, as_of, 36_500).toPandas()
    popularity = _sorted(popularity, list(popularity.columns))
    return model.segment_lists(
        popularity,
        stored_list_length(settings),
        fresh=model.new_arrivals(fs.items, settings.new_item_days),
        explore_every=settings.explore_every,
    )


def _read_manifest(settings: Settings, run_id: str) -> dict[str, Any]:
    path = run_dir(settings, run_id) / "manifest.json"
    if not path.exists():
        raise PipelineError(
            f"run {run_id} has no computed lists ({path} missing): run the compute stage first"
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("mode") == "train":
        raise PipelineError(f"run {run_id} trained model {manifest['model']['number']} and wrote no lists")
    return manifest


# -- stage 2: validate --------------------------------------------------------------------------------
def validate_lists(settings: Settings, *, run_id: str, progress: Progress | None = None) -> dict[str, Any]:
    """Run the Great Expectations output gate; raise `ValidationFailed` (nothing published) on failure."""
    from quality.output_gate import validate_run_output  # GX is heavy: import only for this stage

    manifest = _read_manifest(settings, run_id)
    out = run_dir(settings, run_id)
    with _stage(settings, run_id, "validate", progress):
        catalog = Lake(settings.lake_dir).read_items()
        assert catalog is not None  # compute already required it
        user_lists = pd.read_parquet(out / "user_lists.parquet")
        result = validate_run_output(
            run_id=run_id,
            user_lists=user_lists,
            segment_lists=pd.read_parquet(out / "segment_lists.parquet"),
            catalog=catalog[["item_id", "in_stock"]],
            active_users=manifest["counts"]["modelled_users"],
            list_length=stored_list_length(settings),
            min_user_coverage=settings.min_user_coverage,
            quality_dir=settings.quality_dir,
            drift=_drift_baseline(settings, user_lists, manifest["version"]),
        )
        verdict = {
            "success": result.success,
            "failures": result.failures,
            "results_path": str(result.results_path),
            "docs_index": str(result.docs_index),
        }
        (out / "validation.json").write_text(json.dumps(verdict, indent=2))
        history(settings).update(run_id, validation=verdict)
        if not result.success:
            raise ValidationFailed(
                f"run {run_id} failed validation ({len(result.failures)} expectation(s)): "
                + "; ".join(result.failures[:5])
                + f". Data Docs: {result.docs_index}"
            )
    return verdict


def _drift_baseline(settings: Settings, user_lists: pd.DataFrame, version: str) -> Any:
    """The live version's lists of a fixed sample of this run's shoppers (None when nothing older is
    live: a first run, or a rerun of the live interval, has nothing to drift from)."""
    from jobs.publish import live_version, read_user_lists
    from quality.output_gate import DriftBaseline

    client = sync_client(settings)
    live = live_version(client)
    if live is None or live >= version:
        return None
    shoppers = pd.Series(user_lists["user_id"].unique())
    sample = shoppers.sample(min(settings.drift_sample, len(shoppers)), random_state=0).sort_values()
    return DriftBaseline(
        version=live,
        live_lists=read_user_lists(client, live, sample.astype(str).tolist()),
        min_list_overlap=settings.min_list_overlap,
        score_tolerance=settings.drift_score_tolerance,
        min_item_coverage_ratio=settings.min_item_coverage_ratio,
    )


# -- stage 3: publish ---------------------------------------------------------------------------------
def _user_lists_to_publish(path: Path) -> pd.DataFrame | SortedListsFile:
    """The shoppers' lists, streamed block by block when the file is sorted by shopper (every run since
    the loader streams; an older run's file is read whole)."""
    lists = SortedListsFile(path)
    return lists if lists.is_sorted() else pd.read_parquet(path)


def publish_lists(settings: Settings, *, run_id: str, progress: Progress | None = None) -> PublishResult:
    """Load the validated lists into Redis as a new version and switch the live pointer."""
    manifest = _read_manifest(settings, run_id)
    out = run_dir(settings, run_id)
    verdict_path = out / "validation.json"
    if not verdict_path.exists() or not json.loads(verdict_path.read_text())["success"]:
        raise PipelineError(f"run {run_id} has not passed validation: refusing to publish")
    with _stage(settings, run_id, "publish", progress):
        client = sync_client(settings)
        result = publish_version(
            client,
            version=manifest["version"],
            user_lists=_user_lists_to_publish(out / "user_lists.parquet"),
            segment_lists=pd.read_parquet(out / "segment_lists.parquet"),
            manifest={
                "run_id": run_id,
                "generated_at": manifest["interval_end"],
                "as_of": manifest["as_of"],
                "model": {k: v for k, v in manifest["model"].items() if k != "path"},
            },
            keep_versions=settings.keep_versions,
            kind="delta" if manifest.get("mode") == "incremental" else "full",
            item_lists=pd.read_parquet(out / "item_lists.parquet")
            if (out / "item_lists.parquet").exists()
            else None,
            on_step=(lambda name: progress(f"publish: {name}")) if progress else None,
        )
    status = "published" if result.switched else "already_live"
    history(settings).update(
        run_id,
        status=status,
        published_version=result.version,
        publish_kind=result.kind,
        digest=result.digest,
    )
    if progress and not result.switched:
        same = "identical to" if result.identical else "DIFFERENT from"
        progress(
            f"version {result.version} is already live (this interval was published before); recomputed lists are {same} it"
        )
    return result


def _departments(out: Path) -> dict[str, str] | None:
    path = out / "departments.parquet"
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    return dict(zip(frame["item_id"].astype(str), frame["department"].astype(str), strict=True))


def run_refresh(
    settings: Settings,
    *,
    interval_end: datetime,
    interval_start: datetime | None = None,
    mode: Mode = "full",
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RefreshResult:
    """Every stage in a row (input gate, compute, output gate, publish): what `carousel refresh` runs."""
    run_id = run_id or f"manual__{version_for(interval_end)}"
    with _stage(settings, run_id, "inputs", progress):
        try:
            check_inputs(settings, run_id=run_id, interval_end=interval_end)
        except InputValidationFailed as exc:
            raise ValidationFailed(str(exc)) from None
    manifest = compute_lists(
        settings,
        run_id=run_id,
        interval_end=interval_end,
        interval_start=interval_start,
        mode=mode,
        progress=progress,
    )
    validate_lists(settings, run_id=run_id, progress=progress)
    published = publish_lists(settings, run_id=run_id, progress=progress)
    record = history(settings).get(run_id) or {}
    return RefreshResult(run_id, published.version, published, record.get("stages", {}), manifest["counts"])


# -- offline evaluation -------------------------------------------------------------------------------
_EVAL_CACHE: dict[tuple[Any, ...], RankedCandidates] = {}


def _catalog_from_events(history: pd.DataFrame) -> pd.DataFrame:
    """A minimal catalog when only events are given: every item seen, in stock, one unknown category."""
    grouped = history.groupby("item_id", observed=True)
    return pd.DataFrame(
        {
            "item_id": grouped["ts"].min().index.astype(str),
            "category": "unknown",
            "price": grouped["price"].median().to_numpy(dtype="float64"),
            "in_stock": True,
            "first_seen": grouped["ts"].min().to_numpy(),
        }
    )


def _cooc_params(tuned: Any) -> model.CoocParams:
    """Co-visitation settings from the evaluation's tuning (unknown keys ignored), else the defaults."""
    if not isinstance(tuned, dict):
        return model.CoocParams()
    known = set(model.CoocParams.__dataclass_fields__)
    return model.CoocParams(**{k: v for k, v in tuned.items() if k in known})


def evaluation_ranker(ctx: Any, users: np.ndarray, k: int, exclude_bought: bool) -> pd.DataFrame:
    """The production ranker as an offline-evaluation Recommender (see `jobs/evaluate.py`).

    Runs exactly the pipeline's `rank_candidates` on the evaluation's history (events before the
    cutoff) and returns (user_id, item_id, rank). With `exclude_bought`, items the shopper bought before
    the cutoff are left out (the `new_items` task).
    """
    from configs.settings import get_settings

    settings = get_settings()
    cutoff = pd.Timestamp(ctx.cutoff).to_pydatetime()
    # One training and scoring of every known shopper serves both tasks (they ask for different users).
    key = (cutoff, len(ctx.history))
    if key not in _EVAL_CACHE:
        _EVAL_CACHE.clear()
        spark = spark_session(settings)
        columns = ["user_id", "session_id", "item_id", "event_type", "ts", "quantity", "price", "country"]
        history = ctx.history[columns].copy()
        for col in ("user_id", "session_id", "item_id", "event_type", "country"):
            history[col] = history[col].astype(object).where(history[col].notna(), None)
        events = spark.createDataFrame(history)
        catalog = ctx.items if ctx.items is not None else _catalog_from_events(ctx.history)
        catalog = catalog[["item_id", "category", "price", "in_stock", "first_seen"]].copy()
        catalog["item_id"] = catalog["item_id"].astype(str)
        catalog["category"] = catalog["category"].astype(object).where(catalog["category"].notna(), "unknown")
        items = spark.createDataFrame(catalog)
        tuned = getattr(ctx, "tuned", {}) or {}
        base = ModelParams.from_settings(settings)
        params = ModelParams(
            als=model.AlsParams(**tuned["als"]) if isinstance(tuned.get("als"), dict) else base.als,
            ranker=base.ranker,
            label_days=int(tuned.get("label_days", base.label_days)),
            candidates_per_user=base.candidates_per_user,
            new_item_days=base.new_item_days,
            train_windows=base.train_windows,
            cooc=_cooc_params(tuned.get("cooccurrence")),
        )
        modelling = features.modelling_events(events, None, cutoff).cache()
        _EVAL_CACHE[key] = rank_candidates(modelling, items, cutoff, params)
    ranked = _EVAL_CACHE[key]
    wanted = pd.Index(np.asarray(users, dtype=object))
    featured, scores = ranked.featured, ranked.scores
    keep = featured["user_id"].isin(wanted).to_numpy()
    if exclude_bought:
        # The same ranker orders the items the shopper never bought (a ranker trained on first purchases
        # alone did worse on validation: re-buy examples teach it what a shopper's taste is).
        keep &= featured["ui_purchases"].to_numpy() == 0
    featured, scores = featured[keep], scores[keep]
    fill = ranked.features.popular_items(k * 4 + 50)
    lists = model.top_lists(featured, scores, k + 50, fill=fill)
    if exclude_bought:
        bought = ranked.features.user_item.loc[
            ranked.features.user_item["ui_purchases"] > 0, ["user_id", "item_id"]
        ]
        lists = lists.merge(bought.assign(_bought=True), on=["user_id", "item_id"], how="left")
        lists = lists[lists["_bought"].isna()].drop(columns="_bought")
    lists = lists.sort_values(["user_id", "rank"]).groupby("user_id", sort=False).head(k)
    lists["rank"] = lists.groupby("user_id").cumcount() + 1
    return lists[["user_id", "item_id", "rank"]].reset_index(drop=True)

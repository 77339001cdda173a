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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from carousel.lake import Lake
from carousel.redis_conn import sync_client
from configs.settings import Settings
from jobs import features, model
from jobs.input_check import InputValidationFailed, check_inputs
from jobs.publish import PublishResult, publish_version
from jobs.run_history import RunHistory
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
    safe = "".join(c if c.isalnum() or c in "-_.T" else "_" for c in run_id)
    return settings.runs_dir / safe


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
    events: DataFrame, items: DataFrame, as_of: datetime, cooc: model.CoocParams | None = None
) -> model.FeatureSet:
    cooc = cooc or model.CoocParams()
    interactions = features.als_interactions(events)
    return model.FeatureSet(
        as_of=pd.Timestamp(as_of),
        interactions=interactions.toPandas(),
        user_item=features.user_item_stats(events, as_of).toPandas(),
        items=features.item_stats(events, items, as_of, model.POP_WINDOWS).toPandas(),
        users=features.user_stats(events, as_of).toPandas(),
        affinity=features.user_category_affinity(events, items).toPandas(),
        baskets=features.session_baskets(events, as_of, cooc.basket_half_life).toPandas(),
        interest=features.shopper_interest(
            events, as_of, cooc.half_life_days, cooc.cart_weight, cooc.view_weight
        ).toPandas(),
    )


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
class RankedCandidates:
    """Candidates of every scored shopper with their features and ranker scores, as of one moment."""

    features: model.FeatureSet
    featured: pd.DataFrame
    scores: np.ndarray
    covis: model.CoVisitation
    booster: lgb.Booster | None
    train_rows: int
    train_cutoff: datetime


def _training_window(
    events: DataFrame, items: DataFrame, cutoff: datetime, label_end: datetime, params: ModelParams
) -> pd.DataFrame | None:
    """Candidates with features as of `cutoff`, labelled by the purchases in [cutoff, label_end)."""
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
    train_users = fs.users["user_id"][fs.users["user_id"].isin(future["user_id"])].to_numpy()
    if not len(train_users) or fs.interactions.empty:
        return None
    featured, _ = _featured_candidates(fs, train_users, params)
    return model.label_candidates(featured, future)


def _featured_candidates(
    fs: model.FeatureSet, users: np.ndarray, params: ModelParams
) -> tuple[pd.DataFrame, model.CoVisitation]:
    """ALS and co-visitation fitted on `fs`, then every candidate of `users` with its features: the one
    path shared by training windows and scoring, so both see exactly the same features."""
    als = model.fit_als(fs.interactions, params.als)
    covis = model.co_visitation(fs, users, params=params.cooc)
    cands = model.build_candidates(
        fs,
        als,
        users,
        covis,
        als_k=params.candidates_per_user,
        new_item_days=params.new_item_days,
    )
    return model.add_features(cands, fs, als), covis


def rank_candidates(
    events: DataFrame,
    items: DataFrame,
    as_of: datetime,
    params: ModelParams,
    *,
    users: np.ndarray | None = None,
    progress: Progress | None = None,
) -> RankedCandidates:
    """Train the ranker on earlier windows and score every shopper's candidates at `as_of`.

    `events` are modelling events (known, consenting shoppers) strictly before `as_of`. The ranker learns
    from `train_windows` windows: features computed up to `as_of - w * label_days` with the purchases of
    the following `label_days` as labels (more windows, more examples of sparse shoppers); it then
    scores candidates built from all events up to `as_of`. `users` limits scoring
    to some shoppers (the evaluation's test users); default: every shopper with events.
    """
    train_cutoff = as_of - timedelta(days=params.label_days)
    fs_full = _collect_feature_set(events, items, as_of, params.cooc)
    frames = []
    for window in range(1, params.train_windows + 1):
        # Window w: features up to as_of - w*label_days, labels = purchases in the label_days after.
        cutoff = as_of - timedelta(days=params.label_days * window)
        labelled = _training_window(events, items, cutoff, cutoff + timedelta(days=params.label_days), params)
        if labelled is not None:
            frames.append(labelled.assign(user_id=f"w{window}:" + labelled["user_id"].astype(str)))
            if progress:
                progress(
                    f"training window {window}: {labelled['user_id'].nunique()} shoppers from {cutoff:%Y-%m-%d}"
                )
    train = pd.concat(frames, ignore_index=True) if frames else None
    train_rows = 0 if train is None else len(train)
    booster = model.train_ranker(train, params.ranker) if train is not None else None

    score_users = fs_full.users["user_id"].to_numpy() if users is None else np.asarray(users, dtype=object)
    if progress:
        progress(f"scoring {len(score_users)} shoppers")
    featured, covis = _featured_candidates(fs_full, score_users, params)
    scores = model.score_candidates(featured, booster)
    return RankedCandidates(fs_full, featured, scores, covis, booster, train_rows, train_cutoff)


def compute_lists(
    settings: Settings, *, run_id: str, interval_end: datetime, progress: Progress | None = None
) -> dict[str, Any]:
    """Extract the lake, build features, train the ranker on the earlier window, write the run's lists."""
    interval_end = interval_end.astimezone(UTC)
    history(settings).update(
        run_id, status="running", interval_end=interval_end.isoformat(), version=version_for(interval_end)
    )
    with _stage(settings, run_id, "compute", progress):
        manifest = _compute(settings, run_id=run_id, interval_end=interval_end, progress=progress)
    history(settings).update(run_id, counts=manifest["counts"], model=manifest["model"])
    return manifest


def _compute(
    settings: Settings, *, run_id: str, interval_end: datetime, progress: Progress | None
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

    modelling = features.modelling_events(events, users, as_of).cache()
    if progress:
        progress(f"as of {as_of.isoformat()}: building features")
    params = ModelParams.from_settings(settings)
    ranked = rank_candidates(modelling, items, as_of, params, progress=progress)
    user_lists = model.top_lists(
        ranked.featured,
        ranked.scores,
        settings.list_length,
        fill=ranked.features.popular_items(settings.list_length * 2),
    )
    titles = items.select("item_id", "title").toPandas().set_index("item_id")["title"]
    user_lists = model.explain_goes_with(user_lists, ranked.covis, titles)
    fs_full = ranked.features
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
    seg_lists = model.segment_lists(
        popularity,
        settings.list_length,
        fresh=model.new_arrivals(fs_full.items, settings.new_item_days),
        explore_every=settings.explore_every,
    )
    modelling.unpersist()

    out = run_dir(settings, run_id)
    out.mkdir(parents=True, exist_ok=True)
    user_lists.to_parquet(out / "user_lists.parquet", index=False)
    seg_lists.to_parquet(out / "segment_lists.parquet", index=False)
    if ranked.booster is not None:
        ranked.booster.save_model(str(out / "ranker.txt"))
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "version": version_for(interval_end),
        "interval_end": interval_end.isoformat(),
        "as_of": as_of.isoformat(),
        "train_cutoff": ranked.train_cutoff.isoformat(),
        "model": {
            "als": params.als.__dict__,
            "ranker": "lightgbm-lambdarank"
            if ranked.booster is not None
            else "none: no purchases in label window",
            "ranker_train_rows": ranked.train_rows,
        },
        "counts": {
            "modelled_users": int(len(fs_full.users)),
            "items": int(len(fs_full.items)),
            "in_stock_items": int(fs_full.items["in_stock"].sum()),
            "interactions": int(len(fs_full.interactions)),
            "user_lists": int(user_lists["user_id"].nunique()),
            "segment_lists": int(seg_lists["segment"].nunique()),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _read_manifest(settings: Settings, run_id: str) -> dict[str, Any]:
    path = run_dir(settings, run_id) / "manifest.json"
    if not path.exists():
        raise PipelineError(
            f"run {run_id} has no computed lists ({path} missing): run the compute stage first"
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
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
        result = validate_run_output(
            run_id=run_id,
            user_lists=pd.read_parquet(out / "user_lists.parquet"),
            segment_lists=pd.read_parquet(out / "segment_lists.parquet"),
            catalog=catalog[["item_id", "in_stock"]],
            active_users=manifest["counts"]["modelled_users"],
            list_length=settings.list_length,
            min_user_coverage=settings.min_user_coverage,
            quality_dir=settings.quality_dir,
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


# -- stage 3: publish ---------------------------------------------------------------------------------
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
            user_lists=pd.read_parquet(out / "user_lists.parquet"),
            segment_lists=pd.read_parquet(out / "segment_lists.parquet"),
            manifest={
                "run_id": run_id,
                "generated_at": manifest["interval_end"],
                "as_of": manifest["as_of"],
                "model": manifest["model"],
            },
            keep_versions=settings.keep_versions,
        )
    status = "published" if result.switched else "already_live"
    history(settings).update(run_id, status=status, published_version=result.version)
    if progress and not result.switched:
        progress(f"version {result.version} is already live: this interval was published before")
    return result


def run_refresh(
    settings: Settings, *, interval_end: datetime, run_id: str | None = None, progress: Progress | None = None
) -> RefreshResult:
    """Every stage in a row (input gate, compute, output gate, publish): what `carousel refresh` runs."""
    run_id = run_id or f"manual__{version_for(interval_end)}"
    with _stage(settings, run_id, "inputs", progress):
        try:
            check_inputs(settings, run_id=run_id, interval_end=interval_end)
        except InputValidationFailed as exc:
            raise ValidationFailed(str(exc)) from None
    manifest = compute_lists(settings, run_id=run_id, interval_end=interval_end, progress=progress)
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

"""Stage `compute` (and `train`, its train mode): the run's lists, written into the run's folder.

Extract: the lake's events before the interval end (Spark), without the shoppers who do not consent to
personalization or were erased; the model (trained here, or the newest stored one). Transform: the
feature sets (Spark), every shopper scored block by block (`jobs.ranking.scoring.score_block`), segment
lists and similar items. Load: `user_lists.parquet` (sorted by shopper, for the loader to stream),
`segment_lists.parquet`, `item_lists.parquet`, `catalog.parquet` and `manifest.json`.

Modes (`jobs.stages.MODES`): `train` fits a new numbered model and writes no lists; `full` trains and
scores every shopper; `rescore` scores every shopper with the newest stored model; `incremental` loads
the newest model and scores only the shoppers with events in the data interval, folding them into ALS
with the item factors fixed; `auto` picks one (`resolve_mode`). Segment lists are rebuilt by every mode
that writes lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from carousel.cache.catalog import CATALOG_FIELDS
from carousel.cache.client import sync_client
from carousel.cache.shoppers import erased_digests, recorded_consents
from carousel.cache.versions import live_version, read_meta
from carousel.lake import Lake, micros, newest_event_us
from carousel.rules.consent import opted_out
from configs.settings import Settings
from jobs.features import transforms
from jobs.features.collect import basket_frame, item_frame, shopper_frames, shopper_pairs
from jobs.features.frames import sorted_frame
from jobs.features.session import spark_session
from jobs.ranking.lists import published_similar_items
from jobs.ranking.model import ModelParams, TrainedModel, save_model
from jobs.ranking.segments import new_arrivals, segment_lists
from jobs.ranking.spark_lists import ScoredShoppers, ScoringJob, write_user_lists
from jobs.ranking.store import ModelStore
from jobs.ranking.training import train_model
from jobs.stages.manifest import ModelInfo, RunCounts, RunManifest, ScoringFigures
from jobs.stages.run import PipelineError, StageResult, StageRun, data_interval, version_for


def run(job: StageRun) -> StageResult:
    manifest = compute_lists(job)
    lists = manifest.counts.user_lists
    return StageResult(
        f"{manifest.mode} run with model {manifest.model.number}"
        + (f": {lists:,} personal lists" if lists is not None else ""),
        manifest,
    )


def compute_lists(job: StageRun) -> RunManifest:
    """Build the run's lists (or, in train mode, its model) into the run's folder."""
    start, end = data_interval(job)
    settings = job.settings
    job.history.update(
        job.run_id,
        status="running",
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        version=version_for(end),
    )
    mode = resolve_mode(settings, job.mode)
    inputs = _read_inputs(settings, end, active_since=start if mode == "incremental" else None)
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    params = ModelParams.from_settings(settings)
    store = ModelStore(settings.models_dir)
    counts, scoring, items = None, None, None
    if mode in ("full", "train"):
        job.say(f"{mode} run as of {inputs.as_of.isoformat()}: training")
        trained, fs = train_model(
            inputs.modelling, inputs.items, inputs.as_of, params, job.progress, scoring_frames=False
        )
        number = save_model(store, trained, run_id=job.run_id, interval_end=end, as_of=inputs.as_of, fs=fs)
        job.say(f"model {number} saved under {store.path(number)}: {trained.evaluation}")
        if trained.guard is not None and trained.guard.active:
            job.say(f"a baseline beat the ranker on its window: bands served by {trained.guard.serve}")
        counts = RunCounts(
            modelled_users=int(len(fs.users)) if trained.fit_shoppers is None else trained.fit_shoppers[1],
            items=int(len(fs.items)),
            in_stock_items=int(fs.items["in_stock"].sum()),
            interactions=int(len(fs.interactions)),
        )
        # The training feature set's items frame is the one scoring needs: computed once.
        items = fs.items
        del fs
    else:
        # A rerun of this run reuses the model it used first, so the interval's lists come out the same.
        stored = store.load(_model_of_earlier_attempt(folder))
        number, trained = stored.number, TrainedModel.from_stored(stored, params)
        job.say(f"{mode} run with model {number}")
    if mode != "train":
        counts, scoring = _write_lists(
            settings,
            inputs,
            trained,
            params,
            mode=mode,
            folder=folder,
            shoppers=inputs.active,
            items=items,
            progress=job.say,
        )
        job.say(
            f"{counts.user_lists:,} personal lists written by Spark tasks in {scoring.seconds:.1f}s on "
            f"{scoring.cores} cores: {scoring.shoppers_per_core_s:.0f} shoppers per core-second"
        )
    assert counts is not None
    manifest = RunManifest(
        run_id=job.run_id,
        mode=mode,
        version=version_for(end),
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        as_of=inputs.as_of.isoformat(),
        model=_model_info(params, trained, number),
        counts=counts,
        scoring=scoring,
    )
    if mode != "train":
        manifest.model.path = str(store.path(number))
    inputs.events.unpersist()
    inputs.modelling.unpersist()
    manifest.write(folder)
    # A train run ends here; a run that writes lists goes on to validate and publish.
    done = {"status": "trained"} if mode == "train" else {}
    job.history.update(
        job.run_id,
        mode=mode,
        counts=manifest.counts.model_dump(exclude_none=True),
        model=manifest.model.model_dump(exclude_none=True),
        **done,
    )
    return manifest


def resolve_mode(settings: Settings, mode: str) -> str:
    """`auto`: train when there is no model yet, or the newest was trained on other features than this
    code computes (an upgrade changed them: the 15-minute runs heal themselves rather than fail until
    the nightly retrain); score everyone when nothing is live or a newer model than the live version's
    has been trained (the nightly retrain); else incremental."""
    if mode != "auto":
        return mode
    store = ModelStore(settings.models_dir)
    latest = store.latest()
    if latest is None or store.features_differ(latest) is not None:
        return "full"
    client = sync_client(settings)
    live = live_version(client)
    meta = read_meta(client, live) if live else None
    if meta is None:
        return "rescore"
    live_model = (meta.get("model") or {}).get("number")
    return "incremental" if live_model == latest else "rescore"


@dataclass(frozen=True)
class _Inputs:
    """What the run reads from the lake, as Spark frames."""

    # Every event before the interval end, without the shoppers who do not consent or were erased
    # (segment lists count anonymous sessions too).
    events: DataFrame
    items: DataFrame
    # Known shoppers' events before `as_of`: what the models learn from and score.
    modelling: DataFrame
    as_of: datetime
    # An incremental run's shoppers: those with events since the interval start (None: everyone).
    active: DataFrame | None = None


def _read_inputs(settings: Settings, interval_end: datetime, *, active_since: datetime | None) -> _Inputs:
    """The run's inputs; with `active_since` (an incremental run), only what scoring the shoppers
    active since then reads."""
    lake = Lake(settings.lake_dir)
    if not lake.has_data():
        raise PipelineError(
            f"the lake at {settings.lake_dir} has no events or items yet: run `carousel import ...` first"
        )
    spark = spark_session(settings)
    events = spark.read.parquet(str(lake.events_dir)).where(F.col("ts") < F.lit(interval_end))
    items = spark.read.parquet(str(lake.items_path))
    newest = _newest_event_before(spark, lake, interval_end)
    if newest is None:
        raise PipelineError(f"the lake holds no events before {interval_end.isoformat()}")
    # The model's "now" is just after the newest event: windows stay meaningful on historic data.
    as_of = min(newest + timedelta(seconds=1), interval_end)
    events = _without_withdrawn_shoppers(
        settings, spark, lake, _attributed(spark, lake, events, interval_end)
    )
    if active_since is None:
        # Training and scoring everyone read the modelling events many times over.
        return _Inputs(events, items, transforms.modelling_events(events, as_of).cache(), as_of)
    modelling = transforms.modelling_events(events, as_of)
    active = modelling.where(F.col("ts") >= F.lit(active_since)).select("user_id").distinct()
    # One read of the lake for the item statistics, the segment lists and the active shoppers' frames.
    events = transforms.purchases_and_events_of(events, active).cache()
    return _Inputs(events, items, transforms.modelling_events(events, as_of), as_of, active)


def _newest_event_before(spark: SparkSession, lake: Lake, end: datetime) -> datetime | None:
    """The newest event time before `end`: from the parts' footers, reading only the parts that hold
    events at or after `end` (or no time statistics), instead of every event's time."""
    end_us = micros(end)
    newest_us = {part: newest_event_us(part) for part in lake.event_files()}
    newest = max((us for us in newest_us.values() if us < end_us), default=None)
    straddling = [str(part) for part, us in newest_us.items() if us >= end_us]
    if straddling:
        row = (
            spark.read.parquet(*straddling)
            .where(F.col("ts") < F.lit(end))
            .agg(F.unix_micros(F.max("ts")).alias("newest"))
            .first()
        )
        if row is not None and row["newest"] is not None:
            newest = row["newest"] if newest is None else max(newest, row["newest"])
    return None if newest is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest)


def _attributed(spark: SparkSession, lake: Lake, events: DataFrame, interval_end: datetime) -> DataFrame:
    """Anonymous events of sessions signed in to before the interval end, as their shoppers' (a rerun of
    an interval sees the links it saw, not later ones)."""
    parts = lake.session_link_files()
    if not parts:
        return events
    links = spark.read.parquet(*(str(p) for p in parts)).where(F.col("linked_at") < F.lit(interval_end))
    return transforms.attribute_sessions(events, links)


def _without_withdrawn_shoppers(
    settings: Settings, spark: SparkSession, lake: Lake, events: DataFrame
) -> DataFrame:
    """`events` without the shoppers who do not consent to personalization (the users table and the
    API's consent records, `carousel.rules.consent`) and without erased shoppers."""
    client = sync_client(settings)
    out = sorted(opted_out(lake.opted_out("personalization"), recorded_consents(client), "personalization"))
    digests = sorted(erased_digests(client))
    return transforms.without_shoppers(
        events,
        _frame(spark, "user_id", out) if out else None,
        _frame(spark, "digest", digests) if digests else None,
        settings.erasure_salt_value() if digests else "",
    )


def _frame(spark: SparkSession, column: str, values: list[str]) -> DataFrame:
    """A one-column Spark frame of strings from the driver."""
    return spark.createDataFrame(pd.DataFrame({column: pd.Series(values, dtype=object)}), f"{column} string")


def _model_of_earlier_attempt(folder: Path) -> int | None:
    """The model an earlier attempt of this run scored with, if it got that far."""
    path = folder / "manifest.json"
    return RunManifest.model_validate_json(path.read_text()).model.number if path.exists() else None


def _model_info(params: ModelParams, trained: TrainedModel, number: int) -> ModelInfo:
    return ModelInfo(
        number=number,
        als=params.als.__dict__,
        ranker="lightgbm-lambdarank" if trained.booster is not None else "none: no purchases in label window",
        train_cutoff=trained.train_cutoff.isoformat() if trained.train_cutoff else None,
        ranker_train_rows=trained.train_rows,
        evaluation=trained.evaluation,
    )


def _write_lists(
    settings: Settings,
    inputs: _Inputs,
    trained: TrainedModel,
    params: ModelParams,
    *,
    mode: str,
    folder: Path,
    shoppers: DataFrame | None,
    items: pd.DataFrame | None,
    progress: Callable[[str], None],
) -> tuple[RunCounts, ScoringFigures]:
    """Every list file of the run: the personal lists of every modelled shopper (or of `shoppers`)
    scored by Spark tasks (`jobs.ranking.spark_lists`), segment lists, similar items and the catalog.
    `items`: the items frame as of the run, when training already computed it."""
    length = settings.stored_list_length
    scored, items = _personal_lists(settings, inputs, trained, params, folder, shoppers, items, progress)
    segments = _segment_lists(settings, _segment_popularity(settings, inputs), items)
    segments.to_parquet(folder / "segment_lists.parquet", index=False)
    progress(f"{segments['segment'].nunique():,} segment lists computed")
    # The items table as the run read it, with the attributes the API shows (`carousel.cache.catalog`).
    inputs.items.select("item_id", *CATALOG_FIELDS).coalesce(1).write.mode("overwrite").parquet(
        str(folder / "catalog.parquet")
    )
    if mode != "incremental":
        # Similar items change with the model only: full versions carry them, deltas inherit the base's.
        baskets = basket_frame(inputs.events, inputs.as_of, params.cooc.basket_half_life)
        published_similar_items(baskets, items, length, params.cooc).to_parquet(
            folder / "item_lists.parquet", index=False
        )
    counts = RunCounts(
        modelled_users=scored.rows["users"],
        items=int(len(items)),
        in_stock_items=int(items["in_stock"].sum()),
        interactions=scored.rows["interactions"],
        user_lists=scored.lists,
        segment_lists=int(segments["segment"].nunique()),
    )
    return counts, ScoringFigures(
        shoppers=scored.rows["users"], seconds=round(scored.seconds, 2), cores=scored.cores
    )


def _personal_lists(
    settings: Settings,
    inputs: _Inputs,
    trained: TrainedModel,
    params: ModelParams,
    folder: Path,
    shoppers: DataFrame | None,
    items: pd.DataFrame | None,
    progress: Callable[[str], None],
) -> tuple[ScoredShoppers, pd.DataFrame]:
    """The personal lists of every modelled shopper (or of `shoppers`), scored by Spark tasks, and the
    items frame they were scored with."""
    modelling, as_of = inputs.modelling, inputs.as_of
    # The given shoppers' events are read by several feature frames: kept once, they are a small share.
    own = modelling if shoppers is None else modelling.join(F.broadcast(shoppers), "user_id").cache()
    # Four feature frames read the (shopper, item) statistics: kept once, they are aggregated once.
    pairs = shopper_pairs(own, as_of, params.cooc).cache()
    if items is None:
        items = item_frame(modelling, inputs.items, as_of)
        progress(f"statistics of {len(items):,} items computed")
    titles = inputs.items.select("item_id", "title").toPandas().set_index("item_id")["title"]
    scoring = ScoringJob(trained, params, pd.Timestamp(as_of), items, titles, settings.stored_list_length)
    try:
        scored = write_user_lists(
            own.sparkSession,
            shopper_frames(own, inputs.items, pairs, as_of),
            scoring,
            folder / "user_lists.parquet",
            progress,
        )
    finally:
        pairs.unpersist()
        if shoppers is not None:
            own.unpersist()
    return scored, items


def _segment_popularity(settings: Settings, inputs: _Inputs) -> pd.DataFrame:
    """In-stock items by buyers per segment (global, country, device, referrer, category) from every
    event before `as_of`: anonymous sessions count, shoppers without personalization consent do not."""
    as_of = inputs.as_of
    segment_events = inputs.events.where(F.col("ts") < F.lit(as_of))
    popularity = transforms.segment_popularity(
        segment_events, inputs.items, as_of, settings.popularity_days
    ).toPandas()
    if popularity.empty:
        # A quiet window: fall back to all-time popularity so segment lists are never empty.
        popularity = transforms.segment_popularity(segment_events, inputs.items, as_of, 36_500).toPandas()
    return sorted_frame(popularity, list(popularity.columns))


def _segment_lists(settings: Settings, popularity: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    return segment_lists(
        popularity,
        settings.stored_list_length,
        fresh=new_arrivals(items, settings.new_item_days),
        explore_every=settings.explore_every,
    )

"""What a version would have published for visitors at the evaluation's cutoff, built as the compute
stage builds it (`jobs.stages.compute`): segment lists over `segment_popularity`, similar-item lists over
the basket cosine, the item -> department map. The pipeline's Spark transforms run on the history before
the cutoff (`jobs.evaluation.spark_history`), with the batch's settings and default co-visitation
parameters, never values chosen on the test period."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from carousel.rules.segments import department
from carousel.schema import EVENTS_SCHEMA
from configs.settings import get_settings
from jobs.evaluation.protocol import EvalContext
from jobs.evaluation.sessions import PublishedLists
from jobs.evaluation.spark_history import history_frames
from jobs.features import transforms
from jobs.features.collect import basket_frame, item_frame
from jobs.features.frames import sorted_frame
from jobs.features.session import spark_session
from jobs.features.signals import CoocParams
from jobs.ranking.lists import published_similar_items
from jobs.ranking.segments import new_arrivals, segment_lists

# Popularity over this many days when the window before the cutoff holds no purchase (as the batch does).
_ALL_TIME_DAYS = 36_500


def published_lists(ctx: EvalContext) -> PublishedLists:
    """The segment lists, similar-item lists and departments a full run at ``ctx.cutoff`` would publish."""
    settings = get_settings()
    spark = spark_session(settings)
    events, items = history_frames(spark, ctx, EVENTS_SCHEMA.names)
    cutoff = pd.Timestamp(ctx.cutoff).to_pydatetime()
    modelling = transforms.modelling_events(events, cutoff)
    item_stats = item_frame(modelling, items, cutoff)
    popularity = transforms.segment_popularity(events, items, cutoff, settings.popularity_days).toPandas()
    if popularity.empty:
        popularity = transforms.segment_popularity(events, items, cutoff, _ALL_TIME_DAYS).toPandas()
    segments = segment_lists(
        sorted_frame(popularity, list(popularity.columns)),
        settings.stored_list_length,
        fresh=new_arrivals(item_stats, settings.new_item_days),
        explore_every=settings.explore_every,
    )
    cooc = CoocParams()
    baskets = basket_frame(events, cutoff, cooc.basket_half_life)
    similar = published_similar_items(baskets, item_stats, settings.stored_list_length, cooc)
    departments = item_stats["category"].astype(str).map(department)
    return PublishedLists(
        segments=_served_lists(segments, "segment"),
        similar=_served_lists(similar, "anchor_id"),
        departments=dict(zip(item_stats["item_id"], departments, strict=True)),
    )


def _served_lists(lists: pd.DataFrame, owner: str) -> dict[str, Sequence[dict[str, Any]]]:
    """Stored list rows (``owner, rank, item_id, score, reason_code, reason_text``) as the API reads
    them: per owner, ``{"item_id", "score", "reason": {"code", "text"}}`` in rank order."""
    lists = lists.sort_values([owner, "rank"], kind="stable")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, item_id, score, code, text in zip(
        lists[owner],
        lists["item_id"],
        lists["score"],
        lists["reason_code"],
        lists["reason_text"],
        strict=True,
    ):
        out.setdefault(name, []).append(
            {"item_id": item_id, "score": float(score), "reason": {"code": code, "text": text}}
        )
    return dict(out)

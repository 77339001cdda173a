"""Spark transforms on small hand-made frames, compared with hand-computed expectations (a local Spark
session: the integration tier)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from storefront_auth import ERASURE_SALT as SALT

from carousel.rules.erasure import erasure_digest
from jobs.features import signals, transforms

pytestmark = pytest.mark.integration

AS_OF = datetime(2026, 11, 29, tzinfo=UTC)


def _ev(spark: SparkSession, rows: list[tuple[object, ...]]) -> object:
    cols = (
        "user_id string, session_id string, item_id string, event_type string, ts timestamp, "
        "quantity int, price double, country string"
    )
    return spark.createDataFrame(rows, cols)


@pytest.fixture
def events(spark: SparkSession) -> object:
    return _ev(
        spark,
        [
            ("u1", "s1", "a", "view", datetime(2026, 11, 20, tzinfo=UTC), 1, 2.0, "France"),
            ("u1", "s1", "a", "add_to_cart", datetime(2026, 11, 20, 0, 1, tzinfo=UTC), 1, 2.0, "France"),
            ("u1", "s1", "a", "purchase", datetime(2026, 11, 20, 0, 2, tzinfo=UTC), 3, 2.0, "France"),
            ("u1", "s2", "a", "purchase", datetime(2026, 11, 28, tzinfo=UTC), 1, 2.0, "France"),
            ("u2", "s3", "b", "view", datetime(2026, 11, 1, tzinfo=UTC), 1, 9.0, "Spain"),
            (None, "s4", "b", "purchase", datetime(2026, 11, 27, tzinfo=UTC), 1, 9.0, "Spain"),
            ("u3", "s5", "b", "purchase", datetime(2026, 11, 30, tzinfo=UTC), 1, 9.0, "Spain"),
        ],
    )


def test_modelling_events_drop_anonymous_future_and_opted_out(spark: SparkSession, events: object) -> None:
    """Only known shoppers' events before as_of are modelled, without those left out (opted out, or
    erased: known by the digest `erasure_digest` gives)."""
    opted_out = spark.createDataFrame([("u2",)], "user_id string")
    erased = spark.createDataFrame([(erasure_digest("u3", SALT),)], "digest string")
    kept = transforms.without_shoppers(events, opted_out, erased, SALT)  # type: ignore[arg-type]
    assert sorted({r.user_id for r in transforms.modelling_events(kept, AS_OF).collect()}) == ["u1"]
    everyone = transforms.modelling_events(transforms.without_shoppers(events, None, None, SALT), AS_OF)  # type: ignore[arg-type]
    assert sorted({r.user_id for r in everyone.collect()}) == ["u1", "u2"]


def test_interaction_weights_sum_and_damp(spark: SparkSession, events: object) -> None:
    """Weights are log1p of summed event strengths per (user, item)."""
    touches = transforms.session_touches(events.where("user_id = 'u1'"))  # type: ignore[attr-defined]
    got = transforms.interaction_weights(transforms.pair_stats(touches, AS_OF, None, 0.5, 0.1))
    expected = spark.createDataFrame(
        [Row(user_id="u1", item_id="a", weight=math.log1p(1 + 3 + 6 + 6))],
        "user_id string, item_id string, weight float",
    )
    assertDataFrameEqual(got, expected, rtol=1e-6)


def test_user_item_stats_count_purchase_sessions_and_recency(spark: SparkSession, events: object) -> None:
    """Purchases are counted per session, units summed, recency measured from as_of."""
    touches = transforms.session_touches(events.where("user_id = 'u1'"))  # type: ignore[attr-defined]
    pairs = transforms.pair_stats(touches, AS_OF, None, cart_weight=0.5, view_weight=0.1)
    got = transforms.user_item_stats(pairs).collect()[0]
    assert (got.ui_purchases, got.ui_units, got.ui_views, got.ui_carts) == (2, 4.0, 1, 1)
    assert got.ui_days_since_purchase == pytest.approx(1.0)


def test_segment_popularity_counts_buyers_per_context_segment(spark: SparkSession, events: object) -> None:
    """Segment lists count distinct buyers (sessions for anonymous ones) in the window, per country,
    device, referrer and department, in stock only."""
    items = spark.createDataFrame(
        [("a", True, "home/lighting"), ("b", True, "kitchen/mugs")],
        "item_id string, in_stock boolean, category string",
    )
    with_context = events.withColumn("device", F.lit("Mobile")).withColumn(  # type: ignore[attr-defined]
        "referrer", F.when(F.col("item_id") == "b", F.lit("google"))
    )
    got = transforms.segment_popularity(with_context, items, AS_OF, days=30)
    expected = spark.createDataFrame(
        [
            ("global", "a", 1),
            ("global", "b", 1),
            ("country:france", "a", 1),
            ("country:spain", "b", 1),
            ("device:mobile", "a", 1),
            ("device:mobile", "b", 1),
            ("referrer:google", "b", 1),
            ("category:home", "a", 1),
            ("category:kitchen", "b", 1),
        ],
        "segment string, item_id string, buyers long",
    )
    assertDataFrameEqual(got.select("segment", "item_id", "buyers"), expected)


def test_segment_popularity_window_ends_exactly_days_before_as_of(spark: SparkSession) -> None:
    """A purchase exactly `days` before as_of counts, one a second older does not."""
    items = spark.createDataFrame(
        [("a", True, "home"), ("b", True, "home")], "item_id string, in_stock boolean, category string"
    )
    oldest = AS_OF - timedelta(days=30)
    events = spark.createDataFrame(
        [
            ("u1", "s1", "a", "purchase", oldest, "France", None, None),
            ("u2", "s2", "b", "purchase", oldest - timedelta(seconds=1), "France", None, None),
        ],
        "user_id string, session_id string, item_id string, event_type string, ts timestamp, "
        "country string, device string, referrer string",
    )
    got = transforms.segment_popularity(events, items, AS_OF, days=30)
    assert sorted((r.segment, r.item_id) for r in got.collect()) == [
        ("category:home", "a"),
        ("country:france", "a"),
        ("global", "a"),
    ]


def test_session_baskets_weigh_as_the_shared_rule_does(spark: SparkSession) -> None:
    """Spark's basket weights equal `signals.basket_weight` evaluated by NumPy (the baselines' engine);
    a single-item basket is left out."""
    rows = [
        ("u1", "s1", "a", "add_to_cart", datetime(2026, 11, 20, tzinfo=UTC), 1, 5.0, "Spain"),
        ("u1", "s1", "b", "purchase", datetime(2026, 11, 22, tzinfo=UTC), 1, 5.0, "Spain"),
        ("u1", "s1", "c", "purchase", datetime(2026, 11, 21, tzinfo=UTC), 1, 5.0, "Spain"),
        ("u2", "s2", "a", "purchase", datetime(2026, 11, 25, tzinfo=UTC), 1, 5.0, "Spain"),
    ]
    got = transforms.session_baskets(_ev(spark, rows), AS_OF, 30.0).collect()  # type: ignore[attr-defined]
    assert sorted((r.session_id, r.item_id) for r in got) == [("s1", "a"), ("s1", "b"), ("s1", "c")]
    age = (AS_OF - datetime(2026, 11, 22, tzinfo=UTC)).total_seconds() / 86_400
    expected = signals.basket_weight(np.array([3.0]), np.array([age]), 30.0, log2=np.log2)[0]
    assert [r.weight for r in got] == pytest.approx([expected] * 3, rel=1e-12)


def test_training_sample_is_a_fixed_bounded_share_of_the_shoppers(spark: SparkSession) -> None:
    """Beyond `fit_max_shoppers`, training learns from a sample of about that many shoppers, the same
    ones on every call (a hash of the id); at or below it, from everyone."""
    from jobs.ranking.training import fit_sample

    rows = [
        (f"u{n:05d}", f"s{n}", "a", "view", AS_OF, 1, 1.0, "France") for n in range(4_000) for _ in range(2)
    ]
    events = _ev(spark, rows)
    assert fit_sample(events, 4_000)[0] is None and fit_sample(events, 4_000)[1:] == (4_000, 4_000)
    sample, size, total = fit_sample(events, 1_000)
    assert sample is not None and total == 4_000 and 850 <= size <= 1_150
    again, _, _ = fit_sample(events, 1_000)
    assert again is not None
    ids = sorted(r["user_id"] for r in sample.collect())
    assert len(ids) == size == len(set(ids)) and ids == sorted(r["user_id"] for r in again.collect())
    assert set(ids) <= {f"u{n:05d}" for n in range(4_000)}

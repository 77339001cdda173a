"""Spark transforms from the lake's events to interactions, features and popularity lists.

Every function is pure: DataFrame(s) and explicit parameters in, a DataFrame out; no session creation,
no I/O and no wall clock (`as_of` is always passed in), so they are tested on small frames and run the
same on `local[*]` and on a cluster.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from carousel.rules.segments import GLOBAL_SEGMENT, SEGMENT_DIMENSIONS
from jobs.features import signals

# Implicit-feedback strength of each event type: a purchase says much more than a view.
EVENT_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "remove_from_cart": 0.0, "purchase": 6.0}
DAY_S = 86_400.0


def _days_before(as_of: datetime, ts: Column) -> Column:
    return (F.lit(as_of).cast("timestamp").cast("double") - ts.cast("double")) / DAY_S


def modelling_events(events: DataFrame, as_of: datetime) -> DataFrame:
    """Events usable for modelling: known shoppers' events before `as_of` (`events` already without
    the shoppers who do not consent, `without_shoppers`)."""
    return events.where(F.col("user_id").isNotNull() & (F.col("ts") < F.lit(as_of)))


def attribute_sessions(events: DataFrame, links: DataFrame) -> DataFrame:
    """Events with the anonymous ones of a session later signed in to (`links`: session_id, user_id,
    linked_at; the first link of a session wins) attributed to that shopper. Only anonymous events are
    joined, and Spark broadcasts the links when they are small."""
    first = links.groupBy("session_id").agg(F.min_by("user_id", "linked_at").alias("_linked_user"))
    anonymous = (
        events.where(F.col("user_id").isNull())
        .join(first, "session_id", "left")
        .withColumn("user_id", F.col("_linked_user"))
        .select(*events.columns)
    )
    return events.where(F.col("user_id").isNotNull()).unionByName(anonymous)


def without_shoppers(
    events: DataFrame, opted_out: DataFrame | None, erased_digests: DataFrame | None, salt: str
) -> DataFrame:
    """Events minus those of shoppers who do not consent (`opted_out`: user_id) and of erased shoppers,
    known only by the SHA-256 of salt + id (`erased_digests`: digest; the digest of
    `carousel.rules.erasure.erasure_digest`). Either frame may be None: nothing to leave out."""
    kept = events if opted_out is None else events.join(F.broadcast(opted_out), "user_id", "left_anti")
    if erased_digests is None:
        return kept
    digest = F.sha2(F.concat(F.lit(salt), F.col("user_id")), 256)
    return (
        kept.withColumn("_digest", digest)
        .join(F.broadcast(erased_digests.withColumnRenamed("digest", "_digest")), "_digest", "left_anti")
        .drop("_digest")
    )


def purchases_and_events_of(events: DataFrame, shoppers: DataFrame) -> DataFrame:
    """Every purchase, and every event of `shoppers` (a `user_id` frame): all that `item_stats`,
    `segment_popularity` and those shoppers' own frames read. Purchases are a few percent of a store's
    events, so an incremental run keeps this instead of reading the whole lake once for each."""
    own = shoppers.select("user_id", F.lit(True).alias("_own"))
    return (
        events.join(F.broadcast(own), "user_id", "left")
        .where((F.col("event_type") == "purchase") | F.col("_own").isNotNull())
        .select(*events.columns)
    )


def interaction_weights(pairs: DataFrame) -> DataFrame:
    """(user_id, item_id, weight) from `pair_stats`: summed event strengths (`EVENT_WEIGHTS`),
    log-damped so one binge does not dominate."""
    return pairs.where(F.col("strength") > 0).select(
        "user_id", "item_id", F.log1p("strength").cast("float").alias("weight")
    )


def session_touches(events: DataFrame) -> DataFrame:
    """(user_id, session_id, item_id, event_type, events, units, ts): a known shopper's events of one
    type on one item within one session, counted (`events`), their quantities summed (`units`), with
    the latest time (`ts`): what `pair_stats` aggregates per (shopper, item)."""
    return (
        events.where(F.col("user_id").isNotNull())
        .groupBy("user_id", "session_id", "item_id", "event_type")
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.sum("quantity").alias("units"),
            F.max("ts").alias("ts"),
        )
    )


def _sessions_with(event_type: str) -> Column:
    """Over touches: the number of distinct (non-null) sessions with an event of `event_type`."""
    return F.count(F.when((F.col("event_type") == event_type) & F.col("session_id").isNotNull(), F.lit(1)))


def pair_stats(
    touches: DataFrame, as_of: datetime, half_life_days: float | None, cart_weight: float, view_weight: float
) -> DataFrame:
    """Per (shopper, item), from `session_touches`, in one grouping: purchase, cart and view sessions,
    units, views, carts, days since the last purchase and touch, the decayed interest (each (session,
    item, event type) once, weighed by `signals.interest_weight`) and the summed event strengths.
    `als_interactions`, `user_item_stats`, `shopper_interest` and `interaction_weights` select from it:
    one aggregation instead of four."""
    is_purchase = F.col("event_type") == "purchase"

    def events_of(event_type: str) -> Column:
        return F.sum(F.when(F.col("event_type") == event_type, F.col("events")).otherwise(0))

    type_weight: Column = F.lit(0.0)
    for event_type, value in reversed(signals.interest_type_weights(cart_weight, view_weight).items()):
        type_weight = F.when(F.col("event_type") == event_type, F.lit(value)).otherwise(type_weight)
    interest = signals.interest_weight(type_weight, _days_before(as_of, F.col("ts")), half_life_days)
    strength: Column = F.lit(0.0)
    for event_type, value in EVENT_WEIGHTS.items():
        strength = F.when(F.col("event_type") == event_type, F.lit(value)).otherwise(strength)
    return touches.groupBy("user_id", "item_id").agg(
        _sessions_with("purchase").alias("ui_purchases"),
        _sessions_with("add_to_cart").alias("cart_sessions"),
        _sessions_with("view").alias("view_sessions"),
        F.sum(F.when(is_purchase, F.col("units")).otherwise(0)).cast("double").alias("ui_units"),
        events_of("view").alias("ui_views"),
        events_of("add_to_cart").alias("ui_carts"),
        _days_before(as_of, F.max(F.when(is_purchase, F.col("ts")))).alias("ui_days_since_purchase"),
        _days_before(as_of, F.max("ts")).alias("ui_days_since_touch"),
        F.sum(interest).cast("double").alias("interest"),
        F.sum(strength * F.col("events")).alias("strength"),
    )


def als_interactions(pairs: DataFrame) -> DataFrame:
    """(user_id, item_id, weight) for ALS from `pair_stats`: `signals.als_weight` of the pair's
    purchase, cart and view session counts, the weighting the evaluation's ALS baseline uses too (so the
    ALS hyper-parameters tuned there fit the ranker's ALS)."""
    weight = signals.als_weight(
        F.col("ui_purchases"), F.col("cart_sessions"), F.col("view_sessions"), log1p=F.log1p
    )
    return (
        pairs.select("user_id", "item_id", weight.alias("weight"))
        .where(F.col("weight") > 0)
        .select("user_id", "item_id", F.col("weight").cast("float").alias("weight"))
    )


def user_item_stats(pairs: DataFrame) -> DataFrame:
    """Per (shopper, item), from `pair_stats`: purchase sessions, units, views, carts and days since the
    last purchase/touch."""
    return pairs.select("user_id", "item_id", *(c for c in pairs.columns if c.startswith("ui_")))


def item_stats(events: DataFrame, items: DataFrame, as_of: datetime, windows: tuple[int, ...]) -> DataFrame:
    """Per catalog item: distinct buyers over each window (days), trend, price, age and category."""
    purchases = events.where(F.col("event_type") == "purchase")
    buyer = F.coalesce(F.col("user_id"), F.concat(F.lit("session:"), F.col("session_id")))
    # A buyer is in a window when their latest purchase of the item is: one aggregation by (item,
    # buyer), then plain counts. A distinct count per window would make Spark copy every purchase once
    # per window (its Expand operator) before aggregating.
    latest = (
        purchases.select("item_id", buyer.alias("buyer"), _days_before(as_of, F.col("ts")).alias("age"))
        .where(F.col("buyer").isNotNull())
        .groupBy("item_id", "buyer")
        .agg(F.min("age").alias("age"))
    )
    aggs = [F.count(F.when(F.col("age") <= w, True)).alias(f"pop_{w}d") for w in windows]
    aggs.append(F.count(F.lit(1)).alias("pop_all"))
    pop = latest.groupBy("item_id").agg(*aggs)
    shortest, longest = min(windows), max(windows)
    out = (
        items.select("item_id", "category", "price", "in_stock", "first_seen")
        .join(pop, "item_id", "left")
        .fillna(0, subset=[f"pop_{w}d" for w in windows] + ["pop_all"])
        .withColumn(
            "pop_trend",
            (F.col(f"pop_{shortest}d") / shortest + F.lit(0.1))
            / (F.col(f"pop_{longest}d") / longest + F.lit(0.1)),
        )
        .withColumn("item_age_days", F.greatest(_days_before(as_of, F.col("first_seen")), F.lit(0.0)))
        .withColumnRenamed("price", "item_price")
        .drop("first_seen")
    )
    return out


def user_stats(events: DataFrame, as_of: datetime) -> DataFrame:
    """Per shopper: purchase sessions, distinct items, days since last activity, usual unit price."""
    purchases = events.where(F.col("event_type") == "purchase")
    # Distinct counts as the sizes of per-shopper sets: `countDistinct` twice would make Spark copy every
    # purchase once per distinct column (its Expand operator) and run the median over the copies. A
    # shopper's sessions and items number hundreds, not millions.
    bought = purchases.groupBy("user_id").agg(
        F.size(F.collect_set("session_id")).cast("long").alias("u_orders"),
        F.size(F.collect_set("item_id")).cast("long").alias("u_items"),
        F.expr("percentile_approx(price, 0.5)").alias("u_median_price"),
    )
    active = events.groupBy("user_id").agg(
        _days_before(as_of, F.max("ts")).alias("u_days_since_active"),
        F.count(F.lit(1)).alias("u_events"),
    )
    return active.join(bought, "user_id", "left").fillna(0, subset=["u_orders", "u_items"])


def user_category_affinity(pairs: DataFrame, items: DataFrame) -> DataFrame:
    """(user_id, category, cat_affinity) from `pair_stats`: the share of a shopper's weighted
    interactions in a category."""
    weights = interaction_weights(pairs).join(items.select("item_id", "category"), "item_id")
    per_cat = weights.groupBy("user_id", "category").agg(F.sum("weight").alias("w"))
    total = Window.partitionBy("user_id")
    return per_cat.select(
        "user_id", "category", (F.col("w") / F.sum("w").over(total)).cast("double").alias("cat_affinity")
    )


def user_country(events: DataFrame, users: DataFrame | None) -> DataFrame:
    """(user_id, country): from the users table when given, else the shopper's most frequent country."""
    counted = events.where(F.col("country").isNotNull()).groupBy("user_id", "country").count()
    rank = Window.partitionBy("user_id").orderBy(F.desc("count"), F.asc("country"))
    from_events = (
        counted.withColumn("r", F.row_number().over(rank)).where("r = 1").select("user_id", "country")
    )
    if users is None:
        return from_events
    declared = users.where(F.col("country").isNotNull()).select("user_id", F.col("country").alias("declared"))
    return from_events.join(declared, "user_id", "full").select(
        "user_id", F.coalesce("declared", "country").alias("country")
    )


def segment_popularity(
    events: DataFrame, items: DataFrame, as_of: datetime, days: int, min_buyers: int = 1
) -> DataFrame:
    """(segment, item_id, buyers): in-stock items by distinct buyers over the last `days`, per segment.

    Segments are `global` plus one per value of each context dimension: `country:<name>`,
    `device:<name>`, `referrer:<name>` (from the event) and `category:<department>` (the top level of
    the item's category path, for sessions whose browsing shows that affinity). Values are lower case.
    Anonymous sessions count as buyers.
    """
    in_stock = items.where(F.col("in_stock")).select(
        "item_id", F.split(F.col("category"), "/").getItem(0).alias("department")
    )
    recent = events.where(
        (F.col("event_type") == "purchase")
        & (F.col("ts") < F.lit(as_of))
        # A bound on `ts` itself, a day wider than the exact test after it: Spark hands it to the
        # Parquet reader, which skips row groups of older events (lake parts are sorted by time).
        & (F.col("ts") >= F.lit(as_of - timedelta(days=days + 1)))
        & (_days_before(as_of, F.col("ts")) <= days)
    ).join(in_stock, "item_id")
    buyer = F.coalesce(F.col("user_id"), F.concat(F.lit("session:"), F.col("session_id")))
    value_columns = {
        "country": "country",
        "device": "device",
        "referrer": "referrer",
        "category": "department",
    }
    # Every purchase once per segment it belongs to, then one aggregation: one scan of the events, where
    # an aggregation per segment dimension read them once each.
    segments = [F.lit(GLOBAL_SEGMENT)]
    for dimension in SEGMENT_DIMENSIONS:
        value = F.lower(F.trim(F.col(value_columns[dimension])))
        segments.append(F.when(value.isNotNull() & (value != ""), F.concat(F.lit(f"{dimension}:"), value)))
    return (
        recent.select("item_id", buyer.alias("buyer"), F.explode(F.array(*segments)).alias("segment"))
        .where(F.col("segment").isNotNull())
        .groupBy("segment", "item_id")
        .agg(F.countDistinct("buyer").alias("buyers"))
        .where(F.col("buyers") >= min_buyers)
    )


def session_baskets(events: DataFrame, as_of: datetime, half_life_days: float | None) -> DataFrame:
    """(session_id, item_id, weight): the items bought or carted together in a session, each basket
    weighed by `signals.basket_weight` of its size and its last line's age. Single-item baskets say
    nothing about pairs and are dropped."""
    # One grouping by session, its items as a set: a basket holds tens of items, and grouping the lines
    # by (session, item) first, then by session, then joining the two took three shuffles.
    baskets = (
        events.where(F.col("event_type").isin("purchase", "add_to_cart"))
        .groupBy("session_id")
        .agg(F.collect_set("item_id").alias("items"), _days_before(as_of, F.max("ts")).alias("age"))
        .withColumn("size", F.size("items"))
        .where(F.col("size") > 1)
    )
    weight = signals.basket_weight(F.col("size"), F.col("age"), half_life_days, log2=F.log2)
    return baskets.select(
        "session_id", F.explode("items").alias("item_id"), weight.cast("double").alias("weight")
    )


def shopper_interest(pairs: DataFrame) -> DataFrame:
    """(user_id, item_id, interest) from `pair_stats`: the pairs with a positive decayed interest."""
    return pairs.select("user_id", "item_id", "interest").where(F.col("interest") > 0)

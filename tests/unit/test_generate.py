"""Unit tests for the synthetic store generators (`jobs.ingest.synthetic`, `jobs.ingest.grocery`).

Each property is checked on the default general store (~150k events, generated once per module) or
a small grocery store against expectations computed here from the frames themselves, not from the
generators' internals.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carousel import cli
from carousel.schema import (
    EVENT_TYPES,
    EVENTS,
    ITEMS,
    USERS,
    to_arrow,
    validate_events,
    validate_items,
    validate_users,
)
from jobs.ingest.grocery import GROCERY_CATEGORIES, GrocerySpec, generate_grocery
from jobs.ingest.synthetic import CATEGORIES, Store, StoreSpec, generate_store, main, write_store

SPEC = StoreSpec()  # 2,000 users, 500 items, 60 days ending 2026-11-01, ~150k events
SMALL = StoreSpec(users=300, items=200, days=14, seed=3, events_per_user=20)
# ~87k purchase lines in ~8k trips: enough households per item to see item-level cycles.
GROCERY = GrocerySpec(users=400, items=3_000, days=150, seed=5)
WARM_UP = pd.Timedelta(days=30)


@pytest.fixture(scope="module")
def store() -> Store:
    return generate_store(SPEC)


@pytest.fixture(scope="module")
def sessions(store: Store) -> pd.DataFrame:
    """One row per session: anonymous?, has a cart?, has a purchase?"""
    ev = store.events
    flags = pd.DataFrame(
        {
            "session_id": ev["session_id"].astype(str),
            "anonymous": ev["user_id"].isna().to_numpy(),
            "cart": (ev["event_type"] == "add_to_cart").to_numpy(dtype=bool),
            "purchase": (ev["event_type"] == "purchase").to_numpy(dtype=bool),
        }
    )
    return flags.groupby("session_id").agg({"anonymous": "all", "cart": "any", "purchase": "any"})


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with string columns as Python strings and None, for plain merging and masking."""
    out: pd.DataFrame = pa.Table.from_pandas(df, preserve_index=False).to_pandas()
    return out


def test_frames_pass_the_canonical_validators(store: Store) -> None:
    """The events, items and users frames pass carousel.schema's validators unchanged, row for row."""
    assert len(validate_events(store.events, now=SPEC.end)) == len(store.events)
    assert len(validate_items(store.items)) == len(store.items) == SPEC.items
    assert len(validate_users(store.users)) == len(store.users) == SPEC.users
    assert set(store.events["event_type"].unique()) == set(EVENT_TYPES)


def test_same_seed_gives_identical_frames() -> None:
    """Two stores generated from the same spec are identical, frame for frame."""
    a, b = generate_store(SMALL), generate_store(SMALL)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)


def test_different_seed_gives_different_frames() -> None:
    """Changing only the seed changes the events, the catalogue and the shoppers."""
    a = generate_store(SMALL)
    b = generate_store(replace(SMALL, seed=SMALL.seed + 1))
    assert not a.events.equals(b.events)
    assert not a.items.equals(b.items)
    assert not a.users.equals(b.users)


def test_ids_are_formatted_and_each_session_has_one_visitor(store: Store) -> None:
    """Ids look like 'u000123' / 'i00042', all referenced ids exist, and a session has one visitor."""
    ev = _plain(store.events)
    assert store.users["user_id"].str.fullmatch(r"u\d{6}").all()
    assert store.items["item_id"].str.fullmatch(r"i\d{5}").all()
    assert set(ev["item_id"]) <= set(store.items["item_id"])
    assert set(ev["user_id"].dropna()) <= set(store.users["user_id"])
    per_session = ev.groupby("session_id")[["user_id", "country", "device", "referrer"]].nunique(dropna=False)
    assert (per_session == 1).all().all()


def test_event_volume_follows_events_per_user() -> None:
    """The number of events is within 15% of users * events_per_user, for two different knobs."""
    for spec in (SPEC, SMALL):
        n = len(generate_store(spec).events)
        expected = spec.users * spec.events_per_user
        assert abs(n - expected) / expected < 0.15, (n, expected)


def test_default_store_has_100k_to_200k_events(store: Store) -> None:
    """The default spec gives a store of 100k-200k events."""
    assert 100_000 <= len(store.events) <= 200_000


def test_about_half_of_sessions_are_anonymous(store: Store, sessions: pd.DataFrame) -> None:
    """40-60% of sessions have no user_id, and anonymous visitors still carry their own country."""
    assert 0.40 <= sessions["anonymous"].mean() <= 0.60
    anon = store.events[store.events["user_id"].isna()]
    assert anon["session_id"].notna().all()
    assert anon["country"].notna().mean() > 0.95
    assert anon["country"].nunique() >= 5


def test_most_carts_are_abandoned(sessions: pd.DataFrame) -> None:
    """60-80% of the sessions with an add_to_cart end without a purchase."""
    carted = sessions[sessions["cart"]]
    abandoned = 1.0 - carted["purchase"].mean()
    assert len(carted) > 1000
    assert 0.60 <= abandoned <= 0.80
    assert not (sessions["purchase"] & ~sessions["cart"]).any()


def test_purchases_follow_an_add_to_cart_of_the_same_item(store: Store) -> None:
    """Every purchase comes after an add_to_cart of the same item in the same session."""
    ev = _plain(store.events)
    keys = ["session_id", "item_id"]
    first_cart = ev[ev["event_type"] == "add_to_cart"].groupby(keys)["ts"].min().rename("cart_ts")
    buys = ev[ev["event_type"] == "purchase"].join(first_cart, on=keys)
    assert len(buys) > 500
    assert (buys["cart_ts"] < buys["ts"]).all()  # NaT (no cart) compares False


def test_carts_follow_a_view_and_removals_follow_the_cart(store: Store) -> None:
    """An add_to_cart follows a view of its item in the session; a removal follows the add, unbought."""
    ev = _plain(store.events)
    keys = ["session_id", "item_id"]
    first = ev.groupby(keys + ["event_type"])["ts"].min().unstack("event_type")
    carted = first[first["add_to_cart"].notna()]
    assert (carted["view"] < carted["add_to_cart"]).all()
    removed = first[first["remove_from_cart"].notna()]
    assert len(removed) > 0
    assert (removed["add_to_cart"] < removed["remove_from_cart"]).all()
    assert removed["purchase"].isna().all()


def test_no_event_before_its_item_exists_or_outside_the_period(store: Store) -> None:
    """No event precedes its item's first_seen, none is after spec.end, none before spec.start."""
    first_seen = store.items.set_index("item_id")["first_seen"]
    item_since = first_seen.reindex(store.events["item_id"].to_numpy()).to_numpy()
    assert (store.events["ts"].to_numpy() >= item_since).all()
    assert store.events["ts"].max() <= SPEC.end
    assert store.events["ts"].min() >= SPEC.start
    # ...and the period is really used: events on (nearly) every day.
    assert store.events["ts"].dt.floor("D").nunique() >= SPEC.days - 1


def test_new_items_arrive_during_the_period(store: Store) -> None:
    """Some items predate the period, some arrive during it, and late arrivals do get views."""
    new = store.items["first_seen"] >= SPEC.start
    assert 0.2 <= new.mean() <= 0.5
    assert store.items["first_seen"].max() <= SPEC.end
    viewed = set(store.events.loc[store.events["event_type"] == "view", "item_id"].astype(str))
    assert len(viewed & set(store.items.loc[new, "item_id"])) > 0.5 * new.sum()


def test_events_are_in_time_order_without_ties_within_a_session(store: Store) -> None:
    """The log is sorted by ts and no two events of a session share a timestamp."""
    assert store.events["ts"].is_monotonic_increasing
    assert not store.events.duplicated(["session_id", "ts"]).any()


def test_consent_opt_out_shares(store: Store) -> None:
    """About 10% of shoppers refuse personalization and about 20-25% refuse marketing."""
    assert 0.07 <= (~store.users["consent_personalization"]).mean() <= 0.13
    assert 0.17 <= (~store.users["consent_marketing"]).mean() <= 0.28


def test_email_referrals_only_reach_shoppers_who_accepted_marketing(store: Store) -> None:
    """No logged-in session arrives from an email unless its shopper accepted marketing."""
    ev = _plain(store.events)
    email = ev[(ev["referrer"] == "email") & ev["user_id"].notna()]
    consent = store.users.set_index("user_id")["consent_marketing"]
    assert len(email) > 0
    assert consent.reindex(email["user_id"].unique()).all()


def test_consumables_are_bought_again_across_sessions(store: Store) -> None:
    """Shoppers re-buy consumables in later sessions, far more often than other goods."""
    consumable = {c.path for c in CATEGORIES if c.consumable}
    assert {"grocery/coffee", "pet/food", "beauty/skincare"} <= consumable
    ev = _plain(store.events)
    buys = ev[(ev["event_type"] == "purchase") & ev["user_id"].notna()]
    buys = buys.merge(_plain(store.items)[["item_id", "category"]], on="item_id")
    pairs = buys.groupby(["user_id", "item_id", "category"])["session_id"].nunique().reset_index()
    pairs["repeat"] = pairs["session_id"] >= 2
    is_consumable = pairs["category"].isin(consumable)
    assert pairs.loc[is_consumable, "repeat"].sum() >= 20
    assert pairs.loc[is_consumable, "repeat"].mean() > 2 * pairs.loc[~is_consumable, "repeat"].mean()


def test_item_popularity_is_heavy_tailed(store: Store) -> None:
    """The top 10% of items (zero-view items included) get more than 40% of all views."""
    views = store.events.loc[store.events["event_type"] == "view", "item_id"].astype(str).value_counts()
    counts = views.reindex(store.items["item_id"].astype(str), fill_value=0).sort_values(ascending=False)
    top = counts.iloc[: len(counts) // 10].sum()
    assert top / counts.sum() > 0.40


def test_shopper_activity_is_heavy_tailed(store: Store) -> None:
    """The busiest 10% of registered shoppers account for over a third of logged-in sessions."""
    known = store.events[store.events["user_id"].notna()]
    per_user = known.groupby(known["user_id"].astype(str))["session_id"].nunique()
    per_user = per_user.reindex(store.users["user_id"].astype(str), fill_value=0).sort_values(ascending=False)
    assert per_user.iloc[: len(per_user) // 10].sum() / per_user.sum() > 1 / 3


def test_catalogue_has_a_category_tree_stock_and_price_spread(store: Store) -> None:
    """Items span 20-40 'top/leaf' categories, ~5% are out of stock, and category price levels differ."""
    items = store.items
    assert items["category"].str.fullmatch(r"[a-z-]+/[a-z-]+").all()
    assert 20 <= items["category"].nunique() <= 40
    assert 0.02 <= (~items["in_stock"]).mean() <= 0.09
    medians = items.groupby(items["category"].astype(str))["price"].median()
    assert medians.max() > 5 * medians.min()
    assert items["brand"].notna().mean() > 0.9


def test_sessions_peak_in_the_evening(store: Store) -> None:
    """UK sessions start far more often between 18:00 and 22:00 UTC than between 02:00 and 06:00."""
    uk = store.events[store.events["country"] == "United Kingdom"]
    starts = uk.groupby(uk["session_id"].astype(str))["ts"].min().dt.hour
    assert starts.between(18, 21).sum() > 3 * starts.between(2, 5).sum()


def test_write_store_round_trips_through_parquet(store: Store, tmp_path: Path) -> None:
    """write_store writes three parquet files in the canonical schemas that read back to the same rows."""
    counts = write_store(store, tmp_path / "store")
    assert counts == {"events": len(store.events), "items": len(store.items), "users": len(store.users)}
    for table, frame in ((EVENTS, store.events), (ITEMS, store.items), (USERS, store.users)):
        read = pq.read_table(tmp_path / "store" / f"{table.name}.parquet")
        assert read.schema.equals(table.schema, check_metadata=False)
        assert read.equals(to_arrow(frame, table).cast(table.schema))
        np.testing.assert_array_equal(
            read.column(table.key).to_pylist(), frame[table.key].astype(str).tolist()
        )


def test_spec_checks_sizes_and_normalises_end_to_utc() -> None:
    """StoreSpec rejects empty stores and keeps `end` as a UTC timestamp whatever it is given."""
    with pytest.raises(ValueError):
        StoreSpec(users=0)
    with pytest.raises(ValueError):
        StoreSpec(events_per_user=0)
    berlin = StoreSpec(end=pd.Timestamp("2026-03-01 01:00", tz="Europe/Berlin"))
    assert berlin.end == pd.Timestamp("2026-03-01 00:00", tz="UTC") and str(berlin.end.tz) == "UTC"
    assert StoreSpec(end=pd.Timestamp("2026-03-01")).end == pd.Timestamp("2026-03-01", tz="UTC")
    assert StoreSpec().start == pd.Timestamp("2026-09-02", tz="UTC")


def test_cli_writes_a_small_store(tmp_path: Path) -> None:
    """`python -m jobs.generate` validates a small store and writes its three parquet files."""
    args = ["--out", str(tmp_path), "--users", "40", "--items", "30", "--days", "3", "--end", "2026-01-01"]
    assert main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet", "items.parquet", "users.parquet"]
    events = pq.read_table(tmp_path / "events.parquet").to_pandas()
    assert events["ts"].max() <= pd.Timestamp("2026-01-01", tz="UTC")


def _frame_digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def test_general_store_is_unchanged_by_the_presets() -> None:
    """SMALL's frames hash to the digests recorded from the generator before the grocery preset."""
    store = generate_store(SMALL)
    assert (len(store.events), len(store.items), len(store.users)) == (6311, 200, 300)
    assert _frame_digest(store.events) == "7d16cf02e5a170bc7870778ba89c16982a65067d235edd085e95f7b1631fe290"
    assert _frame_digest(store.items) == "6748e3ef49e793b6c5702b73c93cce36c659dac319a7d126915485be930645c8"
    assert _frame_digest(store.users) == "a1150bf52f7a2eca4171a6b3528f4706256cef64c86f9776d5e594ae6533ed6a"


# -- the grocery preset ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grocery() -> Store:
    return generate_grocery(GROCERY)


@pytest.fixture(scope="module")
def baskets(grocery: Store) -> pd.DataFrame:
    """One row per purchase line: household, trip, item, day, and whether it was bought before."""
    columns = {"user_id": "household", "session_id": "trip", "item_id": "item", "ts": "ts"}
    lines = _plain(grocery.events)[list(columns)].rename(columns=columns)
    lines["day"] = lines["ts"].dt.floor("D")
    lines["repeat"] = lines.duplicated(["household", "item"])  # the log is in time order
    return lines


def test_grocery_frames_are_canonical_purchases_of_known_households(grocery: Store, tmp_path: Path) -> None:
    """The grocery frames pass the validators, hold only purchases by known households (one per
    trip), and write to Parquet in the canonical schemas."""
    assert len(validate_events(grocery.events, now=GROCERY.end)) == len(grocery.events)
    assert len(validate_items(grocery.items)) == len(grocery.items) == GROCERY.items
    assert len(validate_users(grocery.users)) == len(grocery.users) == GROCERY.users
    assert set(grocery.events["event_type"].unique()) == {"purchase"}
    assert grocery.events["user_id"].notna().all()
    assert (grocery.events.groupby("session_id", observed=True)["user_id"].nunique() == 1).all()
    assert not grocery.events.duplicated(["session_id", "item_id"]).any()
    assert grocery.events["ts"].is_monotonic_increasing
    assert grocery.events["ts"].min() >= GROCERY.start and grocery.events["ts"].max() <= GROCERY.end
    write_store(grocery, tmp_path)
    for table in (EVENTS, ITEMS, USERS):
        read = pq.read_table(tmp_path / f"{table.name}.parquet")
        assert read.schema.equals(table.schema, check_metadata=False)


def test_grocery_same_seed_gives_identical_frames_and_another_seed_does_not(grocery: Store) -> None:
    """The grocery store is a function of its spec: same seed, same frames; another seed, others."""
    again = generate_grocery(GROCERY)
    for a, b in ((grocery.events, again.events), (grocery.items, again.items), (grocery.users, again.users)):
        pd.testing.assert_frame_equal(a, b)
    other = generate_grocery(replace(GROCERY, seed=GROCERY.seed + 1))
    assert not grocery.events.equals(other.events)
    assert not grocery.items.equals(other.items)


def test_grocery_baskets_hold_8_to_15_items_with_household_specific_sizes(baskets: pd.DataFrame) -> None:
    """The median trip has 8-15 lines, and households' own median baskets differ (p90 > 1.5 x p10)."""
    per_trip = baskets.groupby("trip").agg(household=("household", "first"), lines=("item", "size"))
    assert 8 <= per_trip["lines"].median() <= 15
    per_household = per_trip.groupby("household")["lines"].median()
    assert per_household.quantile(0.9) > 1.5 * per_household.quantile(0.1)


def test_grocery_lines_mostly_repeat_the_household_s_earlier_purchases(baskets: pd.DataFrame) -> None:
    """After a 30-day warm-up, 55-72% of lines are items the household bought before, as in real
    grocery data (Instacart's reorder ratio is 59% of lines): strong repurchase, with a large share
    of items new to the household."""
    warm = baskets[baskets["ts"] >= GROCERY.start + WARM_UP]
    assert 0.55 < warm["repeat"].mean() < 0.72


def test_grocery_households_favourites_are_not_all_bought_every_month(baskets: pd.DataFrame) -> None:
    """A household's ten most bought items (by trips, then recency) before the last 30 days are bought
    in those 30 days at a rate of 30-60% (near 90% if every favourite were a weekly staple), and a
    typical household buys 60+ distinct items in four months: broad, shifting assortments."""
    cutoff = GROCERY.end - pd.Timedelta(days=30)
    before, after = baskets[baskets["ts"] < cutoff], baskets[baskets["ts"] >= cutoff]
    counts = before.groupby(["household", "item"]).agg(trips=("trip", "nunique"), last=("ts", "max"))
    counts = counts.reset_index().sort_values(["household", "trips", "last"], ascending=[True, False, False])
    top = counts.groupby("household").head(10)
    top = top[top["household"].isin(set(after["household"]))]
    bought_after = pd.MultiIndex.from_frame(after[["household", "item"]])
    hit = pd.MultiIndex.from_frame(top[["household", "item"]]).isin(bought_after)
    assert len(top) > 2_000
    assert 0.3 < hit.mean() < 0.6
    assert before.groupby("household")["item"].nunique().median() >= 60


def test_grocery_trips_follow_a_weekly_habit(baskets: pd.DataFrame) -> None:
    """The commonest gap between a household's trips is 7 days, and a typical household makes
    over 40% of its trips on one weekday (1/7 if days were random)."""
    trips = baskets.groupby("trip").agg(household=("household", "first"), ts=("ts", "min"))
    trips = trips.sort_values(["household", "ts"])
    gap_days = (trips.groupby("household")["ts"].diff().dt.total_seconds() / 86_400).dropna().round()
    assert gap_days.value_counts().idxmax() == 7
    weekday = trips["ts"].dt.weekday
    modal_share = weekday.groupby(trips["household"]).agg(lambda d: d.value_counts(normalize=True).iloc[0])
    assert modal_share.median() > 0.4
    per_week = len(trips) / trips["household"].nunique() / (GROCERY.days / 7)
    assert 0.7 < per_week < 1.5


def _rebuy_gaps(grocery: Store, baskets: pd.DataFrame) -> pd.DataFrame:
    """Days between a household's consecutive purchases of the same item, with the item's category."""
    days = baskets.drop_duplicates(["household", "item", "day"]).sort_values(["household", "item", "day"])
    days = days.assign(gap=days.groupby(["household", "item"])["day"].diff().dt.days).dropna(subset=["gap"])
    category = _plain(grocery.items).set_index("item_id")["category"]
    return days.assign(category=category.reindex(days["item"]).to_numpy())


def test_grocery_short_cycle_categories_are_rebought_sooner(grocery: Store, baskets: pd.DataFrame) -> None:
    """Milk and bread are re-bought within about a week, detergent and baking goods after a month or more."""
    gaps = _rebuy_gaps(grocery, baskets).groupby("category")["gap"].median()
    cycle = {c.path: c.cycle_days for c in GROCERY_CATEGORIES}
    assert cycle["dairy/milk"] < 10 < 30 < cycle["household/laundry"]
    assert gaps["dairy/milk"] <= 8 and gaps["bakery/bread"] <= 8
    assert gaps["household/laundry"] >= 21 and gaps["pantry/baking"] >= 28


def test_grocery_rebuy_cycles_are_a_property_of_the_item(grocery: Store, baskets: pd.DataFrame) -> None:
    """Within a category, an item's re-buy gap relative to its category's is the same in two disjoint
    halves of the households (Spearman > 0.4; ~0 if cycles were set per category)."""
    gaps = _rebuy_gaps(grocery, baskets)
    gaps["half"] = gaps["household"].str[-1].astype(int) % 2
    per_household = gaps.groupby(["half", "category", "item", "household"])["gap"].median()
    per_item = per_household.groupby(["half", "category", "item"]).agg(["median", "size"])
    log_gap = np.log(per_item.loc[per_item["size"] >= 3, "median"]).unstack("half").dropna()
    assert len(log_gap) >= 100
    relative = log_gap - log_gap.groupby("category").transform("median")
    assert relative[0].corr(relative[1], method="spearman") > 0.4


def test_grocery_catalogue_is_a_long_tail_of_grocery_departments(
    grocery: Store, baskets: pd.DataFrame
) -> None:
    """40+ 'department/category' paths with brands and grocery prices; new items arrive and are
    bought; a tenth of the catalogue gets under 1% of the lines while the top tenth gets over a third."""
    items = grocery.items
    assert items["category"].str.fullmatch(r"[a-z-]+/[a-z-]+").all()
    assert items["category"].nunique() >= 40
    assert items["brand"].notna().all()
    assert 1.0 <= items["price"].median() <= 5.0 and items["price"].max() < 100
    new = items.loc[items["first_seen"] >= GROCERY.start, "item_id"].astype(str)
    assert 0.05 <= len(new) / len(items) <= 0.3
    assert baskets["item"].isin(set(new)).sum() > 100
    counts = baskets["item"].value_counts().reindex(items["item_id"].astype(str), fill_value=0)
    counts = counts.sort_values(ascending=False)
    tenth = len(counts) // 10
    assert counts.iloc[:tenth].sum() > counts.sum() / 3
    assert counts.iloc[-tenth:].sum() < 0.01 * counts.sum()


def test_grocery_spec_defaults_are_a_year_of_a_chain_s_households() -> None:
    """The grocery defaults are 2,500 households, 50k+ items and a year, and sizes are checked."""
    spec = GrocerySpec()
    assert (spec.users, spec.days) == (2_500, 365) and spec.items >= 50_000
    with pytest.raises(ValueError):
        GrocerySpec(items=0)


def test_cli_generates_a_grocery_store(tmp_path: Path) -> None:
    """`carousel generate --preset grocery` writes the three files with the given sizes, purchases only."""
    args = ["generate", "--preset", "grocery", "--out", str(tmp_path), "--users", "30", "--items", "400"]
    assert cli.main([*args, "--days", "28", "--end", "2026-01-01"]) == 0
    events = pq.read_table(tmp_path / "events.parquet").to_pandas()
    assert set(events["event_type"]) == {"purchase"}
    assert events["ts"].max() <= pd.Timestamp("2026-01-01", tz="UTC")
    assert pq.read_metadata(tmp_path / "items.parquet").num_rows == 400
    assert pq.read_metadata(tmp_path / "users.parquet").num_rows == 30

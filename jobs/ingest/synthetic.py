"""Generate a synthetic online store: a catalogue, its shoppers and their clickstream.

The store is built to exercise what a toy data set usually lacks and real shop data always has:
a category tree with consumables that are bought again and again, Zipf-like item popularity,
log-normal prices per category, temporary price promotions, items that sell out, new items that
arrive during the period (and are never seen before they exist), anonymous visitors (about half of
all sessions), shoppers with a few favourite categories and heavy-tailed activity, consent
opt-outs, a view -> add_to_cart -> purchase funnel with about 70% abandoned carts, the odd
remove_from_cart, daily and weekly seasonality in each country's local time, and a few missing
values (brand, country, device, referrer) where the canonical schema allows them.

Everything is drawn from one seeded numpy ``Generator`` and vectorised (no Python loop per user,
session or event), so the same `StoreSpec` always gives identical frames and a store with a million
users and ~20M events fits in a few minutes and a few GB of RAM. The frames are in the canonical
shapes of `carousel.schema` (string columns are pyarrow-backed ``string`` dtype, timestamps are
``datetime64[us, UTC]``) and pass its validators unchanged.

Run it from the repository root::

    python -m jobs.ingest.synthetic --out var/store                     # ends today (UTC midnight)
    python -m jobs.ingest.synthetic --out var/big --users 1000000 --items 100000 --events-per-user 20 \\
        --no-validate

or from code::

    store = generate_store(StoreSpec(users=2000, end=pd.Timestamp("2026-11-01", tz="UTC")))
    write_store(store, Path("var/store"))
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

DAY = 86_400.0
HOUR = 3_600.0


# --------------------------------------------------------------------------------------------
# The store's world: categories, brands, countries, devices, referrers.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """One leaf of the category tree.

    Attributes
    ----------
    path : str
        'top/leaf', as it appears in ``items.category``.
    median_price : float
        Median list price of the category's items; prices are log-normal around it.
    traffic : float
        Relative share of browsing (and of catalogue items) that goes to the category.
    consumable : bool
        Whether shoppers run out of it and buy the same item again (coffee, cat food, nappies...).
    nouns : tuple[str, ...]
        Product nouns used to build item titles.
    """

    path: str
    median_price: float
    traffic: float
    consumable: bool
    nouns: tuple[str, ...]

    @property
    def top(self) -> str:
        """The top-level department, e.g. 'grocery' for 'grocery/coffee'."""
        return self.path.split("/", 1)[0]


CATEGORIES: tuple[Category, ...] = (
    Category("home/lighting", 45.0, 3.0, False, ("Table Lamp", "Pendant Light", "LED Bulb Pack")),
    Category("home/decor", 30.0, 3.5, False, ("Vase", "Wall Mirror", "Photo Frame")),
    Category("home/bedding", 55.0, 2.5, False, ("Duvet Cover", "Pillow Set", "Throw Blanket")),
    Category("home/cleaning", 7.0, 2.5, True, ("Washing Up Liquid", "Surface Spray", "Laundry Pods")),
    Category("kitchen/mugs", 14.0, 2.5, False, ("Mug", "Espresso Cup Set", "Travel Mug")),
    Category("kitchen/cookware", 60.0, 2.0, False, ("Frying Pan", "Saucepan Set", "Casserole Dish")),
    Category("kitchen/utensils", 15.0, 2.0, False, ("Spatula Set", "Chef Knife", "Peeler")),
    Category("kitchen/appliances", 90.0, 2.0, False, ("Kettle", "Toaster", "Blender")),
    Category("beauty/skincare", 24.0, 4.0, True, ("Face Serum", "Day Cream", "Cleanser")),
    Category("beauty/makeup", 18.0, 3.0, True, ("Mascara", "Lipstick", "Foundation")),
    Category("beauty/haircare", 12.0, 3.0, True, ("Shampoo", "Conditioner", "Hair Oil")),
    Category("beauty/fragrance", 55.0, 1.5, False, ("Eau de Parfum", "Body Mist", "Cologne")),
    Category("grocery/coffee", 11.0, 4.5, True, ("Coffee Beans 1kg", "Ground Coffee", "Coffee Pods")),
    Category("grocery/tea", 6.0, 2.5, True, ("Green Tea", "Breakfast Tea", "Herbal Infusion")),
    Category("grocery/snacks", 4.0, 3.5, True, ("Dark Chocolate", "Granola Bars", "Sea Salt Crisps")),
    Category("grocery/pantry", 5.0, 3.0, True, ("Olive Oil", "Pasta", "Peanut Butter")),
    Category("pet/food", 28.0, 3.5, True, ("Dry Cat Food", "Dog Kibble", "Wet Food Pouches")),
    Category("pet/toys", 9.0, 1.5, False, ("Chew Toy", "Cat Teaser", "Tennis Balls")),
    Category("pet/accessories", 20.0, 1.5, False, ("Dog Lead", "Pet Bed", "Water Bowl")),
    Category("baby/nappies", 22.0, 2.0, True, ("Nappies Size 3", "Baby Wipes", "Nappy Cream")),
    Category("baby/toys", 18.0, 1.5, False, ("Soft Toy", "Stacking Cups", "Play Mat")),
    Category("fashion/womens", 45.0, 4.0, False, ("Midi Dress", "Knit Jumper", "Linen Shirt")),
    Category("fashion/mens", 40.0, 3.0, False, ("Oxford Shirt", "Chinos", "Hoodie")),
    Category("fashion/shoes", 70.0, 3.0, False, ("Trainers", "Ankle Boots", "Loafers")),
    Category("fashion/accessories", 25.0, 2.0, False, ("Tote Bag", "Scarf", "Leather Belt")),
    Category("electronics/audio", 80.0, 2.5, False, ("Wireless Earbuds", "Bluetooth Speaker", "Headphones")),
    Category("electronics/phone", 18.0, 3.0, False, ("Phone Case", "USB-C Charger", "Screen Protector")),
    Category("electronics/smart-home", 55.0, 1.5, False, ("Smart Plug", "Video Doorbell", "Smart Bulb")),
    Category("sports/fitness", 30.0, 2.0, False, ("Yoga Mat", "Dumbbell Set", "Resistance Bands")),
    Category("sports/outdoor", 50.0, 1.5, False, ("Daypack", "Water Bottle", "Camping Chair")),
    Category("toys/games", 22.0, 2.0, False, ("Board Game", "Jigsaw Puzzle", "Card Game")),
    Category("books/fiction", 10.0, 2.0, False, ("Paperback Novel", "Hardback Thriller", "Short Stories")),
    Category("books/cookbooks", 20.0, 1.0, False, ("Baking Book", "Vegan Cookbook", "Pasta Cookbook")),
    Category("garden/plants", 16.0, 1.5, False, ("Houseplant", "Herb Kit", "Bulb Collection")),
    Category("garden/tools", 28.0, 1.0, False, ("Pruning Shears", "Watering Can", "Hose Reel")),
)

# Invented brand names; each department draws from an overlapping window of this list, so some
# brands span two departments, as real ones do.
BRANDS: tuple[str, ...] = (
    "Lumora", "Nordvik", "Casa Bella", "Hearthly", "Kitchenly", "Copperpot", "Brewster", "Oakfield",
    "Glowe", "Petalé", "Verdana", "Aurélie", "Bean & Co", "Leafwell", "Crunchy Fox", "Pantry Lane",
    "Pawsome", "Whisker", "Barkley", "Tiny Toes", "Cubby", "Little Bear", "Maison Rue", "Threadline",
    "Northwear", "Stride", "Solace", "Voltik", "Sonique", "Hexa", "Peakform", "Trailhead",
    "Playwise", "Boxwood", "Harbor Press", "Inkwell", "Greenthumb", "Rootstock", "Fernhill", "Everyday",
)  # fmt: skip
_BRAND_WINDOW = 6
_BRANDS_NULL = 0.03  # unbranded / brand missing in the feed

ADJECTIVES: tuple[str, ...] = (
    "Classic", "Organic", "Premium", "Everyday", "Compact", "Deluxe", "Eco", "Nordic", "Vintage",
    "Essential", "Signature", "Original", "Soft", "Bold", "Mini", "Large",
)  # fmt: skip

# (name, share of shoppers, UTC offset in hours used to put the daily rhythm in local time)
COUNTRIES: tuple[tuple[str, float, float], ...] = (
    ("United Kingdom", 0.30, 0.0),
    ("Germany", 0.16, 1.0),
    ("France", 0.11, 1.0),
    ("United States", 0.14, -5.0),
    ("Spain", 0.07, 1.0),
    ("Netherlands", 0.06, 1.0),
    ("Italy", 0.05, 1.0),
    ("Ireland", 0.03, 0.0),
    ("Belgium", 0.03, 1.0),
    ("Sweden", 0.02, 1.0),
    ("Poland", 0.02, 1.0),
    ("Canada", 0.01, -5.0),
)
_COUNTRY_NULL = 0.01  # geo-IP lookup failed / country not given at sign-up

DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
_DEVICE_SHARE = np.array([0.58, 0.33, 0.09])
_DEVICE_NULL = 0.005  # unparseable user agent
_DEVICE_LOYALTY = 0.75  # chance a known shopper uses their usual device
_DEVICE_CHECKOUT = np.array([0.85, 1.25, 1.0])  # mobile carts convert worse than desktop ones

REFERRERS: tuple[str, ...] = (
    "direct", "google", "email", "facebook", "instagram", "tiktok", "bing", "affiliate",
)  # fmt: skip
# Weights over REFERRERS + [missing]; email only reaches shoppers who accepted marketing.
_REF_ANON = np.array([0.20, 0.38, 0.02, 0.08, 0.10, 0.06, 0.04, 0.05, 0.07])
_REF_KNOWN = np.array([0.30, 0.25, 0.15, 0.06, 0.07, 0.03, 0.03, 0.04, 0.07])
_REF_KNOWN_NO_MARKETING = np.where(np.arange(9) == REFERRERS.index("email"), 0.0, _REF_KNOWN)
_REF_CHECKOUT = np.array([1.1, 1.0, 1.35, 0.8, 0.8, 0.7, 1.0, 1.1, 1.0])

# Local-time traffic by hour (0..23) and by weekday (Mon..Sun): quiet nights, evening peak,
# busy Sundays and Mondays, quieter Fridays and Saturdays.
_HOURLY = np.array(
    [0.9, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.1, 1.6, 1.9, 2.0, 2.1,
     2.3, 2.2, 2.1, 2.1, 2.2, 2.5, 2.9, 3.3, 3.5, 3.2, 2.5, 1.6]
)  # fmt: skip
_WEEKLY = np.array([1.08, 1.02, 1.0, 0.98, 0.92, 0.85, 1.12])
_GROWTH = 0.15  # traffic grows by this fraction over the period

# Catalogue.
_ZIPF_EXPONENT = 1.05
_PRICE_SIGMA = 0.45
_PRE_EXISTING = 0.65  # share of items already on sale before the period starts
_PRE_EXISTING_MIN_AGE = 3 * DAY  # so the oldest stock predates every (back-shifted) session
_OUT_OF_STOCK = 0.05
_ON_SALE = 0.15
_DISCOUNTS = np.array([0.10, 0.15, 0.20, 0.25, 0.30, 0.40])

# Shoppers.
_FAVOURITES = 3
_TASTE_ALPHA = 0.8  # Dirichlet concentration over a shopper's favourite categories
_ACTIVITY_SIGMA = 1.0  # log-normal spread of sessions per shopper
_NO_PERSONALIZATION = 0.10  # those also refuse marketing: opting out of one usually means both
_NO_MARKETING_OTHERWISE = 0.135  # marketing refusals among those accepting personalization

# Sessions and funnel.
_ANONYMOUS = 0.5
_EXPLORE = 0.2  # known shoppers' sessions outside their favourite categories
_OFF_CATEGORY_VIEW = 0.2  # views that wander out of the session's category
_REVISIT = 0.08  # views that go back to the previous item
_VIEWS_NB_N, _VIEWS_NB_P = 0.5, 0.1  # negative binomial extra views: ~30% bounce, long tail
_MAX_VIEWS = 60
_GAP_MEDIAN, _GAP_SIGMA, _GAP_MAX = 35.0, 0.9, 1_800.0  # seconds between views
_INTENT_A, _INTENT_B = 0.5, 10.0  # Beta per-session chance that a view is added to the cart
_ANON_INTENT = 0.7
_REPLENISH = 0.3  # sessions in a consumable favourite that are about the shopper's usual item
_REPLENISH_CART = 0.85
_REPLENISH_CHECKOUT = 0.6
_CHECKOUT = 0.26  # base chance that a session with a cart checks out
_REMOVE = 0.12
_CHECKOUT_MIN, _CHECKOUT_MAX = 30.0, 600.0  # seconds from the last view to the order
# Calibrated mean events per session (views + cart + remove + purchase rows), used to turn
# users * events_per_user into a number of sessions.
_EVENTS_PER_SESSION = 5.85


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreShape:
    """What every preset's spec has: how many shoppers and items, over what period, from what seed.

    Attributes
    ----------
    users : int
        Registered shoppers (rows of ``users``).
    items : int
        Catalogue size.
    days : int
        Length of the period covered by the events.
    seed : int
        Seed of the numpy ``Generator``; the same spec always gives identical frames.
    end : pandas.Timestamp
        Last moment of data (UTC): no event is later. The default is a fixed date so that a spec
        is reproducible; the CLI passes the current hour.
    """

    users: int
    items: int
    days: int
    seed: int = 7
    end: pd.Timestamp = pd.Timestamp("2026-11-01", tz="UTC")

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1 or self.days < 1:
            raise ValueError(
                f"users, items and days must be >= 1, got {self.users}, {self.items}, {self.days}"
            )
        end = pd.Timestamp(self.end)
        # A naive timestamp is taken to be UTC already; an aware one is converted.
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        object.__setattr__(self, "end", end)

    @property
    def start(self) -> pd.Timestamp:
        """First moment of the period, ``end - days``."""
        return self.end - pd.Timedelta(days=self.days)


@dataclass(frozen=True)
class StoreSpec(StoreShape):
    """What to generate: the general store's sizes (see `StoreShape`) and its scale knob.

    Attributes
    ----------
    events_per_user : float
        Scale knob: the store has about ``users * events_per_user`` events, anonymous ones
        included (about as many anonymous sessions as logged-in ones). The default gives ~150k
        events for the default 2,000 users.
    """

    users: int = 2000
    items: int = 500
    days: int = 60
    events_per_user: float = 75.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.events_per_user > 0:
            raise ValueError(f"events_per_user must be > 0, got {self.events_per_user}")


@dataclass
class Store:
    """A generated store in the canonical `carousel.schema` shapes.

    Attributes
    ----------
    events : pandas.DataFrame
        Clickstream, one row per event, in time order.
    items : pandas.DataFrame
        Catalogue snapshot at ``spec.end``, item ids in order of arrival.
    users : pandas.DataFrame
        Registered shoppers, with or without events.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


def generate_store(spec: StoreSpec) -> Store:
    """Generate a synthetic store.

    Parameters
    ----------
    spec : StoreSpec
        Size, period, seed and scale of the store.

    Returns
    -------
    Store
        Events, items and users frames that pass `carousel.schema.validate_events` (with
        ``now=spec.end``), `validate_items` and `validate_users` unchanged.

    Notes
    -----
    Independent stages draw from child generators spawned from ``spec.seed``, so a change in,
    say, the funnel does not reshuffle the catalogue.
    """
    rng_items, rng_users, rng_sessions, rng_events = np.random.default_rng(spec.seed).spawn(4)
    span = spec.days * DAY
    catalog = _make_catalog(rng_items, spec.items, span)
    shoppers = _make_shoppers(rng_users, spec.users, catalog)
    n_sessions = max(1, round(spec.users * spec.events_per_user / _EVENTS_PER_SESSION))
    sessions = _make_sessions(rng_sessions, n_sessions, shoppers, catalog, spec)
    events = _make_events(rng_events, sessions, catalog, spec)
    return Store(
        events=events,
        items=_items_frame(catalog, spec.start, span),
        users=_users_frame(shoppers.country, shoppers.consent_personalization, shoppers.consent_marketing),
    )


def write_store(store: Store, out_dir: Path) -> dict[str, int]:
    """Write the store as ``events.parquet``, ``items.parquet`` and ``users.parquet``.

    Parameters
    ----------
    store : Store
        Frames in the canonical shapes (as made by `generate_store`).
    out_dir : pathlib.Path
        Directory to write to; created if missing, existing files are replaced.

    Returns
    -------
    dict[str, int]
        Rows written per table, e.g. ``{"events": 151234, "items": 500, "users": 2000}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for table, frame in ((EVENTS, store.events), (ITEMS, store.items), (USERS, store.users)):
        arrow = to_arrow(frame, table)
        pq.write_table(arrow, out_dir / f"{table.name}.parquet")
        counts[table.name] = arrow.num_rows
    return counts


# --------------------------------------------------------------------------------------------
# Catalogue.
# --------------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    """Items as arrays (index = item code), plus what the popularity sampler needs."""

    category: I32
    weight: F64  # Zipf popularity
    base_price: F64
    first_seen: F64  # seconds from the period start (negative = before it)
    stock_out: F64  # when the item sold out (inf = in stock at the end)
    sale_start: F64  # temporary promotion [sale_start, sale_end), inf when none
    sale_end: F64
    discount: F64
    brand: I32  # -1 = missing
    title_adjective: I32
    title_noun: I32
    by_category: _GroupedItems  # the popularity sampler
    anchor: I32  # most popular item of each category; always exists before the period
    cat_share: F64  # browsing share of each category (0 for categories with no items)

    def price_at(self, item: I32, t: F64) -> F64:
        """Unit price of ``item`` at ``t`` seconds from the period start, promotions applied."""
        on_sale = (t >= self.sale_start[item]) & (t < self.sale_end[item])
        price = self.base_price[item] * np.where(on_sale, 1.0 - self.discount[item], 1.0)
        return np.round(price, 2)


def _make_catalog(rng: np.random.Generator, n_items: int, span: float) -> _Catalog:
    n_cat = len(CATEGORIES)
    traffic = np.array([c.traffic for c in CATEGORIES])
    category = rng.choice(n_cat, size=n_items, p=traffic / traffic.sum()).astype(np.int32)
    # Every category gets at least one item when the catalogue is large enough.
    if n_items >= n_cat:
        category[rng.choice(n_items, size=n_cat, replace=False)] = np.arange(n_cat, dtype=np.int32)

    # Zipf popularity over a random ranking: a few blockbusters, a long tail.
    rank = rng.permutation(n_items) + 1
    weight = rank.astype(np.float64) ** -_ZIPF_EXPONENT

    medians = np.array([c.median_price for c in CATEGORIES])
    raw = medians[category] * rng.lognormal(0.0, _PRICE_SIGMA, size=n_items)
    base_price = np.maximum(np.ceil(raw) - 0.01, 0.99)  # charm pricing: 12.99, 4.99

    # A chunk of the catalogue predates the period; the rest arrives at a steady pace during it.
    pre = rng.random(n_items) < _PRE_EXISTING
    anchor = _category_anchor(category, weight, n_cat)
    pre[anchor[anchor >= 0]] = True
    first_seen = np.where(
        pre,
        -_PRE_EXISTING_MIN_AGE - rng.random(n_items) * 2 * 365 * DAY,
        rng.random(n_items) * span * 0.97,
    )

    # Items out of stock at the end sold out at some point in the second half of the period.
    sold_out = rng.random(n_items) < _OUT_OF_STOCK
    lo = np.maximum(first_seen, 0.5 * span)
    stock_out = np.where(sold_out, lo + rng.random(n_items) * (span - lo), np.inf)

    on_sale = rng.random(n_items) < _ON_SALE
    sale_start = np.where(on_sale, -7 * DAY + rng.random(n_items) * (span + 7 * DAY), np.inf)
    sale_end = sale_start + rng.uniform(3, 14, size=n_items) * DAY
    discount = rng.choice(_DISCOUNTS, size=n_items)

    # Brands: a Zipf-weighted pick from the department's window of the brand list.
    tops = sorted({c.top for c in CATEGORIES})
    top_of_cat = np.array([tops.index(c.top) for c in CATEGORIES])
    window_p = 1.0 / np.arange(1, _BRAND_WINDOW + 1)
    pick = rng.choice(_BRAND_WINDOW, size=n_items, p=window_p / window_p.sum())
    brand = ((top_of_cat[category] * len(BRANDS) // len(tops) + pick) % len(BRANDS)).astype(np.int32)
    brand[rng.random(n_items) < _BRANDS_NULL] = -1
    title_adjective = rng.integers(0, len(ADJECTIVES), size=n_items, dtype=np.int32)
    title_noun = rng.integers(0, 3, size=n_items, dtype=np.int32)

    # Items are numbered in order of arrival, as a shop's own ids would be.
    order = np.argsort(first_seen, kind="stable")
    category, weight, base_price = category[order], weight[order], base_price[order]
    first_seen, stock_out = first_seen[order], stock_out[order]
    sale_start, sale_end, discount = sale_start[order], sale_end[order], discount[order]
    brand, title_adjective, title_noun = brand[order], title_adjective[order], title_noun[order]

    return _Catalog(
        category=category,
        weight=weight,
        base_price=base_price,
        first_seen=first_seen,
        stock_out=stock_out,
        sale_start=sale_start,
        sale_end=sale_end,
        discount=discount,
        brand=brand,
        title_adjective=title_adjective,
        title_noun=title_noun,
        by_category=_GroupedItems.of(category, weight, n_cat),
        anchor=_category_anchor(category, weight, n_cat),
        cat_share=_category_share(category, traffic),
    )


@dataclass(frozen=True)
class _GroupedItems:
    """Items sorted by a group code (a category, a promotion week) for popularity-weighted draws.

    A draw inside group ``g`` maps a uniform number onto the slice of cumulative popularity that
    belongs to ``g``, so a million draws cost one ``searchsorted``.
    """

    order: I32  # item codes sorted by group
    cum_weight: F64  # cumulative popularity along ``order``
    start: I64  # each group's slice of ``order`` is [start, stop)
    stop: I64
    low: F64  # cumulative popularity just before the group's slice
    mass: F64  # the group's total popularity (0 for an empty group)

    @classmethod
    def of(cls, group: I32, weight: F64, n_groups: int) -> _GroupedItems:
        """Group the items by ``group`` (codes 0..n_groups-1) with popularity ``weight``."""
        order = np.argsort(group, kind="stable").astype(np.int32)
        cum_weight = np.cumsum(weight[order])
        counts = np.bincount(group, minlength=n_groups)
        stop = np.cumsum(counts)
        start = stop - counts
        low = np.where(start > 0, cum_weight[np.maximum(start - 1, 0)], 0.0)
        mass = np.where(counts > 0, cum_weight[np.maximum(stop - 1, 0)] - low, 0.0)
        return cls(order=order, cum_weight=cum_weight, start=start, stop=stop, low=low, mass=mass)

    def draw(self, group: npt.NDArray[np.integer], u: F64) -> I32:
        """One popularity-weighted item of each given (non-empty) group, ``u`` uniform in [0, 1)."""
        target = self.low[group] + u * self.mass[group]
        pos = np.searchsorted(self.cum_weight, target, side="right")
        # Float round-off at a slice edge must not spill into the neighbouring group.
        pos = np.clip(pos, self.start[group], self.stop[group] - 1)
        return self.order[pos]


def _category_share(category: I32, traffic: F64) -> F64:
    """Browsing share of each category, 0 for a category without items."""
    share = np.where(np.bincount(category, minlength=traffic.size) > 0, traffic, 0.0)
    return share / share.sum()


def _category_anchor(category: I32, weight: F64, n_cat: int) -> I32:
    """Index of each category's most popular item (-1 for an empty category)."""
    order = np.lexsort((-weight, category))  # by category, most popular first
    first = np.r_[True, category[order][1:] != category[order][:-1]]
    anchor = np.full(n_cat, -1, dtype=np.int32)
    anchor[category[order][first]] = order[first]
    return anchor


def _sample_items(rng: np.random.Generator, cat: I32, t: F64, catalog: _Catalog) -> I32:
    """Popularity-weighted items of the given categories that already exist at time ``t``.

    Draws all rows at once, then redraws only the rows whose item did not exist yet; the few
    rows still unlucky after a handful of rounds get their category's anchor item, which exists
    before the period starts.
    """
    out = np.empty(len(cat), dtype=np.int32)
    todo = np.arange(len(cat))
    for _ in range(8):
        if todo.size == 0:
            break
        item = catalog.by_category.draw(cat[todo], rng.random(todo.size))
        ok = catalog.first_seen[item] <= t[todo]
        out[todo[ok]] = item[ok]
        todo = todo[~ok]
    out[todo] = catalog.anchor[cat[todo]]
    return out


# --------------------------------------------------------------------------------------------
# Shoppers.
# --------------------------------------------------------------------------------------------


@dataclass
class _Shoppers:
    country: I8  # -1 = missing
    device: I8  # usual device
    activity: F64  # relative rate of sessions
    favourite: I32  # (users, _FAVOURITES) category codes
    taste: F64  # (users, _FAVOURITES) Dirichlet weights over the favourites
    staple: I32  # (users, _FAVOURITES) usual item in a consumable favourite, -1 otherwise
    consent_personalization: B
    consent_marketing: B


def _make_shoppers(rng: np.random.Generator, n_users: int, catalog: _Catalog) -> _Shoppers:
    country = _draw_with_missing(rng, np.array([c[1] for c in COUNTRIES]), _COUNTRY_NULL, n_users)
    device = rng.choice(len(DEVICES), size=n_users, p=_DEVICE_SHARE).astype(np.int8)
    activity = rng.lognormal(0.0, _ACTIVITY_SIGMA, size=n_users)
    favourite = rng.choice(len(CATEGORIES), size=(n_users, _FAVOURITES), p=catalog.cat_share).astype(np.int32)
    taste = rng.dirichlet(np.full(_FAVOURITES, _TASTE_ALPHA), size=n_users)

    # A staple is what the shopper keeps re-buying in a consumable favourite; it is drawn among
    # items that exist before the period so that it can be bought from the first day.
    consumable = np.array([c.consumable for c in CATEGORIES])
    staple = np.full((n_users, _FAVOURITES), -1, dtype=np.int32)
    has = consumable[favourite]
    cats = favourite[has]
    staple[has] = _sample_items(rng, cats, np.full(cats.size, -_PRE_EXISTING_MIN_AGE), catalog)

    consent_personalization, consent_marketing = _draw_consent(rng, n_users)
    return _Shoppers(
        country=country,
        device=device,
        activity=activity,
        favourite=favourite,
        taste=taste,
        staple=staple,
        consent_personalization=consent_personalization,
        consent_marketing=consent_marketing,
    )


def _draw_consent(rng: np.random.Generator, n: int) -> tuple[B, B]:
    """Consent to personalization and to marketing; refusing the first usually means both."""
    no_personalization = rng.random(n) < _NO_PERSONALIZATION
    no_marketing = no_personalization | (rng.random(n) < _NO_MARKETING_OTHERWISE)
    return ~no_personalization, ~no_marketing


def _draw_with_missing(rng: np.random.Generator, weights: F64, missing: float, n: int) -> I8:
    """Codes drawn with the given weights, with a ``missing`` share of -1."""
    codes = rng.choice(len(weights), size=n, p=weights / weights.sum()).astype(np.int8)
    codes[rng.random(n) < missing] = -1
    return codes


# --------------------------------------------------------------------------------------------
# Sessions.
# --------------------------------------------------------------------------------------------


@dataclass
class _Sessions:
    """Sessions as arrays, in order of start time (index = session number)."""

    user: I32  # -1 = anonymous
    country: I8
    device: I8
    referrer: I8
    category: I32
    views: I32
    intent: F64
    checkout: F64  # chance of checking out once there is something in the cart
    staple: I32  # item the session is about (replenishment), -1 otherwise
    start: F64  # seconds from the period start


def _make_sessions(
    rng: np.random.Generator, n: int, shoppers: _Shoppers, catalog: _Catalog, spec: StoreSpec
) -> _Sessions:
    n_cat = len(CATEGORIES)
    anonymous = rng.random(n) < _ANONYMOUS
    known = np.flatnonzero(~anonymous)
    user = np.full(n, -1, dtype=np.int32)
    user[known] = rng.choice(spec.users, size=known.size, p=shoppers.activity / shoppers.activity.sum())
    u = user[known]

    # Country: a known shopper's own (sometimes travelling); an anonymous visitor's from the mix.
    country_w = np.array([c[1] for c in COUNTRIES])
    country = _draw_with_missing(rng, country_w, _COUNTRY_NULL, n)
    home = shoppers.country[u]
    stays = (rng.random(known.size) < 0.96) & (home >= 0)
    country[known[stays]] = home[stays]

    device = _draw_with_missing(rng, _DEVICE_SHARE, _DEVICE_NULL, n)
    loyal = rng.random(known.size) < _DEVICE_LOYALTY
    device[known[loyal]] = shoppers.device[u[loyal]]

    referrer = np.empty(n, dtype=np.int8)
    marketing = np.zeros(n, dtype=bool)
    marketing[known] = shoppers.consent_marketing[u]
    for mask, weights in (
        (anonymous, _REF_ANON),
        (~anonymous & marketing, _REF_KNOWN),
        (~anonymous & ~marketing, _REF_KNOWN_NO_MARKETING),
    ):
        drawn = rng.choice(len(weights), size=int(mask.sum()), p=weights / weights.sum())
        referrer[mask] = np.where(drawn == len(REFERRERS), -1, drawn)

    # Category: mostly one of a known shopper's favourites (by taste), otherwise the global mix.
    category = rng.choice(n_cat, size=n, p=catalog.cat_share).astype(np.int32)
    staple = np.full(n, -1, dtype=np.int32)
    explore = rng.random(known.size) < _EXPLORE
    cum_taste = np.cumsum(shoppers.taste[u], axis=1)
    slot = (rng.random(known.size)[:, None] > cum_taste[:, :-1]).sum(axis=1)
    fav = shoppers.favourite[u, slot]
    category[known[~explore]] = fav[~explore]
    replenish = ~explore & (shoppers.staple[u, slot] >= 0) & (rng.random(known.size) < _REPLENISH)
    staple[known[replenish]] = shoppers.staple[u, slot][replenish]

    extra_views = rng.negative_binomial(_VIEWS_NB_N, _VIEWS_NB_P, size=n)
    views = np.minimum(1 + extra_views, _MAX_VIEWS).astype(np.int32)
    intent = rng.beta(_INTENT_A, _INTENT_B, size=n)
    intent[anonymous] *= _ANON_INTENT
    # A missing referrer (-1) picks the last multiplier, the one for "missing".
    checkout = _CHECKOUT * _DEVICE_CHECKOUT[np.maximum(device, 0)] * _REF_CHECKOUT[referrer]
    checkout[staple >= 0] = _REPLENISH_CHECKOUT

    offset = np.where(country >= 0, np.array([c[2] for c in COUNTRIES])[country], 0.0)
    start = _session_starts(rng, offset, spec)

    order = np.argsort(start, kind="stable")
    return _Sessions(
        user=user[order],
        country=country[order],
        device=device[order],
        referrer=referrer[order],
        category=category[order],
        views=views[order],
        intent=intent[order],
        checkout=checkout[order],
        staple=staple[order],
        start=start[order],
    )


def _session_starts(rng: np.random.Generator, utc_offset: F64, spec: StoreSpec) -> F64:
    """Session start times (seconds from the period start) with local daily and weekly rhythm.

    A calendar day (weighted by weekday and growth) and a local hour (weighted by the daily
    profile) are drawn, moved to UTC with the country's offset, and redrawn when they fall
    outside the period.
    """
    span = spec.days * DAY
    midnight = spec.start.floor("D")
    lead = (midnight - spec.start).total_seconds()  # <= 0
    n_cal = spec.days + 3  # calendar days that can overlap the period in some time zone
    cal = np.arange(-1, n_cal - 1)
    weekday = (midnight.weekday() + cal) % 7
    day_w = _WEEKLY[weekday] * (1.0 + _GROWTH * cal / spec.days)
    day_p = day_w / day_w.sum()
    hour_p = _HOURLY / _HOURLY.sum()

    start = np.empty(utc_offset.size)
    todo = np.arange(utc_offset.size)
    for _ in range(64):
        if todo.size == 0:
            break
        day = cal[rng.choice(n_cal, size=todo.size, p=day_p)]
        hour = rng.choice(24, size=todo.size, p=hour_p)
        t = lead + day * DAY + (hour + rng.random(todo.size)) * HOUR - utc_offset[todo] * HOUR
        ok = (t >= 0) & (t < span)
        start[todo[ok]] = t[ok]
        todo = todo[~ok]
    start[todo] = rng.random(todo.size) * span  # practically unreachable; keeps the bound exact
    return start


# --------------------------------------------------------------------------------------------
# Events.
# --------------------------------------------------------------------------------------------


def _make_events(rng: np.random.Generator, s: _Sessions, catalog: _Catalog, spec: StoreSpec) -> pd.DataFrame:
    span = spec.days * DAY
    n_sessions = s.views.size

    # Views: one row per view, session by session; gaps[i] is the pause after view i (after the
    # last view of a session it is the time until the visitor leaves or checks out).
    v_sess = np.repeat(np.arange(n_sessions, dtype=np.int32), s.views)
    first = np.cumsum(s.views) - s.views
    pos = np.arange(v_sess.size) - first[v_sess]
    gaps = np.minimum(rng.lognormal(np.log(_GAP_MEDIAN), _GAP_SIGMA, size=v_sess.size), _GAP_MAX)
    cum = np.cumsum(gaps)
    before = cum - gaps
    elapsed = before - before[first][v_sess]
    close = s.start + (cum[first + s.views - 1] - before[first])  # session start + all gaps

    # Nothing may happen after `end`: sessions whose order could land too late are moved back.
    latest = close + _CHECKOUT_MAX + s.views + 1.0  # + 1 s per order line, at most one per view
    shift = np.maximum(latest - span, 0.0)
    start = s.start - shift
    close = close - shift
    v_t = start[v_sess] + elapsed

    # What is viewed: mostly the session's category; sometimes elsewhere; sometimes the
    # previous item again. Replenishment sessions open on the shopper's staple.
    wander = (pos > 0) & (rng.random(v_sess.size) < _OFF_CATEGORY_VIEW)
    elsewhere = rng.choice(len(CATEGORIES), size=v_sess.size, p=catalog.cat_share)
    v_cat = np.where(wander, elsewhere, s.category[v_sess]).astype(np.int32)
    revisit = (pos > 0) & (rng.random(v_sess.size) < _REVISIT)
    v_item = np.zeros(v_sess.size, dtype=np.int32)
    fresh = np.flatnonzero(~revisit)
    v_item[fresh] = _sample_items(rng, v_cat[fresh], v_t[fresh], catalog)
    replenish = (pos == 0) & (s.staple[v_sess] >= 0)
    replenish &= catalog.first_seen[np.maximum(s.staple[v_sess], 0)] <= v_t
    v_item[replenish] = s.staple[v_sess[replenish]]
    # A revisit copies the latest non-revisit view; view 0 never revisits, so this stays within
    # the session.
    src = np.maximum.accumulate(np.where(revisit, 0, np.arange(v_sess.size)))
    v_item = v_item[src]

    # Add to cart: per-session intent; replenishment views almost always; never once sold out.
    # One cart line per item and session.
    cart = rng.random(v_sess.size) < s.intent[v_sess]
    cart = np.where(replenish, rng.random(v_sess.size) < _REPLENISH_CART, cart)
    cart &= v_t < catalog.stock_out[v_item]
    cand = np.flatnonzero(cart)
    line_key = v_sess[cand].astype(np.int64) * len(catalog.category) + v_item[cand]
    _, keep = np.unique(line_key, return_index=True)
    c_view = np.sort(cand[keep])
    c_sess, c_item = v_sess[c_view], v_item[c_view]
    # The cart event falls between the view and the next view (or the end of the session).
    c_t = v_t[c_view] + rng.uniform(0.15, 0.85, size=c_view.size) * gaps[c_view]
    consumable = np.array([c.consumable for c in CATEGORIES])[catalog.category[c_item]]
    extra = np.where(consumable, rng.poisson(0.5, size=c_view.size), rng.random(c_view.size) < 0.07)
    c_qty = (1 + np.minimum(extra, 5)).astype(np.int32)

    # Some lines are taken out again before the visitor leaves.
    removed = rng.random(c_view.size) < _REMOVE
    r_t = c_t + rng.uniform(0.1, 0.9, size=c_view.size) * (close[c_sess] - c_t)

    # Checkout: the session's remaining lines are ordered shortly after the last view, one
    # second apart; a session that does not check out is an abandoned cart.
    checks_out = rng.random(n_sessions) < s.checkout
    order_t = close + rng.uniform(_CHECKOUT_MIN, _CHECKOUT_MAX, size=n_sessions)
    bought = ~removed & checks_out[c_sess]
    p_sess = c_sess[bought]
    new_order = np.r_[True, p_sess[1:] != p_sess[:-1]]
    idx = np.arange(p_sess.size)
    line = idx - np.maximum.accumulate(np.where(new_order, idx, 0))
    p_t = order_t[p_sess] + line

    sess = np.concatenate([v_sess, c_sess, c_sess[removed], p_sess])
    item = np.concatenate([v_item, c_item, c_item[removed], c_item[bought]])
    kind = np.concatenate(
        [
            np.full(v_sess.size, EVENT_TYPES.index("view"), dtype=np.int8),
            np.full(c_sess.size, EVENT_TYPES.index("add_to_cart"), dtype=np.int8),
            np.full(int(removed.sum()), EVENT_TYPES.index("remove_from_cart"), dtype=np.int8),
            np.full(p_sess.size, EVENT_TYPES.index("purchase"), dtype=np.int8),
        ]
    )
    t = np.concatenate([v_t, c_t, r_t[removed], p_t])
    qty = np.concatenate([np.ones(v_sess.size, dtype=np.int32), c_qty, c_qty[removed], c_qty[bought]])
    del v_sess, v_item, v_t, v_cat, gaps, cum, before, elapsed, pos, src, cart

    # A log is in time order; ties (same microsecond) are broken by session and funnel step.
    start_us = spec.start.value // 1_000
    ts_us = start_us + np.floor(t * 1e6).astype(np.int64)
    order = np.lexsort((kind, sess, ts_us))
    sess, item, kind = sess[order], item[order], kind[order]
    qty, t, ts_us = qty[order], t[order], ts_us[order]

    return _events_frame(
        catalog,
        n_users=spec.users,
        n_sessions=n_sessions,
        sess=sess,
        item=item,
        kind=kind,
        t=t,
        ts_us=ts_us,
        qty=qty,
        user=s.user[sess],
        country=s.country[sess],
        device=s.device[sess],
        referrer=s.referrer[sess],
    )


# --------------------------------------------------------------------------------------------
# Frames.
# --------------------------------------------------------------------------------------------


def _events_frame(
    catalog: _Catalog,
    *,
    n_users: int,
    n_sessions: int,
    sess: I32,
    item: I32,
    kind: I8,
    t: F64,
    ts_us: I64,
    qty: I32,
    user: I32,
    country: I8,
    device: I8,
    referrer: I8,
) -> pd.DataFrame:
    """The events table from per-event codes (-1 = missing) and times (``t``: seconds from the
    period start, for the price; ``ts_us``: the timestamp in microseconds since the epoch)."""
    return pd.DataFrame(
        {
            "user_id": _strings(user, _ids("u", n_users, 6)),
            "session_id": _strings(sess, _ids("s", n_sessions, 7)),
            "item_id": _strings(item, _ids("i", len(catalog.category), 5)),
            "event_type": _strings(kind, pa.array(EVENT_TYPES)),
            "ts": _utc(ts_us),
            "quantity": qty,
            "price": catalog.price_at(item, t),
            "country": _strings(country, pa.array([c[0] for c in COUNTRIES])),
            "device": _strings(device, pa.array(DEVICES)),
            "referrer": _strings(referrer, pa.array(REFERRERS)),
        }
    )


def _items_frame(
    catalog: _Catalog,
    start: pd.Timestamp,
    span: float,
    categories: Sequence[Category] = CATEGORIES,
    brands: Sequence[str] = BRANDS,
    adjectives: Sequence[str] = ADJECTIVES,
) -> pd.DataFrame:
    """The catalogue at the end of the period; every category has three title nouns."""
    n = len(catalog.category)
    brand = np.array(brands, dtype=object)[np.maximum(catalog.brand, 0)]
    nouns = np.array([noun for c in categories for noun in c.nouns], dtype=object)
    noun = nouns[catalog.category * 3 + catalog.title_noun]
    product = np.array(adjectives, dtype=object)[catalog.title_adjective] + " " + noun
    title = np.where(catalog.brand >= 0, brand + " " + product, product)
    at_end = np.full(n, span)
    start_us = start.value // 1_000
    return pd.DataFrame(
        {
            "item_id": _strings(np.arange(n), _ids("i", n, 5)),
            "title": pd.Series(pd.arrays.ArrowStringArray(pa.array(title, type=pa.string()))),
            "category": _strings(catalog.category, pa.array([c.path for c in categories])),
            "brand": _strings(catalog.brand, pa.array(brands)),
            "price": catalog.price_at(np.arange(n, dtype=np.int32), at_end),
            "in_stock": catalog.stock_out > span,
            "first_seen": _utc(start_us + np.floor(catalog.first_seen * 1e6).astype(np.int64)),
        }
    )


def _users_frame(country: I8, consent_personalization: B, consent_marketing: B) -> pd.DataFrame:
    """The users table; ``country`` holds codes into `COUNTRIES` (-1 = missing)."""
    n = country.size
    return pd.DataFrame(
        {
            "user_id": _strings(np.arange(n), _ids("u", n, 6)),
            "country": _strings(country, pa.array([c[0] for c in COUNTRIES])),
            "consent_personalization": consent_personalization,
            "consent_marketing": consent_marketing,
        }
    )


def _ids(prefix: str, n: int, min_width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers 0..n-1, e.g. 'u000123'."""
    width = max(min_width, len(str(max(n - 1, 0))))
    return pa.array(np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)))


def _strings(codes: npt.NDArray[np.integer], labels: pa.Array) -> pd.Series:
    """Codes (-1 = missing) decoded into a pyarrow-backed string column, without Python objects."""
    idx = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pd.Series(pd.arrays.ArrowStringArray(labels.take(idx)))


def _utc(us: I64) -> pd.Series:
    """Microseconds since the epoch as a ``datetime64[us, UTC]`` column."""
    return pd.Series(us.view("datetime64[us]")).dt.tz_localize("UTC")


# --------------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Generate a store and write it as parquet (``python -m jobs.ingest.synthetic --help``).

    Parameters
    ----------
    argv : Sequence[str], optional
        Command-line arguments; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        Process exit code.
    """
    defaults = StoreSpec()
    parser = argparse.ArgumentParser(
        prog="python -m jobs.ingest.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the three parquet files")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--items", type=int, default=defaults.items)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--events-per-user", type=float, default=defaults.events_per_user)
    parser.add_argument("--end", default=None, help="last moment of data, UTC (default: today, 00:00 UTC)")
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip schema validation (slow on tens of millions of rows)",
    )
    args = parser.parse_args(argv)

    end = pd.Timestamp(args.end) if args.end else pd.Timestamp.now(tz="UTC").floor("D")
    spec = StoreSpec(
        users=args.users,
        items=args.items,
        days=args.days,
        seed=args.seed,
        end=end,
        events_per_user=args.events_per_user,
    )
    began = time.perf_counter()
    store = generate_store(spec)
    if not args.no_validate:
        validate_events(store.events, now=spec.end)
        validate_items(store.items)
        validate_users(store.users)
    counts = write_store(store, args.out)
    took = time.perf_counter() - began
    print(f"wrote {counts} to {args.out} in {took:.1f}s ({spec.start} .. {spec.end})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate a grocery-like store: households on weekly trips re-buying, switching and exploring.

The general store (`jobs.ingest.synthetic`) is a clickstream of browsing sessions. A grocer's data is
different, and this preset (``carousel generate --preset grocery``) models what makes it so:

- **A broad pool of regular items with a skewed preference.** Each household draws about 120 regular
  items by its taste over categories and popularity within them, weighted by a Zipf-like
  preference (rank^-0.5 with noise). One or two favourites are bought every cycle, dozens in
  episodes, the tail a few times a year; the interests are scaled so that the regulars fill the
  household's basket at its trip rate.
- **Item-specific cycles as a hazard.** The cycle is a property of the item (milk ~6 days, detergent
  ~6 weeks: a category's typical cycle, spread per item) with a household-specific factor. The gap
  to the next need is Gamma-distributed around it, so the chance of a purchase rises with the time
  since the last one relative to the cycle; a need is met on the next trip.
- **Episodes.** A regular that is not a favourite is bought in episodes of about four cycles (a
  recipe, a diet, a season), separated by pauses of months; the household comes back to it later.
- **Forgetting and switching.** A due item is now and then forgotten, and a household-specific share
  of purchases (about 1 in 8) goes to another item of the category: mostly the household's usual
  alternative (brand or size switching), else any. A delisted item is replaced likewise.
- **Weekly trips.** A household shops on its habitual weekday and hour, skips some weeks, moves a trip
  by a day now and then, and sometimes tops up mid-week. Some households join or leave during the
  period.
- **Baskets of 8-15 items.** Each household has its own mean basket size.
- **A household-specific explore share** (about 20% of lines): items picked outside the regulars,
  in their categories, among this week's promotions, the last four weeks' new arrivals, or anywhere
  by popularity and season (ice cream and water in summer, baking and wine at Christmas).
- **Slow drift.** A regular is swapped for another item of its category about once in two years.
- **A long-tail catalogue** (60k items by default) in departments and categories with brands (a third
  own label), grocery prices (log-normal around each category's median, ending in 9), weekly
  promotions, new arrivals during the period and a few delisted items.

The events are purchases only, one session per trip, as an online grocer's order history (and the
real grocery data this preset stands in for) has them: shoppers fill their baskets from their
previous orders and lists, so there is little browsing to log, and no anonymous visitor can order. The
frames are in the same canonical shapes as the general store's (`carousel.schema`), so `carousel
import`, `carousel evaluate --dataset events` and the pipeline take them unchanged.

Everything is vectorised (no Python loop per household, trip or line; the only loop bisects every
household's interest scale at once) and drawn from one seeded numpy
``Generator``; the default store (2,500 households, 60,000 items, a year, ~1.3M purchase lines) takes
about 6 s. From code::

    store = generate_grocery(GrocerySpec(users=500, items=5_000, days=120))
    write_store(store, Path("var/grocery"))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from carousel.schema import EVENT_TYPES
from jobs.ingest.synthetic import (
    COUNTRIES,
    DAY,
    DEVICES,
    F64,
    HOUR,
    I32,
    I64,
    REFERRERS,
    B,
    Category,
    Store,
    StoreShape,
    _Catalog,
    _category_anchor,
    _category_share,
    _draw_consent,
    _draw_with_missing,
    _events_frame,
    _GroupedItems,
    _items_frame,
    _sample_items,
    _users_frame,
)

WEEK = 7 * DAY


@dataclass(frozen=True)
class GroceryCategory(Category):
    """A grocery category: a `Category` whose items run out after about ``cycle_days``.

    Attributes
    ----------
    cycle_days : float
        Typical days between two purchases of one of its items by a household that buys it
        regularly; each item's own cycle is spread around it.
    """

    cycle_days: float


def _category(path: str, price: float, share: float, cycle: float, *nouns: str) -> GroceryCategory:
    return GroceryCategory(path, price, share, True, nouns, cycle)


# (path, median price, share of the assortment and of household taste, cycle in days, title nouns)
GROCERY_CATEGORIES: tuple[GroceryCategory, ...] = (
    _category("dairy/milk", 1.3, 2.0, 6, "Semi-Skimmed Milk 2L", "Whole Milk 1L", "Oat Drink 1L"),
    _category("dairy/cheese", 3.0, 3.0, 14, "Mature Cheddar 400g", "Mozzarella 125g", "Grated Parmesan"),
    _category("dairy/yogurt", 1.5, 2.5, 8, "Greek Yogurt 500g", "Fruit Yogurts 4x125g", "Natural Yogurt"),
    _category("dairy/butter-eggs", 2.2, 1.5, 12, "Salted Butter 250g", "Free Range Eggs x6", "Spread 500g"),
    _category("bakery/bread", 1.2, 2.0, 5, "Wholemeal Loaf", "Sourdough", "White Sliced Bread"),
    _category("bakery/pastries", 2.0, 1.5, 12, "Croissants x4", "Cinnamon Buns", "Muffins x4"),
    _category("produce/fruit", 1.8, 3.0, 7, "Bananas x5", "Gala Apples x6", "Blueberries 150g"),
    _category("produce/vegetables", 1.0, 3.5, 7, "Carrots 1kg", "Broccoli", "Brown Onions 1kg"),
    _category("produce/salad", 1.0, 2.0, 8, "Cherry Tomatoes", "Cucumber", "Mixed Leaf Salad"),
    _category("produce/potatoes", 1.5, 0.8, 14, "Baking Potatoes x4", "New Potatoes 1kg", "Sweet Potatoes"),
    _category("meat/poultry", 4.5, 2.0, 9, "Chicken Breast Fillets", "Whole Chicken", "Chicken Thighs"),
    _category("meat/beef-pork", 5.0, 2.5, 14, "Beef Mince 500g", "Pork Sausages x8", "Smoked Bacon"),
    _category("meat/fish", 4.5, 1.8, 16, "Salmon Fillets x2", "Cod Fillets", "King Prawns 200g"),
    _category("meat/deli", 2.5, 2.0, 10, "Sliced Ham", "Chorizo", "Houmous"),
    _category("frozen/meals", 3.5, 2.5, 21, "Stonebaked Pizza", "Lasagne", "Fish Fingers"),
    _category("frozen/vegetables", 1.5, 1.2, 25, "Garden Peas", "Mixed Vegetables", "Oven Chips"),
    _category("frozen/ice-cream", 3.0, 1.5, 28, "Vanilla Ice Cream", "Ice Lollies x6", "Sorbet"),
    _category("pantry/pasta-rice", 1.4, 2.5, 28, "Fusilli 500g", "Basmati Rice 1kg", "Egg Noodles"),
    _category("pantry/canned", 1.0, 3.0, 21, "Chopped Tomatoes", "Baked Beans", "Chickpeas"),
    _category("pantry/sauces", 2.0, 3.0, 35, "Pasta Sauce", "Tomato Ketchup", "Soy Sauce"),
    _category("pantry/baking", 1.8, 2.0, 60, "Plain Flour 1.5kg", "Caster Sugar", "Baking Powder"),
    _category("pantry/oil-spices", 2.5, 2.5, 75, "Olive Oil 500ml", "Black Pepper", "Mixed Herbs"),
    _category("pantry/spreads", 2.5, 1.5, 30, "Strawberry Jam", "Peanut Butter", "Clear Honey"),
    _category("breakfast/cereal", 2.8, 2.0, 18, "Cornflakes", "Granola", "Porridge Oats"),
    _category("drinks/water", 0.9, 1.5, 7, "Still Water 6x1.5L", "Sparkling Water", "Flavoured Water"),
    _category("drinks/soft-drinks", 1.8, 2.5, 10, "Cola 2L", "Lemonade", "Orange Squash"),
    _category("drinks/juice", 2.0, 1.5, 9, "Orange Juice 1L", "Apple Juice", "Smoothie"),
    _category("drinks/coffee", 4.0, 1.8, 21, "Ground Coffee 227g", "Instant Coffee", "Coffee Pods x10"),
    _category("drinks/tea", 2.5, 1.2, 30, "Tea Bags x80", "Green Tea", "Herbal Tea"),
    _category("drinks/beer-wine", 7.0, 3.0, 14, "Red Wine 75cl", "Lager 4x440ml", "Prosecco"),
    _category("snacks/crisps", 1.5, 2.5, 10, "Sea Salt Crisps", "Tortilla Chips", "Popcorn"),
    _category("snacks/chocolate", 1.5, 2.5, 10, "Milk Chocolate Bar", "Dark Chocolate", "Chocolate Buttons"),
    _category("snacks/biscuits", 1.3, 2.0, 14, "Digestives", "Chocolate Cookies", "Rice Cakes"),
    _category("household/laundry", 6.0, 1.5, 40, "Laundry Liquid", "Fabric Conditioner", "Laundry Pods"),
    _category("household/cleaning", 2.5, 2.0, 45, "Washing Up Liquid", "Surface Spray", "Thick Bleach"),
    _category("household/paper", 4.0, 1.2, 24, "Toilet Roll x9", "Kitchen Roll", "Tissues"),
    _category("household/bags-foil", 2.5, 0.8, 60, "Bin Bags", "Cling Film", "Kitchen Foil"),
    _category("personal-care/bath", 3.0, 2.5, 40, "Shower Gel", "Shampoo", "Hand Wash"),
    _category("personal-care/oral", 2.5, 1.2, 35, "Toothpaste", "Toothbrush", "Mouthwash"),
    _category("personal-care/health", 4.0, 1.5, 60, "Paracetamol x16", "Plasters", "Multivitamins"),
    _category("baby/nappies", 9.0, 0.8, 10, "Nappies Size 4", "Baby Wipes", "Nappy Bags"),
    _category("baby/food", 1.2, 0.8, 7, "Baby Puree Pouch", "Baby Porridge", "Formula Milk"),
    _category("pet/cat", 3.5, 1.0, 10, "Cat Food Pouches x12", "Dry Cat Food", "Cat Litter"),
    _category("pet/dog", 4.0, 1.0, 14, "Dog Food Tins", "Dry Dog Food", "Dog Treats"),
)

# The grocer's own labels come first; each department draws its other brands from an overlapping
# window of the rest, as in the general store.
GROCERY_BRANDS: tuple[str, ...] = (
    "Market Basics", "Market Finest",
    # roughly in the order of the departments (baby, bakery, breakfast, dairy, drinks, frozen,
    # household, meat, pantry, personal-care, pet, produce, snacks)
    "Little Ones", "Golden Crust", "Bakewell", "Morning Oat", "Dairyfield", "Springwell", "Fizzco",
    "Grove Press", "Roastery", "Cellar Door", "Frostbite", "Sparkle", "Softleaf", "Hearth & Home",
    "Butcher's Block", "Harbour Catch", "Nonna's", "Tin & Table", "Saucery", "Purely", "Smile Bright",
    "Remedy", "Purrfect", "Good Boy", "Greenvale", "Orchard Lane", "Fieldfresh", "Freshline",
    "Crunchworks", "Cocoa Bay", "Biscuit Tin", "Leafwell",
)  # fmt: skip
_OWN_LABELS = 2
_OWN_LABEL_SHARE = 0.3
_BRAND_WINDOW = 6

GROCERY_ADJECTIVES: tuple[str, ...] = (
    "Organic", "Free From", "Classic", "Family Pack", "Light", "British", "Italian", "Everyday",
    "Fairtrade", "Wholegrain", "Reduced Sugar", "Extra Large",
)  # fmt: skip

# Catalogue.
_ZIPF_EXPONENT = 0.9  # flatter than the general store's: a grocer's top sellers are many
_PRICE_SIGMA = 0.4
_ITEM_CYCLE_SIGMA = 0.35  # log-normal spread of an item's cycle around its category's
_PRE_EXISTING = 0.85  # share of items on sale before the period starts; the rest arrive during it
_DELISTED = 0.03  # items taken off sale in the second half of the period
_PROMOTED = 0.3  # items with one promotion week in the period
_DISCOUNTS = np.array([0.10, 0.20, 0.25, 1 / 3])

# Households.
_COUNTRY = "United Kingdom"  # one chain, one country; its local time is taken to be UTC
_COUNTRY_NULL = 0.01
_DEVICE_SHARE = np.array([0.62, 0.33, 0.05])
_DEVICE_LOYALTY = 0.85
# Weights over REFERRERS + [missing]: mostly the app or a bookmark, email reminders for those who
# accepted marketing.
_REF = np.array([0.72, 0.06, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.10])
_REF_NO_MARKETING = np.where(np.arange(len(_REF)) == REFERRERS.index("email"), 0.0, _REF)
_JOIN = 0.10  # households whose first trip is during the period
_LEAVE = 0.06  # households that stop shopping during the period
_MAIN_TRIP_A, _MAIN_TRIP_B = 8.0, 2.0  # Beta chance of the weekly trip (mean 0.8: some weeks skipped)
_EXTRA_TRIP_A, _EXTRA_TRIP_B = 1.2, 4.0  # Beta chance of a mid-week top-up (mean 0.23)
_HABIT_DAY = np.array([0.9, 0.8, 0.8, 0.9, 1.1, 1.4, 1.2])  # Mon..Sun
_HABIT_HOURS = np.arange(8, 22)
_HABIT_HOUR_P = np.array([2, 3, 4, 4, 3, 3, 3, 3, 4, 5, 6, 6, 5, 3], dtype=np.float64)
_DAY_SHIFT = np.array([-1, 0, 1, 2])  # a weekly trip moved by a day or two
_DAY_SHIFT_P = np.array([0.12, 0.70, 0.12, 0.06])
_BASKET_MEDIAN, _BASKET_SIGMA, _BASKET_MIN, _BASKET_MAX = 11.0, 0.3, 5.0, 30.0
_EXPLORE_A, _EXPLORE_B = 2.0, 8.0  # Beta share of a household's lines that are explore picks (mean 0.2)

# Regular items.
_TASTE_SHAPE = 0.6  # Gamma noise on category shares: households differ (pets, babies, wine)
_POOL = 160  # candidate regular items per household, in order of the household's preference
_PREFERENCE_EXPONENT = 0.5  # Zipf-like preference over the pool: the r-th candidate weighs r^-0.5 ...
_PREFERENCE_SIGMA = 0.6  # ... times log-normal noise, so ranks are not a strict order
_MIN_INTEREST = 0.04  # candidates the household would buy less often than this are not regulars
_HOUSEHOLD_CYCLE_SIGMA = 0.25  # a household's own pace on an item
_HAZARD_SHAPE = 8.0  # Gamma shape of one cycle: the chance of a purchase rises as the item runs out
_STAPLE_LIFE = 2 * 365 * DAY  # mean time before a regular item is dropped for another of its category
_ON_INTEREST = 1.0  # interest in an item while in an episode of buying it (every cycle) ...
_ON_CYCLES = 4.0  # ... which lasts about this many of its cycles
_FORGET = 0.07  # a due regular left out of the basket
_SWITCH_A, _SWITCH_B = 1.0, 7.0  # Beta share of a household's purchases moved to another item ...
_SWITCH_TO_USUAL = 0.6  # ... of the same category: the slot's usual alternative, else any
_MAX_NEEDS = 6  # needs met on one trip count as at most this many units
_EXTRA_UNIT = 0.12  # lines with one more unit than needed (multi-buy, guests)

# Explore picks: near the household's regulars, on promotion this week, newly arrived; the rest
# anywhere by popularity and season.
_EXPLORE_NEAR, _EXPLORE_PROMO, _EXPLORE_NEW = 0.40, 0.20, 0.08
_NEW_WINDOW = 28 * DAY
# Seasonal categories: (path, amplitude, peak day of the year); a category's share of the explore
# picks made anywhere is scaled by 1 + amplitude * cos(2 pi (day - peak) / 365).
_SEASONS: tuple[tuple[str, float, int], ...] = (
    ("frozen/ice-cream", 0.9, 200),
    ("drinks/water", 0.6, 200),
    ("drinks/soft-drinks", 0.4, 200),
    ("produce/salad", 0.5, 190),
    ("drinks/beer-wine", 0.5, 355),
    ("pantry/baking", 0.6, 350),
    ("snacks/chocolate", 0.5, 355),
    ("personal-care/health", 0.4, 15),
)

_CLOSE = 600.0  # a trip starts at least this long before the end; its lines are 1 s apart


@dataclass(frozen=True)
class GrocerySpec(StoreShape):
    """What to generate for the grocery preset: `StoreShape`, with ``users`` counting households
    (every one of them orders signed in; there are no anonymous visitors).

    The defaults give about 1.28M purchase lines in 124k trips: the size of a real grocery chain's
    year of baskets (about 2,500 households, 68k products, 1.46M purchase lines).
    """

    users: int = 2_500
    items: int = 60_000
    days: int = 365


def generate_grocery(spec: GrocerySpec) -> Store:
    """Generate a grocery-like store.

    Parameters
    ----------
    spec : GrocerySpec
        Size, period and seed of the store.

    Returns
    -------
    Store
        Events (purchases only, one session per trip), items and users frames that pass
        `carousel.schema.validate_events` (with ``now=spec.end``), `validate_items` and
        `validate_users` unchanged.
    """
    rng_items, rng_households, rng_trips, rng_lines = np.random.default_rng(spec.seed).spawn(4)
    span = spec.days * DAY
    catalog, cycle, promo = _make_catalog(rng_items, spec.items, span)
    households = _make_households(rng_households, spec.users, span)
    trips = _make_trips(rng_trips, households, spec)
    events = _make_lines(rng_lines, households, trips, catalog, cycle, promo, spec)
    return Store(
        events=events,
        items=_items_frame(catalog, spec.start, span, GROCERY_CATEGORIES, GROCERY_BRANDS, GROCERY_ADJECTIVES),
        users=_users_frame(
            households.country, households.consent_personalization, households.consent_marketing
        ),
    )


# --------------------------------------------------------------------------------------------
# Catalogue.
# --------------------------------------------------------------------------------------------


def _make_catalog(rng: np.random.Generator, n_items: int, span: float) -> tuple[_Catalog, F64, _GroupedItems]:
    """The catalogue, each item's cycle in seconds, and the items grouped by promotion week.

    Arrival times are drawn first and sorted, so that item codes follow the order of arrival (as a
    shop's own ids would) and every other attribute is drawn for items already in that order.
    """
    n_cat = len(GROCERY_CATEGORIES)
    share = np.array([c.traffic for c in GROCERY_CATEGORIES])
    pre = rng.random(n_items) < _PRE_EXISTING
    first_seen = np.sort(
        np.where(pre, -DAY - rng.random(n_items) * 3 * 365 * DAY, rng.random(n_items) * span)
    )

    category = rng.choice(n_cat, size=n_items, p=share / share.sum()).astype(np.int32)
    old = np.flatnonzero(first_seen < 0)
    if old.size >= n_cat:  # every category has items on sale from the first day
        category[rng.choice(old, size=n_cat, replace=False)] = np.arange(n_cat, dtype=np.int32)
    rank = rng.permutation(n_items) + 1
    weight = rank.astype(np.float64) ** -_ZIPF_EXPONENT
    # A category's fallback draw (its anchor) must exist from the start: its most popular old item.
    anchor = _category_anchor(category, np.where(first_seen < 0, weight, -1.0), n_cat)

    medians = np.array([c.median_price for c in GROCERY_CATEGORIES])
    raw = medians[category] * rng.lognormal(0.0, _PRICE_SIGMA, size=n_items)
    base_price = np.maximum(np.ceil(raw * 10) / 10 - 0.01, 0.19)  # 1.29, 0.89
    cycle_days = np.array([c.cycle_days for c in GROCERY_CATEGORIES])
    cycle = cycle_days[category] * DAY * rng.lognormal(0.0, _ITEM_CYCLE_SIGMA, size=n_items)

    delisted = rng.random(n_items) < _DELISTED
    lo = np.maximum(first_seen, 0.5 * span)
    stock_out = np.where(delisted, lo + rng.random(n_items) * np.maximum(span - lo, 0.0), np.inf)

    # One promotion week (weeks counted from the period start) for some items, never before the
    # item exists; the promotion's price applies to every purchase that week.
    n_weeks = int(np.ceil(span / WEEK))
    first_week = np.maximum(np.ceil(first_seen / WEEK), 0)
    week = (first_week + np.floor(rng.random(n_items) * (n_weeks - first_week))).astype(np.int32)
    promoted = (rng.random(n_items) < _PROMOTED) & (first_week < n_weeks)
    week = np.where(promoted, week, n_weeks).astype(np.int32)  # n_weeks = never
    sale_start = np.where(promoted, week * WEEK, np.inf)
    discount = rng.choice(_DISCOUNTS, size=n_items)

    own = rng.random(n_items) < _OWN_LABEL_SHARE
    tops = sorted({c.top for c in GROCERY_CATEGORIES})
    top_of_cat = np.array([tops.index(c.top) for c in GROCERY_CATEGORIES])
    window_p = 1.0 / np.arange(1, _BRAND_WINDOW + 1)
    pick = rng.choice(_BRAND_WINDOW, size=n_items, p=window_p / window_p.sum())
    n_other = len(GROCERY_BRANDS) - _OWN_LABELS
    other = _OWN_LABELS + (top_of_cat[category] * n_other // len(tops) + pick) % n_other
    brand = np.where(own, rng.integers(0, _OWN_LABELS, size=n_items), other).astype(np.int32)

    catalog = _Catalog(
        category=category,
        weight=weight,
        base_price=base_price,
        first_seen=first_seen,
        stock_out=stock_out,
        sale_start=sale_start,
        sale_end=sale_start + WEEK,
        discount=discount,
        brand=brand,
        title_adjective=rng.integers(0, len(GROCERY_ADJECTIVES), size=n_items, dtype=np.int32),
        title_noun=rng.integers(0, 3, size=n_items, dtype=np.int32),
        by_category=_GroupedItems.of(category, weight, n_cat),
        anchor=anchor,
        cat_share=_category_share(category, share),
    )
    return catalog, cycle, _GroupedItems.of(week, weight, n_weeks + 1)


# --------------------------------------------------------------------------------------------
# Households and their trips.
# --------------------------------------------------------------------------------------------


@dataclass
class _Households:
    country: npt.NDArray[np.int8]  # -1 = missing
    device: npt.NDArray[np.int8]  # usual device
    consent_personalization: B
    consent_marketing: B
    start: F64  # active from (seconds from the period start) ...
    end: F64  # ... until
    main_trip: F64  # chance of the weekly trip
    extra_trip: F64  # chance of a mid-week top-up
    habit_day: I64  # weekday of the weekly trip, 0 = Monday
    habit_hour: F64  # local hour of day
    basket: F64  # mean lines per trip
    explore: F64  # share of lines that are explore picks
    switch: F64  # share of regular purchases moved to another item of the category

    @property
    def trips_per_week(self) -> F64:
        return self.main_trip + self.extra_trip


def _make_households(rng: np.random.Generator, n: int, span: float) -> _Households:
    country = _draw_with_missing(
        rng, (np.array([c[0] for c in COUNTRIES]) == _COUNTRY).astype(np.float64), _COUNTRY_NULL, n
    )
    device = rng.choice(len(DEVICES), size=n, p=_DEVICE_SHARE).astype(np.int8)
    consent_personalization, consent_marketing = _draw_consent(rng, n)
    joins = rng.random(n) < _JOIN
    start = np.where(joins, rng.random(n) * 0.9 * span, 0.0)
    leaves = rng.random(n) < _LEAVE
    end = np.where(leaves, start + rng.random(n) * (span - start), span)
    basket = np.clip(rng.lognormal(np.log(_BASKET_MEDIAN), _BASKET_SIGMA, n), _BASKET_MIN, _BASKET_MAX)
    return _Households(
        country=country,
        device=device,
        consent_personalization=consent_personalization,
        consent_marketing=consent_marketing,
        start=start,
        end=end,
        main_trip=rng.beta(_MAIN_TRIP_A, _MAIN_TRIP_B, n),
        extra_trip=rng.beta(_EXTRA_TRIP_A, _EXTRA_TRIP_B, n),
        habit_day=rng.choice(7, size=n, p=_HABIT_DAY / _HABIT_DAY.sum()),
        habit_hour=rng.choice(_HABIT_HOURS, size=n, p=_HABIT_HOUR_P / _HABIT_HOUR_P.sum()) + rng.random(n),
        basket=basket,
        explore=rng.beta(_EXPLORE_A, _EXPLORE_B, n),
        switch=rng.beta(_SWITCH_A, _SWITCH_B, n),
    )


@dataclass
class _Trips:
    """Trips as arrays, sorted by household and then time (index = trip number)."""

    household: I32
    t: F64  # seconds from the period start
    device: npt.NDArray[np.int8]
    referrer: npt.NDArray[np.int8]

    def next_trip(self, household: I32, t: F64, stride: float) -> I64:
        """The first trip of ``household`` at or after ``t``; -1 when it has none left."""
        key = self.household.astype(np.float64) * stride + self.t
        pos = np.searchsorted(key, household.astype(np.float64) * stride + t, side="left")
        found = pos < key.size
        found[found] &= self.household[pos[found]] == household[found]
        return np.where(found, pos, -1)


def _make_trips(rng: np.random.Generator, h: _Households, spec: GrocerySpec) -> _Trips:
    """Each household's weekly trips (some skipped, some moved) and mid-week top-ups."""
    n = h.start.size
    span = spec.days * DAY
    midnight = spec.start.floor("D")
    lead = (midnight - spec.start).total_seconds()  # <= 0
    n_weeks = spec.days // 7 + 2
    week = np.arange(n_weeks) * 7
    first_day = (h.habit_day - midnight.weekday()) % 7  # first calendar day on the habit weekday
    shift = rng.choice(_DAY_SHIFT, size=(n, n_weeks), p=_DAY_SHIFT_P)
    main_day = first_day[:, None] + week[None, :] + shift
    main = rng.random((n, n_weeks)) < h.main_trip[:, None]
    extra_day = main_day + rng.integers(2, 5, size=(n, n_weeks))
    extra = rng.random((n, n_weeks)) < h.extra_trip[:, None]
    hour = np.clip(h.habit_hour[:, None] + rng.normal(0.0, 1.0, size=(n, 2 * n_weeks)), 7.0, 22.5)

    day = np.concatenate([main_day, extra_day], axis=1)
    t = lead + day * DAY + hour * HOUR
    household = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], t.shape)
    keep = np.concatenate([main, extra], axis=1)
    keep &= (t >= h.start[:, None]) & (t < h.end[:, None]) & (t >= 0) & (t < span - _CLOSE)
    household, t = household[keep], t[keep]
    order = np.lexsort((t, household))
    household, t = household[order], t[order]

    device = rng.choice(len(DEVICES), size=t.size, p=_DEVICE_SHARE).astype(np.int8)
    loyal = rng.random(t.size) < _DEVICE_LOYALTY
    device[loyal] = h.device[household[loyal]]
    referrer = np.empty(t.size, dtype=np.int8)
    marketing = h.consent_marketing[household]
    for mask, weights in ((marketing, _REF), (~marketing, _REF_NO_MARKETING)):
        drawn = rng.choice(len(weights), size=int(mask.sum()), p=weights / weights.sum())
        referrer[mask] = np.where(drawn == len(REFERRERS), -1, drawn)
    return _Trips(household=household, t=t, device=device, referrer=referrer)


# --------------------------------------------------------------------------------------------
# Basket lines.
# --------------------------------------------------------------------------------------------


def _make_lines(
    rng: np.random.Generator,
    h: _Households,
    trips: _Trips,
    catalog: _Catalog,
    cycle: F64,
    promo: _GroupedItems,
    spec: GrocerySpec,
) -> pd.DataFrame:
    span = spec.days * DAY
    staples = _staple_slots(rng, h, catalog, cycle)
    s_trip, s_item, s_qty = _staple_lines(rng, staples, h, trips, catalog, cycle, span)
    e_trip, e_item = _explore_lines(rng, staples, h, trips, catalog, promo, span)

    # One line per item and trip: an explore pick that is also a due staple adds a unit.
    trip, item, units = _lines(
        np.concatenate([s_trip, e_trip]),
        np.concatenate([s_item, e_item]),
        np.concatenate([s_qty, 1 + (rng.random(e_trip.size) < _EXTRA_UNIT)]),
        len(catalog.category),
    )
    qty = units.astype(np.int32)

    # Sessions are numbered in order of time; a trip's lines are 1 s apart, in random order.
    session_of_trip = np.empty(trips.t.size, dtype=np.int32)
    session_of_trip[np.argsort(trips.t, kind="stable")] = np.arange(trips.t.size, dtype=np.int32)
    sess = session_of_trip[trip]
    by_trip = np.lexsort((rng.random(sess.size), sess))
    new_trip = np.r_[True, sess[by_trip][1:] != sess[by_trip][:-1]]
    idx = np.arange(sess.size)
    line = idx - np.maximum.accumulate(np.where(new_trip, idx, 0))
    t = trips.t[trip[by_trip]] + line
    ts_us = spec.start.value // 1_000 + np.floor(t * 1e6).astype(np.int64)
    by_time = np.lexsort((sess[by_trip], ts_us))
    rows = by_trip[by_time]
    t, ts_us = t[by_time], ts_us[by_time]
    sess, trip, item, qty = sess[rows], trip[rows], item[rows], qty[rows]

    household = trips.household[trip]
    return _events_frame(
        catalog,
        n_users=spec.users,
        n_sessions=trips.t.size,
        sess=sess,
        item=item,
        kind=np.full(sess.size, EVENT_TYPES.index("purchase"), dtype=np.int8),
        t=t,
        ts_us=ts_us,
        qty=qty,
        user=household,
        country=h.country[household],
        device=trips.device[trip],
        referrer=trips.referrer[trip],
    )


def _lines(trip: I64, item: I32, units: F64, n_items: int) -> tuple[I64, I32, F64]:
    """One line per trip and item, sorted by trip and item, with the units of its rows summed."""
    key, inverse = np.unique(trip * n_items + item, return_inverse=True)
    units_per_line = np.bincount(inverse, weights=units).astype(np.float64)
    return key // n_items, (key % n_items).astype(np.int32), units_per_line


@dataclass
class _Staples:
    """Every household's regular items (slots), sorted by household (index = slot)."""

    household: I32
    item: I32  # the item at the household's start; a swap replaces it later
    usual_switch: I32  # the item of the same category the household switches to most often
    pace: F64  # the household's factor on the item's cycle
    interest: F64  # share of the item's cycles in which the household buys it here (0-1]

    def of(self, household: I32, u: F64) -> I32:
        """A slot of each household (uniform by ``u``), or -1 for a household without staples."""
        first = np.searchsorted(self.household, household, side="left")
        count = np.searchsorted(self.household, household, side="right") - first
        return np.where(count > 0, first + np.floor(u * count).astype(np.int64), -1).astype(np.int32)


def _staple_slots(rng: np.random.Generator, h: _Households, catalog: _Catalog, cycle: F64) -> _Staples:
    """Each household's regular items, with a skewed interest sized to fill its baskets.

    Candidates are drawn by the household's taste over categories and by popularity within them,
    and weighted by a Zipf-like preference over the order of the draw. A candidate's interest is
    its preference times a household factor, capped at 1 (bought every cycle): the factor is set
    so that the expected lines per week (interest per cycle, at most one per trip) fill the
    household's basket times its trips per week. A few favourites are bought every cycle, dozens
    every few cycles, and the tail only a few times a year; candidates below `_MIN_INTEREST` are
    dropped.
    """
    n, n_cat = h.start.size, len(GROCERY_CATEGORIES)
    taste = catalog.cat_share * rng.gamma(_TASTE_SHAPE, size=(n, n_cat))
    cum = np.cumsum(taste, axis=1)
    cum /= cum[:, -1:]
    # A row-wise inverse CDF in one searchsorted: row r's cumulative weights are shifted by r.
    rows = np.arange(n)[:, None]
    pos = np.searchsorted((cum + rows).ravel(), (rng.random((n, _POOL)) + rows).ravel(), side="right")
    category = np.minimum(pos.reshape(n, _POOL) - rows * n_cat, n_cat - 1).astype(np.int32)
    start = np.repeat(h.start, _POOL)
    item = _sample_items(rng, category.ravel(), start, catalog).reshape(n, _POOL)
    usual_switch = _sample_items(rng, category.ravel(), start, catalog).reshape(n, _POOL)

    repeated = np.ones(n * _POOL, dtype=bool)
    repeated[np.unique(rows * len(catalog.category) + item, return_index=True)[1]] = False
    pace = rng.lognormal(0.0, _HOUSEHOLD_CYCLE_SIGMA, size=(n, _POOL))
    per_week = WEEK / (cycle[item] * pace)
    rank = np.arange(1, _POOL + 1, dtype=np.float64)
    preference = rank**-_PREFERENCE_EXPONENT * rng.lognormal(0.0, _PREFERENCE_SIGMA, size=(n, _POOL))
    preference[repeated.reshape(n, _POOL)] = 0.0
    target = h.basket * (1.0 - h.explore) * h.trips_per_week / (1.0 - _FORGET)
    # Candidates too rarely bought to be regulars leave their share of the basket to the others.
    for _ in range(2):
        scale = _interest_scale(preference, per_week, h.trips_per_week, target)
        interest = np.minimum(1.0, scale[:, None] * preference)
        preference[interest < _MIN_INTEREST] = 0.0
    kept = preference > 0
    household = np.broadcast_to(rows, (n, _POOL))
    return _Staples(
        household=household[kept].astype(np.int32),
        item=item[kept],
        usual_switch=usual_switch[kept],
        pace=pace[kept],
        interest=interest[kept],
    )


def _interest_scale(preference: F64, per_week: F64, trips_per_week: F64, target: F64) -> F64:
    """Per household, the factor k on its preferences whose interests fill ``target`` lines a week.

    A candidate with interest q is bought ``q * per_week`` times a week, in episodes when q is
    below `_ON_INTEREST` (`_episodes`), and within an episode on at most every trip. The total grows
    with k, so 60 halvings of a wide bracket on log k pin it down; a household whose candidates
    cannot reach the target gets the top of the bracket.
    """
    lo = np.full(target.size, -12.0)
    hi = np.full(target.size, 12.0)
    trips = trips_per_week[:, None]
    for _ in range(60):
        mid = (lo + hi) / 2
        interest = np.minimum(1.0, np.exp(mid)[:, None] * preference)
        on_interest = np.maximum(interest, _ON_INTEREST)
        lines = (interest / on_interest * np.minimum(on_interest * per_week, trips)).sum(axis=1)
        below = lines < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.exp(hi)


def _staple_lines(
    rng: np.random.Generator,
    staples: _Staples,
    h: _Households,
    trips: _Trips,
    catalog: _Catalog,
    cycle: F64,
    span: float,
) -> tuple[I64, I32, F64]:
    """(trip, item, quantity) of every regular item bought.

    A slot's purchases are a renewal process: each cycle of the item is Gamma-distributed around
    the household's pace on it (shape `_HAZARD_SHAPE`, so the chance of buying rises with the time
    since the last purchase relative to the cycle, rather than falling due on a fixed day), and
    the household buys the item in a cycle with its interest, so the gap to the next purchase spans
    a geometric number of cycles (a sum of Gammas, itself a Gamma). A purchase is made on the next
    trip; it is sometimes forgotten, and some go to another item of the category (brand or size
    switching: mostly the slot's usual alternative). A slot is one segment of purchases from the
    household's start, or two when the slot is swapped for another item of its category.
    """
    n_slots = staples.item.size
    hh = staples.household
    swap = h.start[hh] + rng.exponential(_STAPLE_LIFE, size=n_slots)
    swapped = np.flatnonzero(swap < h.end[hh])
    new_item = _sample_items(rng, catalog.category[staples.item[swapped]], swap[swapped], catalog)
    new_pace = rng.lognormal(0.0, _HOUSEHOLD_CYCLE_SIGMA, size=swapped.size)

    seg_slot = np.concatenate([np.arange(n_slots), swapped])
    seg_household = hh[seg_slot]
    seg_item = np.concatenate([staples.item, new_item])
    seg_cycle = cycle[seg_item] * np.concatenate([staples.pace, new_pace])
    seg_interest = staples.interest[seg_slot]
    t0 = np.concatenate([h.start[hh], swap[swapped]])
    t1 = np.concatenate([np.minimum(swap, h.end[hh]), h.end[hh[swapped]]])
    seg_slot, seg_item, seg_cycle, seg_interest, t0, t1 = _episodes(
        rng, seg_slot, seg_item, seg_cycle, seg_interest, t0, t1
    )
    seg_household = hh[seg_slot]

    # Enough gaps are drawn to cover each segment with room to spare (a gap's spread is about its
    # mean); those that end past the segment are dropped.
    mean_gap = seg_cycle / seg_interest
    expected = (t1 - t0) / mean_gap
    n_gaps = np.ceil(1.5 * expected + 5 * np.sqrt(expected) + 10).astype(np.int64)
    seg = np.repeat(np.arange(n_gaps.size), n_gaps)
    cycles = rng.geometric(seg_interest[seg])
    gap = seg_cycle[seg] * rng.gamma(_HAZARD_SHAPE * cycles) / _HAZARD_SHAPE
    first = np.cumsum(n_gaps) - n_gaps
    # A segment starts anywhere within a gap, at the household's start as at a swap: a new item
    # is not bought at once unless the household buys it every cycle.
    lead = rng.random(t0.size)
    before = np.cumsum(gap) - gap
    need_t = t0[seg] + (lead * gap[first])[seg] + before - before[first][seg]
    due = need_t < t1[seg]
    seg, need_t = seg[due], need_t[due]

    trip = trips.next_trip(seg_household[seg], need_t, span + DAY)
    met = trip >= 0
    met[met] &= trips.t[trip[met]] < t1[seg[met]]
    met &= rng.random(met.size) >= _FORGET
    trip, seg = trip[met], seg[met]
    item = seg_item[seg]
    when = trips.t[trip]

    # Brand or size switching: the slot's usual alternative, else any item of the category.
    switch = rng.random(trip.size) < h.switch[seg_household[seg]]
    usual = switch & (rng.random(trip.size) < _SWITCH_TO_USUAL)
    item[usual] = staples.usual_switch[seg_slot[seg[usual]]]
    other = switch & ~usual
    item[other] = _sample_items(rng, catalog.category[item[other]], when[other], catalog)

    # A delisted item is replaced by another item of its category (dropped if that one is too).
    gone = np.flatnonzero(catalog.stock_out[item] <= when)
    item[gone] = _sample_items(rng, catalog.category[item[gone]], when[gone], catalog)
    on_sale = (catalog.stock_out[item] > when) & (catalog.first_seen[item] <= when)
    trip, item = trip[on_sale], item[on_sale]

    trip, item, needs = _lines(trip, item, np.ones(trip.size), len(catalog.category))
    extra = rng.random(trip.size) < _EXTRA_UNIT
    return trip, item, (np.minimum(needs, _MAX_NEEDS) + extra).astype(np.float64)


def _episodes(
    rng: np.random.Generator, slot: I64, item: I32, cycle: F64, interest: F64, t0: F64, t1: F64
) -> tuple[I64, I32, F64, F64, F64, F64]:
    """Split each segment [t0, t1) into the episodes in which the household buys its item.

    A favourite (interest of `_ON_INTEREST` or more) is bought all along. Another item is bought in
    episodes of about `_ON_CYCLES` purchases at interest `_ON_INTEREST`, between pauses sized so that
    the item's share of time in an episode keeps its long-run interest: a household goes through
    phases (a recipe, a diet, a season) and comes back to an item months later. Episodes and pauses
    alternate with exponential lengths; returns the episodes' slot, item, cycle, interest and bounds.
    """
    on_interest = np.maximum(interest, _ON_INTEREST)
    share_on = interest / on_interest
    steady = share_on >= 1.0
    on_mean = _ON_CYCLES * cycle / on_interest
    off_mean = on_mean * (1.0 - share_on) / share_on
    expected = (t1 - t0) / (on_mean + off_mean)
    n_phases = np.where(steady, 1, 2 * np.ceil(1.5 * expected + 4 * np.sqrt(expected) + 2)).astype(np.int64)
    seg = np.repeat(np.arange(t0.size), n_phases)
    first = np.cumsum(n_phases) - n_phases
    k = np.arange(seg.size) - first[seg]
    is_on = (k % 2 == 0) == (rng.random(t0.size) < share_on)[seg]
    length = rng.exponential(np.where(is_on, on_mean[seg], off_mean[seg]))
    length[steady[seg]] = (t1 - t0)[seg[steady[seg]]]
    end = np.cumsum(length)
    end = t0[seg] + end - (end[first] - length[first])[seg]
    start = np.maximum(end - length, t0[seg])
    end = np.minimum(end, t1[seg])
    keep = is_on & (start < end)
    seg, start, end = seg[keep], start[keep], end[keep]
    return slot[seg], item[seg], cycle[seg], on_interest[seg], start, end


def _explore_lines(
    rng: np.random.Generator,
    staples: _Staples,
    h: _Households,
    trips: _Trips,
    catalog: _Catalog,
    promo: _GroupedItems,
    span: float,
) -> tuple[I64, I32]:
    """(trip, item) of the picks outside the regular items: near them, promoted, new, or popular
    anywhere in season."""
    per_trip = rng.poisson((h.basket * h.explore)[trips.household])
    trip = np.repeat(np.arange(trips.t.size), per_trip)
    hh, t = trips.household[trip], trips.t[trip]
    source = rng.random(trip.size)

    category = _seasonal_categories(rng, t, catalog.cat_share, span)
    slot = staples.of(hh, rng.random(trip.size))
    near = (source < _EXPLORE_NEAR) & (slot >= 0)
    category[near] = catalog.category[staples.item[slot[near]]]
    item = _sample_items(rng, category, t, catalog)

    week = np.floor(t / WEEK).astype(np.int64)
    promoted = (source >= _EXPLORE_NEAR) & (source < _EXPLORE_NEAR + _EXPLORE_PROMO)
    promoted &= promo.mass[week] > 0
    item[promoted] = promo.draw(week[promoted], rng.random(int(promoted.sum())))

    # Items are numbered in order of arrival: the last four weeks' arrivals are one range of codes.
    newest = np.searchsorted(catalog.first_seen, t, side="right")
    oldest = np.searchsorted(catalog.first_seen, t - _NEW_WINDOW, side="left")
    new = (source >= _EXPLORE_NEAR + _EXPLORE_PROMO) & (
        source < _EXPLORE_NEAR + _EXPLORE_PROMO + _EXPLORE_NEW
    )
    new &= newest > oldest
    u = rng.random(trip.size)
    item[new] = (oldest + np.floor(u * (newest - oldest)))[new].astype(np.int32)

    on_sale = catalog.stock_out[item] > t
    return trip[on_sale], item[on_sale]


def _seasonal_categories(rng: np.random.Generator, t: F64, cat_share: F64, span: float) -> I32:
    """A category for a pick at each time ``t``, by share scaled by the week's season (`_SEASONS`)."""
    paths = [c.path for c in GROCERY_CATEGORIES]
    n_weeks = int(np.ceil(span / WEEK)) + 1
    day_of_year = (np.arange(n_weeks) * 7 + 3.5) % 365
    season = np.ones((n_weeks, len(paths)))
    for path, amplitude, peak in _SEASONS:
        season[:, paths.index(path)] += amplitude * np.cos(2 * np.pi * (day_of_year - peak) / 365)
    cum = np.cumsum(cat_share * season, axis=1)
    cum /= cum[:, -1:]
    week = np.minimum(np.floor(t / WEEK).astype(np.int64), n_weeks - 1)
    # As in `_staple_slots`: week w's cumulative shares are shifted by w for one searchsorted.
    pos = np.searchsorted(
        (cum + np.arange(n_weeks)[:, None]).ravel(), rng.random(t.size) + week, side="right"
    )
    return np.minimum(pos - week * len(paths), len(paths) - 1).astype(np.int32)

"""Import public e-commerce data sets into carousel's canonical events / items / users frames.

Two real data sets are supported, each read in place (never copied into the repository):

* UCI "Online Retail" (`read_online_retail`): one line per invoice line of a UK gift retailer,
  2010-12-01 to 2011-12-09. Every kept line becomes a ``purchase`` event.
* REES46 multi-category store log (`read_rees46`): view / cart / remove_from_cart / purchase events.

`read_table_file` reads a file that is already in a canonical shape (CSV, gzipped CSV or Parquet), and
`derive_category` maps free-text product descriptions onto a small keyword taxonomy, because Online
Retail has no category column.

The adapters only map and clean; they do not call `carousel.schema.validate_*` themselves, because the
caller decides what "now" is. Their output is built to pass those validators unchanged. Every step is
vectorized: there is no loop over rows; text cleaning and the taxonomy run once per distinct value
(a few thousand codes or descriptions, not half a million lines), and the only explicit Python loop
is over the few dozen taxonomy rules. The full Online Retail file imports in a few seconds.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from carousel.schema import EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA, SchemaError

__all__ = [
    "CATEGORY_RULES",
    "Imported",
    "OTHER",
    "derive_category",
    "read_online_retail",
    "read_rees46",
    "read_table_file",
]

EVENT_COLUMNS: list[str] = [f.name for f in EVENTS_SCHEMA]
ITEM_COLUMNS: list[str] = [f.name for f in ITEMS_SCHEMA]
USER_COLUMNS: list[str] = [f.name for f in USERS_SCHEMA]

#: Category given to a description that matches no taxonomy rule (or is empty).
OTHER = "other"

#: The keyword taxonomy used by `derive_category`, as ``(category, regex)`` pairs tried in order; the
#: first rule whose regex matches the upper-cased description wins. It was designed by reading the most
#: frequent words of the Online Retail descriptions (weighted by purchase lines). Order matters: the
#: specific or seasonal rules come first so that e.g. "CHRISTMAS LIGHTS" is a Christmas item,
#: "PLAYING CARDS" a game rather than a greeting card and "LUNCH BAG" a lunch-box-like kitchen item
#: rather than a generic bag.
CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    (
        "christmas/decorations",
        r"CHRISTMAS|\bXMAS\b|ADVENT|\bSANTA\b|REINDEER|SNOWFLAKE|\bBAUBLES?\b|NATIVITY",
    ),
    ("seasonal/easter", r"\bEASTER\b|PAPER EGGS?\b"),
    (
        "toys/games",
        r"PLAYING CARDS|\bSNAP CARDS\b|CARD GAME|\bDOMINO|\bJIGSAW|\bPUZZLE|\bGAMES?\b|\bMARBLES\b|SKITTLES"
        r"|SNAKES & LADDERS|\bLUDO\b|\bBINGO\b|NAUGHTS & CROSSES|NOUGHTS|\bCHESS\b|\bQUIZ\b",
    ),
    ("garden", r"\bGARDENERS?\b|KNEELING|WATERING CAN|\bHAMMOCK\b|BIRD ?(?:FEEDER|HOUSE|TABLE)|HERB MARKER"),
    (
        "home/lighting",
        r"T-LIGHT|TEA ?LIGHT|\bLIGHTS?\b|LANTERN|CANDLE|\bLAMP\b|LAMPSHADE|\bLED\b|NIGHTLIGHT|\bMATCHES\b"
        r"|INCENSE|OIL BURNER|VOTIVE",
    ),
    ("kitchen/lunch-boxes", r"\bLUNCH\b|SNACK BOX|\bPICNIC\b|BOTTLE BAG"),
    ("bags", r"\bBAGS?\b|SHOPPER|\bTOTE\b|HANDBAG|\bPURSE\b|\bWALLET\b|BACKPACK|RUCKSACK"),
    (
        "party",
        r"\bPARTY\b|BIRTHDAY (?!CARD)|BALLOON|BUNTING|PAPER CHAIN|\bCRACKERS\b|\bPARASOLS\b|\bGARLAND\b",
    ),
    ("stationery/cards", r"\bCARDS?\b|POSTCARD|\bENVELOPES?\b|\bCARD,"),
    ("stationery/gift-wrap", r"\bWRAP\b|\bRIBBONS?\b|GIFT TAGS|\bTISSUE PAPER\b|\bGIFT BOX\b|GIFT TAPE"),
    (
        "stationery",
        r"\bPENS?\b|\bPENCILS?\b|NOTEBOOK|NOTE ?BOOK|SKETCHBOOK|EXERCISE BOOK|ADDRESS BOOK|\bERASERS?\b"
        r"|\bRUBBERS?\b|STICKER|\bRULER\b|\bSTAMPS?\b|CALENDAR|\bDIARY\b|JOURNAL|\bNOTEPAD|MEMO|STATIONERY"
        r"|\bCRAYONS?\b|COLOURING|CHALK|BLACK ?BOARD|WRITING SET|PAINT SET|MODELLING|\bCANVAS\b|CALCULATOR"
        r"|DRAWING SLATE|\bTAPES?\b(?! MEASURE)|SCISSOR|PAPERWEIGHT|NOTELETS|POCKET BOOK",
    ),
    ("kitchen/mugs", r"\bMUGS?\b|\bCUPS?\b|TEACUPS?|\bSAUCERS?\b|\bBEAKERS?\b|TEA GLASS"),
    ("kitchen/textiles", r"\bAPRON\b|OVEN (?:GLOVE|MITT)|TEA TOWEL|TEA COSY|WASHING UP"),
    (
        "kitchen/baking",
        r"\bCAKE|CUPCAKE|BAKING|CUTTERS?\b|\bMOULDS?\b|(?<!BATHROOM )\bSCALES\b|MEASURING|ROLLING PIN"
        r"|JAM MAKING|\bCASES\b",
    ),
    (
        "kitchen/tableware",
        r"\bPLATES?\b|\bBOWLS?\b|CUTLERY|NAPKIN|\bJUG\b|\bTRAY\b|\bDISH\b|TEAPOT|\bTEA SET\b|TEA FOR ONE"
        r"|PLACEMATS?|COASTERS?|\bSPOONS?\b|\bFORKS?\b|\bGLASSES\b|TUMBLER|PAPER DOILIES|\bDOILIES\b"
        r"|\bEGG (?:CUP|HOLDER|COSY)|POPCORN|DISPENSER|TEA CADDY|SALT AND PEPPER|BOTTLE OPENER|\bLADLE\b"
        r"|STRAINER|\bTONGS\b|CHOPSTICKS|\bSTRAWS\b|COLANDER|FOOD COVER|PLACE SETTING|\bFLASK\b|MILK BOTTLE"
        r"|\bTRAYS\b|TABLECLOTH|CHOPPING BOARD|TOAST ?RACK|COCKTAIL",
    ),
    (
        "kitchen/storage",
        r"\bJARS?\b|\bCONTAINER|\bBREAD BIN\b|\bCANISTER|BISCUIT|\bRECIPE BOX|KITCHEN|PANTRY|\bPAN\b"
        r"|TEA,COFFEE|(?<!PLASTERS IN )\bTINS?\b",
    ),
    ("garden", r"GARDEN|\bPLANT|\bPLANTER|\bSEEDS?\b|TROWEL|\bGNOME|FLOWER POT|\bSHED\b|\bWINDMILL"),
    ("baby", r"\bBABY\b|\bBIB\b|\bNURSERY\b"),
    (
        "toys",
        r"\bTOYS?\b|\bDOLLS?\b|\bTEDDY\b|HARMONICA|\bKITE\b|SKIPPING ROPE|PLAYHOUSE|\bSPINNING TOPS?\b"
        r"|\bBALL\b|\bBUBBLES?\b|WATER PISTOL|\bKIDS\b|\bCHILDRENS\b|\bCHILDS\b|\bSOLDIERS\b|\bROBOT\b"
        r"|GLIDERS?\b|BEACH SPADE|SANDCASTLE|TATTOOS|STICKY|\bBADGES\b|IRON ON|PIGGY BANK|MONEY BANK|\bYOYO"
        r"|HELICOPTER|PUPPET|FLYING DISC|LOLLY MAKERS|FARM ANIMAL|INFLATABLE|CREEPY CRAWLIES|\bNINJA\b",
    ),
    (
        "crafts/sewing",
        r"SEWING|FELTCRAFT|KNITTING|\bCRAFT\b|\bBUTTONS?\b|\bTHREAD\b|\bFABRIC\b|MAKING KIT|REPAIR KIT",
    ),
    (
        "fashion/accessories",
        r"UMBRELLA|NECKLACE|BRACELET|EARRINGS?|\bRING\b|\bHAIR\b|\bSCARF\b|\bGLOVES?\b|\bHAT\b|BROOCH|\bCHARM"
        r"|JEWELLERY|KEY ?RING|KEY FOB|\bBANGLE|\bCLIPS?\b|SUNGLASSES|\bPONCHO\b|HAND WARMER|\bPARASOL\b"
        r"|LUGGAGE|PASSPORT",
    ),
    (
        "home/bathroom",
        r"BATHROOM|TOILET|\bSOAP\b|\bTISSUES\b|PLASTERS|\bTOWELS?\b|WASHBAG|SPONGE|\bBATH\b(?! BUILDING)"
        r"|FIRST AID|LIP GLOSS|APOTHECARY|FLANNEL",
    ),
    (
        "home/textiles",
        r"CUSHION|HOT WATER BOTTLE|\bHOTTIE\b|\bBLANKET|\bTHROW\b|FILLER PAD|\bQUILT|DOORMAT|\bRUG\b"
        r"|\bCURTAIN|\bMAT\b",
    ),
    ("home/tools", r"SCREWDRIVER|TAPE MEASURE|\bTOOLS?\b|TORCH"),
    (
        "home/decor",
        r"\bSIGN\b|DOORSIGN|\bFRAME\b|\bPHOTO|\bCLOCK\b|\bMIRROR\b|\bHOOKS?\b|\bHANGERS?\b|\bKNOB|\bDRAWER"
        r"|CABINET|WALL ART|DOORSTOP|\bVASE\b|ORNAMENT|DECORATION|\bWICKER\b|\bPLAQUE\b|WREATH|\bBELLS?\b"
        r"|TRINKET|STORAGE|\bBOX(?:ES)?\b|\bBASKETS?\b|\bCHEST\b|\bSHELF\b|\bRACK\b|\bHANGING\b|\bSTAND\b"
        r"|MAGNET|\bWALL\b|\bPICTURE\b|\bFAN\b|BLOCK WORD|\bLETTERS?\b|\bTILE\b|\bPEGS?\b|FILIGR"
        r"|TRELLIS|ROCKING HORSE|CLOCHE|\bSTOOL\b|\bCRATES?\b|\bDOVE\b|\bHEARTS?\b|\bSTARS?\b|\bMOBILE\b"
        r"|\bPAINTED\b|FEATHER TREE|WASTEPAPER BIN|KEY HOLDER|ORGANISER",
    ),
)


@dataclass
class Imported:
    """The canonical frames produced by one import, and what happened to the source lines.

    Attributes
    ----------
    events, items, users:
        Frames with exactly the columns of `carousel.schema`'s events / items / users schemas. ``users``
        is None only for a source with no notion of a user.
    report:
        Counts: ``lines_read`` (data lines in the file), ``kept`` (lines that became events) and one
        ``dropped_<reason>`` per drop reason, so ``lines_read == kept + sum(dropped_*)``; plus a few
        informational counts that are named without the ``dropped_`` prefix.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    report: dict[str, int]


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


def _none_for_missing(values: pd.Series) -> pd.Series:
    """The values as an object column in which every missing value (NaN, NA, NaT) is None."""
    arr = values.to_numpy(dtype=object, copy=True)
    arr[pd.isna(arr)] = None
    return pd.Series(arr, index=values.index, name=values.name, dtype=object)


def _per_distinct(values: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """Apply a vectorized function to the distinct values of a column only, then broadcast back.

    Source columns such as customer ids, stock codes, countries or quantities repeat a few thousand
    values over half a million lines, and pandas' string methods cost per element, so this is far
    cheaper than running them on every line. Missing values map to missing (NaN).
    """
    codes, uniques = pd.factorize(values)  # missing values get code -1
    mapped = func(pd.Series(np.asarray(uniques, dtype=object), dtype=object)).reset_index(drop=True)
    out = mapped.reindex(codes)  # code -1 is not in the index, so it becomes NaN
    out.index = values.index
    return out


def _strip_blank(text: pd.Series) -> pd.Series:
    stripped = text.str.strip()
    return stripped.mask(stripped == "")


def _blank_to_na(values: pd.Series) -> pd.Series:
    """Strip whitespace and turn empty strings into missing values (object dtype, None for missing)."""
    return _none_for_missing(_per_distinct(values, _strip_blank))


def _clean_id(text: pd.Series) -> pd.Series:
    # A numeric id exported through a float column reads 17850.0; the id is 17850.
    return _strip_blank(text).str.replace(r"^(\d+)\.0*$", r"\1", regex=True)


def _id_string(values: pd.Series) -> pd.Series:
    """Identifiers as clean strings: ``17850.0`` -> ``17850`` (the float artefact of a CSV export)."""
    return _none_for_missing(_per_distinct(values, _clean_id))


def _upper_code(values: pd.Series) -> pd.Series:
    """Stripped, upper-cased codes (empty -> None): the source spells some codes in either case."""
    return _none_for_missing(_per_distinct(values, lambda text: _strip_blank(text).str.upper()))


def _numbers(values: pd.Series) -> pd.Series:
    """Text to float64; anything that is not a finite number becomes NaN."""
    parsed = _per_distinct(values, lambda text: pd.to_numeric(text, errors="coerce")).astype("float64")
    return parsed.where(np.isfinite(parsed))


def _most_frequent(keys: pd.Series, values: pd.Series) -> pd.Series:
    """The most frequent non-missing value per key; ties go to the smallest value, so it is deterministic.

    Keys that only have missing values are absent from the result.
    """
    pairs = pd.DataFrame({"key": keys.to_numpy(), "value": values.to_numpy()}).dropna()
    if pairs.empty:
        return pd.Series(dtype=object)
    counts = pairs.value_counts(["key", "value"]).rename("n").reset_index()
    counts = counts.sort_values(["key", "n", "value"], ascending=[True, False, True], kind="mergesort")
    first = counts.drop_duplicates("key")
    return pd.Series(first["value"].to_numpy(), index=first["key"].to_numpy(), dtype=object)


def _read_source_csv(path: Path, columns: list[str], name: str) -> pd.DataFrame:
    """Read a source CSV with every column as text (ids must not become floats), or raise SchemaError."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise SchemaError(f"{name}: file not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise SchemaError(f"{name}: {path} is empty") from None
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError, zlib.error) as exc:
        raise SchemaError(f"{name}: cannot read {path}: {exc}") from None
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise SchemaError(f"{name}: {path} lacks column(s) {', '.join(missing)}; found {list(raw.columns)}")
    if raw.empty:
        raise SchemaError(f"{name}: {path} has a header but no data lines")
    return raw


def _line_counts(lines_read: int, keep: pd.Series, drops: Mapping[str, pd.Series]) -> dict[str, int]:
    """The report's ``lines_read``, ``kept`` and one ``dropped_<reason>`` per drop mask, in that order."""
    return {
        "lines_read": lines_read,
        "kept": int(keep.sum()),
        **{f"dropped_{reason}": int(mask.sum()) for reason, mask in drops.items()},
    }


def _build_items(
    events: pd.DataFrame, titles: pd.Series, categories: pd.Series, brands: pd.Series
) -> pd.DataFrame:
    """One row per item of the kept events: median unit price, first event time, in stock."""
    grouped = events.groupby("item_id", sort=True)
    items = pd.DataFrame({"price": grouped["price"].median(), "first_seen": grouped["ts"].min()})
    items.index.name = "item_id"
    items = items.reset_index()
    items["title"] = _none_for_missing(items["item_id"].map(titles))
    items["category"] = items["item_id"].map(categories).fillna(OTHER).astype(object)
    items["brand"] = _none_for_missing(items["item_id"].map(brands))
    # The sources have no stock information; an item that sells or is viewed is assumed to be listed.
    items["in_stock"] = True
    return items[ITEM_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Category taxonomy
# --------------------------------------------------------------------------------------------------


def derive_category(descriptions: pd.Series) -> pd.Series:
    """Map free-text product descriptions onto a keyword taxonomy.

    Each description is upper-cased and tested against `CATEGORY_RULES` in order; the first matching
    rule gives the category (a path such as ``'home/lighting'``), and a description that matches no
    rule, or is missing, gets ``'other'``. The rules run once per distinct description, so a column
    with many repeated descriptions costs little.

    Parameters
    ----------
    descriptions:
        Product descriptions (any dtype that converts to text; missing values allowed).

    Returns
    -------
    pandas.Series
        Category strings (object dtype), with the same index as ``descriptions``, named ``category``.
    """
    text = descriptions.astype("string").str.upper().str.strip()
    codes, uniques = pd.factorize(text)  # missing values get code -1
    distinct = pd.Series(uniques, dtype="string")
    category = np.full(len(distinct), OTHER, dtype=object)
    undecided = np.ones(len(distinct), dtype=bool)
    for name, pattern in CATEGORY_RULES:  # a loop over rules, not rows: each test is vectorized
        if not undecided.any():
            break
        hit = distinct.str.contains(pattern, regex=True).fillna(False).to_numpy(dtype=bool) & undecided
        category[hit] = name
        undecided &= ~hit
    # Code -1 (a missing description) would index the last category, so it is masked explicitly.
    out = np.full(len(codes), OTHER, dtype=object)
    known = codes >= 0
    out[known] = category[codes[known]]
    return pd.Series(out, index=descriptions.index, name="category", dtype=object)


# --------------------------------------------------------------------------------------------------
# UCI Online Retail
# --------------------------------------------------------------------------------------------------

_ONLINE_RETAIL_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]

# Real products have a 5-digit stock code, optionally followed by letters for variants (85123A).
# Everything else is a service or accounting line: POST (postage), M (manual), DOT, BANK CHARGES,
# AMAZONFEE, C2 (carriage), CRUK (charity), D (discount), PADS, B (bad debt), S (samples),
# gift_0001_* (vouchers), DCGS* (a partner's lines).
_PRODUCT_CODE = r"\d{5}[A-Z]*"


def _parse_invoice_dates(text: pd.Series) -> pd.Series:
    """Parse distinct InvoiceDate strings; unparseable values become NaT.

    The shared CSV writes ISO ``2010-12-01 08:26:00``; the original UCI workbook exports
    ``12/1/2010 8:26``, so that form is accepted as a fallback.
    """
    text = text.str.strip()
    ts = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    retry = ts.isna()
    if retry.any():
        ts[retry] = pd.to_datetime(text[retry], format="%m/%d/%Y %H:%M", errors="coerce")
    # The times are UK local time (GMT/BST) with no zone in the file, so they are taken as UTC: events in
    # British Summer Time land one hour late, which does not matter for recommendation.
    return ts.dt.tz_localize("UTC")


def read_online_retail(path: Path) -> Imported:
    """Import the UCI Online Retail invoice lines as purchase events.

    Every line with a product stock code, a positive quantity and a positive unit price becomes one
    ``purchase`` event. Lines are dropped, and counted under the first reason that applies, in order:

    ``dropped_malformed``
        Unparseable quantity, price or date, or an empty invoice number or stock code.
    ``dropped_cancellation``
        Invoices starting with ``C``: they are returns, not preferences, and crediting them as
        negative purchases would teach the recommender nothing about what people like.
    ``dropped_non_product``
        Stock codes that are not 5 digits plus optional letters (postage, fees, manual adjustments,
        vouchers, bad-debt adjustments...): nobody chooses them.
    ``dropped_non_positive_quantity``
        Quantity <= 0 outside a cancellation invoice: stock write-offs ("damaged", "lost").
    ``dropped_bad_price``
        Unit price <= 0: free samples and adjustments, which are not a price anyone paid.

    Identifiers: ``user_id`` is ``CustomerID`` without the float artefact (``'17850'``, never
    ``'17850.0'``); a line without a customer is a guest checkout and becomes an anonymous event
    (``user_id`` None). ``session_id`` is ``'inv-' + InvoiceNo`` for everyone, since an invoice is one
    visit that ended in a purchase. ``item_id`` is the stock code in upper case (the file spells some
    variants both ways, e.g. ``85014a`` and ``85014A``). Timestamps are UK local time in the file and
    are taken as UTC (so summer-time events are one hour late, which does not matter here). The date
    format is ISO ``2010-12-01 08:26:00`` in the shared file; the ``12/1/2010 8:26`` of the original
    workbook is also accepted. ``device`` and ``referrer`` are unknown (None); the country
    ``Unspecified`` is stored as None.

    Items: one row per item; ``title`` is the most frequent description, ``category`` is
    `derive_category` of that title, ``price`` the median unit price, ``first_seen`` the first event,
    ``in_stock`` True and ``brand`` None (the data set has no brands).

    Users: one row per customer; ``country`` is the customer's most frequent country (ties go to the
    alphabetically first). The data set records no consent at all; both consents are set True so that
    this public research data exercises every personalization and marketing code path in demos and
    evaluation. A live store must supply its customers' real consent instead.

    Parameters
    ----------
    path:
        The CSV (optionally gzipped) with columns InvoiceNo, StockCode, Description, Quantity,
        InvoiceDate, UnitPrice, CustomerID, Country.

    Returns
    -------
    Imported
        Events, items and users frames plus a report with ``lines_read``, ``kept``, the
        ``dropped_*`` counts above and the informational counts ``anonymous_events``, ``customers``,
        ``items`` and ``categorised_events`` (kept events whose item's category is not ``'other'``).

    Raises
    ------
    SchemaError
        If the file is missing, unreadable, empty or lacks a column.
    """
    raw = _read_source_csv(path, _ONLINE_RETAIL_COLUMNS, "online retail")
    lines = _parse_invoice_lines(raw)
    drops, keep = _invoice_line_drops(lines)
    kept = raw.loc[keep]
    events = _invoice_line_events(kept, lines, keep)
    items, categories = _online_retail_items(events, kept)
    users = _online_retail_users(events)

    event_category = events["item_id"].map(categories).fillna(OTHER)
    report = {
        **_line_counts(len(raw), keep, drops),
        "anonymous_events": int(events["user_id"].isna().sum()),
        "customers": len(users),
        "items": len(items),
        "categorised_events": int((event_category != OTHER).sum()),
    }
    return Imported(events=events, items=items, users=users, report=report)


@dataclass(frozen=True)
class _InvoiceLines:
    """The parsed columns of the Online Retail lines, indexed like the raw frame; missing when unparseable."""

    invoice: pd.Series
    code: pd.Series
    quantity: pd.Series
    price: pd.Series
    ts: pd.Series


def _parse_invoice_lines(raw: pd.DataFrame) -> _InvoiceLines:
    return _InvoiceLines(
        invoice=_upper_code(raw["InvoiceNo"]),
        code=_upper_code(raw["StockCode"]),
        quantity=_numbers(raw["Quantity"]),
        price=_numbers(raw["UnitPrice"]),
        ts=_per_distinct(raw["InvoiceDate"], _parse_invoice_dates),
    )


def _invoice_line_drops(lines: _InvoiceLines) -> tuple[dict[str, pd.Series], pd.Series]:
    """A mask per drop reason of `read_online_retail`, each line under its first reason; the kept lines."""
    is_cancellation = _per_distinct(lines.invoice, lambda text: text.str.startswith("C")).eq(True)
    is_product = _per_distinct(lines.code, lambda text: text.str.fullmatch(_PRODUCT_CODE)).eq(True)
    malformed = (
        lines.quantity.isna()
        | (np.mod(lines.quantity.fillna(0), 1) != 0)
        | lines.price.isna()
        | lines.ts.isna()
        | lines.invoice.isna()
        | lines.code.isna()
    )
    cancellation = ~malformed & is_cancellation
    rest = ~malformed & ~cancellation
    non_product = rest & ~is_product
    rest &= ~non_product
    non_positive_quantity = rest & (lines.quantity <= 0)
    rest &= ~non_positive_quantity
    bad_price = rest & (lines.price <= 0)
    keep = rest & ~bad_price
    drops = {
        "malformed": malformed,
        "cancellation": cancellation,
        "non_product": non_product,
        "non_positive_quantity": non_positive_quantity,
        "bad_price": bad_price,
    }
    return drops, keep


def _invoice_line_events(kept: pd.DataFrame, lines: _InvoiceLines, keep: pd.Series) -> pd.DataFrame:
    """One purchase event per kept line (``kept`` is the raw frame's kept lines)."""
    country = _blank_to_na(kept["Country"])
    return pd.DataFrame(
        {
            "user_id": _id_string(kept["CustomerID"]),
            "session_id": "inv-" + lines.invoice[keep],
            "item_id": lines.code[keep],
            "event_type": "purchase",
            "ts": lines.ts[keep],
            "quantity": lines.quantity[keep].astype("int64"),
            "price": lines.price[keep],
            # 'Unspecified' is the retailer's placeholder, not a country.
            "country": _none_for_missing(country.mask(country == "Unspecified")),
            "device": None,
            "referrer": None,
        }
    )[EVENT_COLUMNS].reset_index(drop=True)


def _online_retail_items(events: pd.DataFrame, kept: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The items, titled by their most frequent description, and each item's category (by item id)."""
    descriptions = _blank_to_na(kept["Description"]).reset_index(drop=True)
    titles = _most_frequent(events["item_id"], descriptions)
    categories = pd.Series(derive_category(titles).to_numpy(), index=titles.index, dtype=object)
    return _build_items(events, titles, categories, pd.Series(dtype=object)), categories


def _online_retail_users(events: pd.DataFrame) -> pd.DataFrame:
    """One row per customer, with the customer's most frequent country."""
    customers = events["user_id"].dropna().unique()
    user_country = _most_frequent(events["user_id"], events["country"])
    users = pd.DataFrame({"user_id": pd.Series(customers, dtype=object).sort_values(ignore_index=True)})
    users["country"] = _none_for_missing(users["user_id"].map(user_country))
    # No consent is recorded in the data set; True is a demo/evaluation choice (see read_online_retail).
    users["consent_personalization"] = True
    users["consent_marketing"] = True
    return users[USER_COLUMNS]


# --------------------------------------------------------------------------------------------------
# REES46
# --------------------------------------------------------------------------------------------------

_REES46_COLUMNS = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]

_REES46_EVENT_TYPES = {
    "view": "view",
    "cart": "add_to_cart",
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
}


def _parse_rees46_times(text: pd.Series) -> pd.Series:
    """Parse distinct ``2019-10-01 00:00:00 UTC`` strings to UTC timestamps (NaT when unparseable)."""
    bare = text.str.strip().str.replace(r"\s*UTC$", "", regex=True)
    return pd.to_datetime(bare, format="%Y-%m-%d %H:%M:%S", errors="coerce").dt.tz_localize("UTC")


def read_rees46(path: Path) -> Imported:
    """Import a REES46 multi-category store event log.

    Mapping: ``cart`` -> ``add_to_cart``; ``view``, ``remove_from_cart`` and ``purchase`` keep their
    names. ``item_id`` is ``product_id`` and ``user_id`` is ``user_id``, both as strings;
    ``session_id`` is ``user_session``, or ``<user_id>-<YYYY-MM-DD>`` (the event's UTC date) when the
    session is missing. ``quantity`` is 1 (the log has one row per unit action), ``price`` the
    listed price; ``country``, ``device`` and ``referrer`` are unknown (None).

    Lines are dropped, and counted under the first reason that applies, in order:

    ``dropped_malformed``
        Unparseable ``event_time``, missing ``product_id``, or neither a user nor a session.
    ``dropped_unknown_event_type``
        An ``event_type`` outside view / cart / remove_from_cart / purchase.
    ``dropped_bad_price``
        A price that is missing, not a number, not finite, or <= 0 (a zero price is a missing price
        in this log and would drag an item's median price to zero).

    Items: one row per product; ``category`` is ``category_code`` with ``.`` replaced by ``/``
    (``electronics/smartphone``), or ``cat-<category_id>`` when the code is empty; ``brand`` is the
    most frequent brand; ``price`` the median; ``title`` None (the log has no titles); ``in_stock``
    True; ``first_seen`` the first event.

    Users: one row per user with ``country`` None and both consents True (the log records no
    consent; it is a public data set published for this kind of research).

    Parameters
    ----------
    path:
        The CSV (optionally gzipped) with columns event_time, event_type, product_id, category_id,
        category_code, brand, price, user_id, user_session.

    Returns
    -------
    Imported
        Events, items and users plus a report with ``lines_read``, ``kept``, the ``dropped_*`` counts
        above and the informational counts ``filled_sessions``, ``users`` and ``items``.

    Raises
    ------
    SchemaError
        If the file is missing, unreadable, empty or lacks a column.
    """
    raw = _read_source_csv(path, _REES46_COLUMNS, "rees46")
    lines = _parse_rees46_lines(raw)
    drops, keep = _rees46_drops(lines)
    session, filled = _rees46_sessions(lines, keep)
    events = _rees46_events(lines, session, keep)
    items = _rees46_items(events, raw.loc[keep].reset_index(drop=True))
    users = _rees46_users(events)

    report = {
        **_line_counts(len(raw), keep, drops),
        "filled_sessions": int(filled.sum()),
        "users": len(users),
        "items": len(items),
    }
    return Imported(events=events, items=items, users=users, report=report)


@dataclass(frozen=True)
class _Rees46Lines:
    """The parsed columns of the REES46 lines, indexed like the raw frame; missing when unparseable."""

    ts: pd.Series
    event_type: pd.Series
    item_id: pd.Series
    user_id: pd.Series
    session: pd.Series
    price: pd.Series


def _parse_rees46_lines(raw: pd.DataFrame) -> _Rees46Lines:
    return _Rees46Lines(
        ts=_per_distinct(raw["event_time"], _parse_rees46_times),
        event_type=_per_distinct(
            raw["event_type"], lambda text: text.str.strip().str.lower().map(_REES46_EVENT_TYPES)
        ),
        item_id=_id_string(raw["product_id"]),
        user_id=_id_string(raw["user_id"]),
        session=_blank_to_na(raw["user_session"]),
        price=_numbers(raw["price"]),
    )


def _rees46_drops(lines: _Rees46Lines) -> tuple[dict[str, pd.Series], pd.Series]:
    """A mask per drop reason of `read_rees46`, each line under its first reason; and the kept lines."""
    malformed = lines.ts.isna() | lines.item_id.isna() | (lines.user_id.isna() & lines.session.isna())
    unknown_type = ~malformed & lines.event_type.isna()
    rest = ~malformed & ~unknown_type
    bad_price = rest & (lines.price.isna() | (lines.price <= 0))
    keep = rest & ~bad_price
    return {"malformed": malformed, "unknown_event_type": unknown_type, "bad_price": bad_price}, keep


def _rees46_sessions(lines: _Rees46Lines, keep: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Every line's session, a kept line's missing one filled as ``<user_id>-<YYYY-MM-DD>``; the filled."""
    session = lines.session
    fill = keep & session.isna()
    if fill.any():
        session = session.copy()
        session.loc[fill] = lines.user_id[fill] + "-" + lines.ts[fill].dt.strftime("%Y-%m-%d")
    return session, fill


def _rees46_events(lines: _Rees46Lines, session: pd.Series, keep: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": lines.user_id[keep],
            "session_id": session[keep],
            "item_id": lines.item_id[keep],
            "event_type": lines.event_type[keep],
            "ts": lines.ts[keep],
            "quantity": np.ones(int(keep.sum()), dtype="int64"),
            "price": lines.price[keep],
            "country": None,
            "device": None,
            "referrer": None,
        }
    )[EVENT_COLUMNS].reset_index(drop=True)


def _rees46_items(events: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """The items, with their most frequent category and brand (``kept``: the kept raw lines, renumbered)."""
    code = _blank_to_na(kept["category_code"]).astype("string").str.replace(".", "/", regex=False)
    category_id = _id_string(kept["category_id"]).astype("string")
    category = code.fillna("cat-" + category_id).fillna(OTHER).astype(object)
    brand = _blank_to_na(kept["brand"])
    return _build_items(
        events,
        titles=pd.Series(dtype=object),
        categories=_most_frequent(events["item_id"], category),
        brands=_most_frequent(events["item_id"], brand),
    )


def _rees46_users(events: pd.DataFrame) -> pd.DataFrame:
    users = pd.DataFrame({"user_id": pd.Series(events["user_id"].dropna().unique(), dtype=object)})
    users = users.sort_values("user_id", ignore_index=True)
    users["country"] = None
    users["consent_personalization"] = True
    users["consent_marketing"] = True
    return users[USER_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Canonical files
# --------------------------------------------------------------------------------------------------

# Text columns of the canonical schemas: read as strings so ids like '00123' or '17850' stay intact.
_TEXT_COLUMNS = sorted(
    {
        field.name
        for schema in (EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA)
        for field in schema
        if pa.types.is_string(field.type)
    }
)


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-2:] == [".csv", ".gz"]:
        return ".csv.gz"
    return suffixes[-1] if suffixes else ""


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a canonical events / items / users table from CSV, gzipped CSV or Parquet.

    The format follows the file name: ``.csv``, ``.csv.gz`` or ``.parquet`` (case-insensitive). Text
    columns of the canonical schemas are read as strings, so identifiers keep leading zeros and never
    become floats; the frame is not validated here (use `carousel.schema.validate_*`).

    Parameters
    ----------
    path:
        The file to read.

    Returns
    -------
    pandas.DataFrame
        The table as stored, with at least one row.

    Raises
    ------
    SchemaError
        If the suffix is not one of the above, the file is missing or cannot be parsed, or it holds
        no rows.
    """
    path = Path(path)
    kind = _table_kind(path)
    df = _read_table(path, kind)
    if df.empty:
        raise SchemaError(f"{path}: file has no rows")
    return df


def _table_kind(path: Path) -> str:
    """The file's format (``.csv``, ``.csv.gz`` or ``.parquet``), once it is known to be a non-empty file."""
    kind = _suffix(path)
    if kind not in (".csv", ".csv.gz", ".parquet"):
        raise SchemaError(
            f"{path}: unknown file type {kind or '(no suffix)'!r}; expected .csv, .csv.gz or .parquet"
        )
    if not path.is_file():
        raise SchemaError(f"{path}: no such file (or not a regular file)")
    if path.stat().st_size == 0:
        raise SchemaError(f"{path}: file is empty")
    return kind


def _read_table(path: Path, kind: str) -> pd.DataFrame:
    """Parse the file as ``kind``; any failure to read or parse is a SchemaError."""
    try:
        if kind == ".parquet":
            return pd.read_parquet(path)
        # Strings for the canonical text columns; pandas ignores names the file does not have.
        return pd.read_csv(path, dtype={name: "string" for name in _TEXT_COLUMNS})
    except pd.errors.EmptyDataError:
        raise SchemaError(f"{path}: file is empty") from None
    except (
        OSError,
        EOFError,
        UnicodeDecodeError,
        ValueError,
        gzip.BadGzipFile,
        zlib.error,
        pa.ArrowException,
    ) as exc:
        raise SchemaError(f"{path}: cannot read {kind} file: {exc}") from None

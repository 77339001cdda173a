"""Unit tests for jobs.adapters on small hand-written source files with hand-computed expectations."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from carousel.schema import SchemaError, validate_events, validate_items, validate_users
from jobs.ingest.adapters import Imported, derive_category, read_online_retail, read_rees46, read_table_file

NOW = pd.Timestamp("2030-01-01", tz="UTC")

# 19 lines; the comment after each says what must happen to it. Comments are stripped before writing.
ONLINE_RETAIL_CSV = """\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom  # keep
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom  # keep
536366,85123a,WHITE HANGING HEART T-LIGHT HOLDER ,2,2010-12-02 09:00:00,2.95,12347.0,Iceland  # keep, 85123A
536367,22423,REGENCY CAKESTAND 3 TIER,1,2010-12-03 10:00:00,12.75,,United Kingdom  # keep, guest
536367,84879,ASSORTED COLOUR BIRD ORNAMENT,8,2010-12-03 10:00:00,1.69,,United Kingdom  # keep, guest
C536368,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-6,2010-12-04 11:00:00,2.55,17850.0,EIRE  # cancel
536369,POST,POSTAGE,3,2010-12-05 12:00:00,18.0,12347.0,Iceland  # non-product
536369,M,Manual,1,2010-12-05 12:00:00,0.5,12347.0,Iceland  # non-product
536370,gift_0001_10,Dotcomgiftshop Gift Voucher,1,2010-12-06 13:00:00,8.5,,United Kingdom  # non-product
536371,BANK CHARGES,Bank Charges,1,2010-12-06 13:00:00,15.0,12347.0,Iceland  # non-product
A563186,B,Adjust bad debt,1,2011-08-12 14:51:00,-11062.06,,United Kingdom  # non-product (first reason)
536372,21777,,-10,2010-12-07 14:00:00,0.0,,United Kingdom  # non-positive quantity
536373,22139,RETROSPOT TEA SET CERAMIC 11 PC,5,2010-12-08 15:00:00,0.0,12348.0,Finland  # bad price: zero
536374,22139,RETROSPOT TEA SET CERAMIC 11 PC,1,2010-12-08 15:00:00,-1.5,12348.0,Finland  # bad price: negative
536375,22139,RETROSPOT TEA SET CERAMIC 11 PC,1,2010-12-09 16:00:00,4.95,12348.0,Finland  # keep
536376,85123A,CREAM HANGING HEART T-LIGHT HOLDER,4,2011-06-01 09:30:00,2.75,12348.0,Unspecified  # keep
536377,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,12/1/2011 8:26,3.00,17850.0,United Kingdom  # keep, US date
536378,22139,X,abc,2010-12-10 10:00:00,1.0,12348.0,Finland  # malformed quantity
536379,22139,X,1,not a date,1.0,12348.0,Finland  # malformed date
"""

REES46_CSV = """\
event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1  # keep
2019-10-01 00:00:01 UTC,cart,1004856,2053013555,electronics.smartphone,samsung,130.76,543272936,s2  # keep
2019-10-01 00:00:02 UTC,remove_from_cart,1004856,2053013555,electronics.smartphone,samsung,130.76,543272936,s2
2019-10-01 00:00:03 UTC,purchase,1004856,2053013555,electronics.smartphone,samsung,128.00,543272936,s2
2019-10-01 00:00:04 UTC,view,3900821,2053013552,appliances.environment.water_heater,,33.20,554748717,
2019-10-01 00:00:05 UTC,view,17200506,2053013559,furniture.living_room.sofa,,0,519107250,s4  # bad price
2019-10-01 00:00:06 UTC,view,17200506,2053013559,furniture.living_room.sofa,,-5.0,519107250,s4  # bad
2019-10-01 00:00:07 UTC,view,17200506,2053013559,furniture.living_room.sofa,,abc,519107250,s4  # bad
2019-10-01 00:00:08 UTC,wishlist,1004856,2053013555,electronics.smartphone,samsung,130.76,543272936,s2
not-a-time,view,1004856,2053013555,electronics.smartphone,samsung,130.76,543272936,s2  # malformed
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a snippet, dropping the '  # ...' annotations that document each line."""
    lines = [line.split("  #")[0] for line in text.splitlines()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def retail(tmp_path: Path) -> Imported:
    return read_online_retail(_write(tmp_path, "online_retail.csv", ONLINE_RETAIL_CSV))


@pytest.fixture
def rees(tmp_path: Path) -> Imported:
    return read_rees46(_write(tmp_path, "rees46.csv", REES46_CSV))


# --------------------------------------------------------------------------------------------------
# Online Retail
# --------------------------------------------------------------------------------------------------


def test_online_retail_report_counts_every_line_once(retail: Imported) -> None:
    """Each source line is counted exactly once, as kept or under its first drop reason."""
    assert retail.report == {
        "lines_read": 19,
        "kept": 8,
        "dropped_malformed": 2,
        "dropped_cancellation": 1,
        "dropped_non_product": 5,
        "dropped_non_positive_quantity": 1,
        "dropped_bad_price": 2,
        "anonymous_events": 2,
        "customers": 3,
        "items": 5,
        "categorised_events": 8,
    }
    dropped = sum(v for k, v in retail.report.items() if k.startswith("dropped_"))
    assert retail.report["kept"] + dropped == retail.report["lines_read"]


def test_online_retail_frames_pass_the_canonical_validators(retail: Imported) -> None:
    """Events, items and users all pass carousel.schema validation unchanged."""
    assert retail.users is not None
    validate_events(retail.events, now=NOW)
    validate_items(retail.items)
    validate_users(retail.users)


def test_online_retail_float_customer_ids_become_integer_strings(retail: Imported) -> None:
    """CustomerID 17850.0 becomes user_id '17850' and no user id keeps a '.0' suffix."""
    ids = set(retail.events["user_id"].dropna())
    assert ids == {"17850", "12347", "12348"}
    assert all(isinstance(i, str) and not i.endswith(".0") for i in ids)
    assert retail.users is not None
    assert retail.users["user_id"].tolist() == ["12347", "12348", "17850"]


def test_online_retail_guest_lines_become_anonymous_invoice_sessions(retail: Imported) -> None:
    """Lines without a CustomerID become events with user_id None in session 'inv-<InvoiceNo>'."""
    guests = retail.events[retail.events["user_id"].isna()]
    assert guests["user_id"].map(lambda v: v is None).all()
    assert guests["session_id"].tolist() == ["inv-536367", "inv-536367"]
    assert guests["item_id"].tolist() == ["22423", "84879"]
    customers = retail.events[retail.events["user_id"].notna()]
    assert customers["session_id"].str.fullmatch(r"inv-\d+").all()


def test_online_retail_cancellations_are_dropped(retail: Imported) -> None:
    """No 'C' invoice or negative quantity reaches the events; all events are purchases with quantity >= 1."""
    assert not retail.events["session_id"].str.startswith("inv-C").any()
    assert (retail.events["quantity"] >= 1).all()
    assert set(retail.events["event_type"]) == {"purchase"}


def test_online_retail_keeps_only_product_codes_in_upper_case(retail: Imported) -> None:
    """Only 5-digit(+letters) stock codes survive, upper-cased so '85123a' and '85123A' are one item."""
    assert sorted(retail.items["item_id"]) == ["22139", "22423", "71053", "84879", "85123A"]
    assert set(retail.events["item_id"]) == set(retail.items["item_id"])
    assert (retail.events["item_id"] == "85123A").sum() == 4


def test_online_retail_drops_zero_and_negative_prices(retail: Imported) -> None:
    """No event has a unit price <= 0, and the one positive-price 22139 line is the only 22139 event."""
    assert (retail.events["price"] > 0).all()
    tea_set = retail.events[retail.events["item_id"] == "22139"]
    assert tea_set["price"].tolist() == [4.95]
    assert tea_set["quantity"].tolist() == [1]


def test_online_retail_event_columns_hold_the_mapped_values(retail: Imported) -> None:
    """The first line maps field by field onto the canonical event, with the time taken as UTC."""
    first = retail.events.iloc[0]
    assert first["user_id"] == "17850"
    assert first["session_id"] == "inv-536365"
    assert first["item_id"] == "85123A"
    assert first["event_type"] == "purchase"
    assert first["ts"] == pd.Timestamp("2010-12-01 08:26:00", tz="UTC")
    assert first["quantity"] == 6
    assert first["price"] == pytest.approx(2.55)
    assert first["country"] == "United Kingdom"
    assert first["device"] is None and first["referrer"] is None


def test_online_retail_accepts_the_us_date_format_of_the_original_workbook(retail: Imported) -> None:
    """'12/1/2011 8:26' parses as 2011-12-01 08:26 UTC."""
    last = retail.events.iloc[-1]
    assert last["session_id"] == "inv-536377"
    assert last["ts"] == pd.Timestamp("2011-12-01 08:26:00", tz="UTC")


def test_online_retail_unspecified_country_is_none(retail: Imported) -> None:
    """The placeholder country 'Unspecified' is stored as None."""
    row = retail.events[retail.events["session_id"] == "inv-536376"].iloc[0]
    assert row["country"] is None


def test_online_retail_items_are_aggregated_from_kept_lines(retail: Imported) -> None:
    """An item's title is its most frequent description, price the median, first_seen its first event."""
    items = retail.items.set_index("item_id")
    heart = items.loc["85123A"]
    assert heart["title"] == "WHITE HANGING HEART T-LIGHT HOLDER"  # 3 of 4 lines (one had a trailing space)
    assert heart["price"] == pytest.approx((2.75 + 2.95) / 2)  # median of 2.55, 2.95, 2.75, 3.00
    assert heart["first_seen"] == pd.Timestamp("2010-12-01 08:26:00", tz="UTC")
    assert heart["category"] == "home/lighting"
    assert items.loc["22139", "first_seen"] == pd.Timestamp("2010-12-09 16:00:00", tz="UTC")
    assert items["category"].to_dict() == {
        "22139": "kitchen/tableware",
        "22423": "kitchen/baking",
        "71053": "home/lighting",
        "84879": "home/decor",
        "85123A": "home/lighting",
    }
    assert items["brand"].map(lambda v: v is None).all()
    assert items["in_stock"].all()


def test_online_retail_users_get_their_most_frequent_country_and_consent(retail: Imported) -> None:
    """One row per customer with the most frequent known country and both consents True."""
    assert retail.users is not None
    users = retail.users.set_index("user_id")
    assert users["country"].to_dict() == {"12347": "Iceland", "12348": "Finland", "17850": "United Kingdom"}
    assert users["consent_personalization"].all() and users["consent_marketing"].all()


def test_online_retail_missing_column_is_a_schema_error(tmp_path: Path) -> None:
    """A file without the CustomerID column is rejected with a SchemaError naming the column."""
    path = tmp_path / "bad.csv"
    path.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,Country\n")
    with pytest.raises(SchemaError, match="CustomerID"):
        read_online_retail(path)


def test_online_retail_missing_or_empty_file_is_a_schema_error(tmp_path: Path) -> None:
    """A missing file, a 0-byte file and a header-only file all raise SchemaError."""
    with pytest.raises(SchemaError, match="not found"):
        read_online_retail(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SchemaError, match="empty"):
        read_online_retail(tmp_path / "empty.csv")
    header = ONLINE_RETAIL_CSV.splitlines()[0]
    (tmp_path / "header.csv").write_text(header + "\n")
    with pytest.raises(SchemaError, match="no data lines"):
        read_online_retail(tmp_path / "header.csv")


def test_online_retail_reads_gzipped_files(tmp_path: Path) -> None:
    """A .csv.gz source gives the same report as the plain CSV."""
    plain = _write(tmp_path, "or.csv", ONLINE_RETAIL_CSV)
    packed = tmp_path / "or.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_online_retail(packed).report == read_online_retail(plain).report


# --------------------------------------------------------------------------------------------------
# derive_category
# --------------------------------------------------------------------------------------------------


def test_derive_category_maps_descriptions_by_ordered_keywords() -> None:
    """Keywords map case-insensitively to categories, specific rules win, unknown or missing is 'other'."""
    cases = {
        "WHITE HANGING HEART T-LIGHT HOLDER": "home/lighting",
        "christmas lights 10 reindeer": "christmas/decorations",  # seasonal beats lighting
        "PLAYING CARDS KEEP CALM & CARRY ON": "toys/games",  # a game, not a greeting card
        "SPACEBOY BIRTHDAY CARD": "stationery/cards",  # a card, not a party item
        "LUNCH BAG RED RETROSPOT": "kitchen/lunch-boxes",
        "JUMBO BAG RED RETROSPOT": "bags",
        "ROSES REGENCY TEACUP AND SAUCER": "kitchen/mugs",
        "GARDENERS KNEELING PAD CUP OF TEA": "garden",
        "PLASTERS IN TIN SPACEBOY": "home/bathroom",  # not a kitchen tin
        "SET OF 3 CAKE TINS PANTRY DESIGN": "kitchen/baking",
        "QWERTY": "other",
        "": "other",
    }
    descriptions = pd.Series([*cases, None], index=[f"i{n}" for n in range(len(cases) + 1)])
    result = derive_category(descriptions)
    assert result.index.equals(descriptions.index)
    assert result.tolist() == [*cases.values(), "other"]


def test_derive_category_handles_an_empty_series() -> None:
    """An empty input gives an empty output."""
    assert derive_category(pd.Series([], dtype=object)).empty


# --------------------------------------------------------------------------------------------------
# REES46
# --------------------------------------------------------------------------------------------------


def test_rees46_report_counts_every_line_once(rees: Imported) -> None:
    """Each REES46 line is kept or counted under exactly one drop reason."""
    assert rees.report == {
        "lines_read": 10,
        "kept": 5,
        "dropped_malformed": 1,
        "dropped_unknown_event_type": 1,
        "dropped_bad_price": 3,
        "filled_sessions": 1,
        "users": 3,
        "items": 3,
    }


def test_rees46_maps_events_to_the_canonical_schema(rees: Imported) -> None:
    """cart becomes add_to_cart, ids are strings, quantity is 1 and a missing session is user_id + date."""
    ev = rees.events
    assert ev["event_type"].tolist() == ["view", "add_to_cart", "remove_from_cart", "purchase", "view"]
    assert ev["item_id"].tolist() == ["44600062", "1004856", "1004856", "1004856", "3900821"]
    assert ev["user_id"].tolist() == ["541312140", "543272936", "543272936", "543272936", "554748717"]
    assert ev["session_id"].tolist() == ["s1", "s2", "s2", "s2", "554748717-2019-10-01"]
    assert ev["quantity"].tolist() == [1] * 5
    assert ev["price"].tolist() == [35.79, 130.76, 130.76, 128.0, 33.2]
    assert ev["ts"].iloc[0] == pd.Timestamp("2019-10-01 00:00:00", tz="UTC")
    assert ev[["country", "device", "referrer"]].isna().all().all()
    validate_events(ev, now=NOW)


def test_rees46_items_take_category_path_brand_and_median_price(rees: Imported) -> None:
    """category_code dots become slashes, an empty code becomes 'cat-<category_id>', brand and median kept."""
    items = rees.items.set_index("item_id")
    assert items["category"].to_dict() == {
        "1004856": "electronics/smartphone",
        "3900821": "appliances/environment/water_heater",
        "44600062": "cat-2103807459595387724",
    }
    assert items["brand"].to_dict() == {"1004856": "samsung", "3900821": None, "44600062": "shiseido"}
    assert items.loc["1004856", "price"] == pytest.approx(130.76)  # median of 130.76, 130.76, 128.00
    assert items["title"].map(lambda v: v is None).all()
    validate_items(rees.items)


def test_rees46_users_have_consent_and_no_country(rees: Imported) -> None:
    """Users are the distinct user ids of kept events, with country None and both consents True."""
    assert rees.users is not None
    assert rees.users["user_id"].tolist() == ["541312140", "543272936", "554748717"]
    assert rees.users["country"].isna().all()
    assert rees.users["consent_personalization"].all() and rees.users["consent_marketing"].all()
    validate_users(rees.users)


# --------------------------------------------------------------------------------------------------
# read_table_file
# --------------------------------------------------------------------------------------------------


def _items_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["00123", "456"],
            "title": ["Lamp", None],
            "category": ["home/lighting", "other"],
            "brand": [None, "acme"],
            "price": [9.5, 0.0],
            "in_stock": [True, False],
            "first_seen": pd.to_datetime(["2024-01-01", "2024-02-01"], utc=True),
        }
    )


@pytest.mark.parametrize("name", ["items.csv", "items.csv.gz", "items.parquet", "ITEMS.CSV"])
def test_read_table_file_round_trips_canonical_tables(tmp_path: Path, name: str) -> None:
    """A canonical table written as CSV, gzipped CSV or Parquet reads back with ids still strings."""
    path = tmp_path / name
    if name.endswith(".parquet"):
        _items_frame().to_parquet(path, index=False)
    else:
        _items_frame().to_csv(path, index=False, compression="gzip" if name.endswith(".gz") else None)
    df = read_table_file(path)
    assert df["item_id"].tolist() == ["00123", "456"]
    checked = validate_items(df)
    assert checked["price"].tolist() == [9.5, 0.0]
    assert checked["in_stock"].tolist() == [True, False]


@pytest.mark.parametrize("name", ["items.json", "items.gz", "items.tar.gz", "items"])
def test_read_table_file_rejects_unknown_suffixes(tmp_path: Path, name: str) -> None:
    """A file name that is not .csv, .csv.gz or .parquet raises SchemaError naming the accepted types."""
    path = tmp_path / name
    path.write_text("item_id\n1\n")
    with pytest.raises(SchemaError, match=r"unknown file type.*\.csv, \.csv\.gz or \.parquet"):
        read_table_file(path)


def test_read_table_file_rejects_missing_files_and_directories(tmp_path: Path) -> None:
    """A path that does not exist, or is a directory, raises SchemaError."""
    with pytest.raises(SchemaError, match="no such file"):
        read_table_file(tmp_path / "missing.csv")
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(SchemaError, match="no such file"):
        read_table_file(tmp_path / "dir.parquet")


@pytest.mark.parametrize("name", ["empty.csv", "empty.csv.gz", "empty.parquet"])
def test_read_table_file_rejects_zero_byte_files(tmp_path: Path, name: str) -> None:
    """A 0-byte file raises SchemaError saying it is empty."""
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(SchemaError, match="empty"):
        read_table_file(tmp_path / name)


def test_read_table_file_rejects_tables_without_rows(tmp_path: Path) -> None:
    """A header-only CSV, an empty gzipped CSV and a 0-row Parquet file all raise SchemaError."""
    (tmp_path / "header.csv").write_text("item_id,title\n")
    with pytest.raises(SchemaError, match="no rows"):
        read_table_file(tmp_path / "header.csv")
    (tmp_path / "nothing.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(SchemaError, match="empty"):
        read_table_file(tmp_path / "nothing.csv.gz")
    _items_frame().head(0).to_parquet(tmp_path / "zero.parquet", index=False)
    with pytest.raises(SchemaError, match="no rows"):
        read_table_file(tmp_path / "zero.parquet")


@pytest.mark.parametrize("name", ["broken.parquet", "broken.csv.gz"])
def test_read_table_file_rejects_unreadable_files(tmp_path: Path, name: str) -> None:
    """Bytes that are not Parquet or not gzip raise SchemaError rather than a library exception."""
    (tmp_path / name).write_bytes(b"this is not a parquet or gzip stream\n")
    with pytest.raises(SchemaError, match="cannot read"):
        read_table_file(tmp_path / name)

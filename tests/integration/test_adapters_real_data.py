"""Integration tests for jobs.adapters on the real Online Retail and REES46 files in ../shared/data.

Expected figures are recomputed here with plain pandas on the raw file (default dtypes, so CustomerID
is the float the file holds), independently of the adapter's code path; the few hard-coded numbers
were verified that way and against ../shared/data/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from carousel.schema import validate_events, validate_items, validate_users
from jobs.ingest.adapters import OTHER, Imported, read_online_retail, read_rees46

pytestmark = pytest.mark.integration

NOW = pd.Timestamp.now(tz="UTC")


# --------------------------------------------------------------------------------------------------
# Online Retail
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail_path(shared_data: Callable[[str], Path]) -> Path:
    return shared_data("online-retail/online_retail.csv.gz")


@pytest.fixture(scope="module")
def retail(retail_path: Path) -> Imported:
    return read_online_retail(retail_path)


@pytest.fixture(scope="module")
def raw_retail(retail_path: Path) -> pd.DataFrame:
    return pd.read_csv(retail_path)


@pytest.fixture(scope="module")
def valid_lines(raw_retail: pd.DataFrame) -> pd.Series:
    """Independent mask of the lines the brief's rules keep."""
    code = raw_retail["StockCode"].astype(str).str.strip().str.upper()
    return (
        (raw_retail["Quantity"] > 0)
        & (raw_retail["UnitPrice"] > 0)
        & ~raw_retail["InvoiceNo"].astype(str).str.upper().str.startswith("C")
        & code.str.fullmatch(r"[0-9]{5}[A-Z]*")
    )


def test_online_retail_frames_validate(retail: Imported) -> None:
    """The real events, items and users frames pass the canonical validators."""
    assert retail.users is not None
    validate_events(retail.events, now=NOW)
    validate_items(retail.items)
    validate_users(retail.users)


def test_online_retail_customers_match_an_independent_count(
    retail: Imported, raw_retail: pd.DataFrame, valid_lines: pd.Series
) -> None:
    """The users are exactly the 4,334 customers that own at least one valid purchase line."""
    expected = set(raw_retail.loc[valid_lines, "CustomerID"].dropna().astype("int64").astype(str))
    assert len(expected) == 4334
    assert retail.users is not None
    assert set(retail.users["user_id"]) == expected
    assert len(retail.users) == 4334 == retail.report["customers"]
    assert set(retail.events["user_id"].dropna()) == expected


def test_online_retail_readme_customer_figure_differs_only_by_unusable_lines(
    retail: Imported, raw_retail: pd.DataFrame, valid_lines: pd.Series
) -> None:
    """The often-quoted 4,339 counts 5 customers whose only positive lines are fees or free items."""
    positive = raw_retail[(raw_retail["Quantity"] > 0) & raw_retail["CustomerID"].notna()]
    assert len(positive) == 397_924  # README: "397,924 positive purchase lines have a customer"
    assert positive["CustomerID"].nunique() == 4339
    assert retail.users is not None
    extra = set(positive["CustomerID"].astype("int64").astype(str)) - set(retail.users["user_id"])
    assert extra == {"13256", "15802", "15823", "16742", "17846"}
    their_lines = positive[positive["CustomerID"].astype("int64").astype(str).isin(extra)]
    assert not valid_lines[their_lines.index].any()  # bank charges, manual lines, one 0.00 line


def test_online_retail_user_ids_are_clean_integer_strings(retail: Imported) -> None:
    """Customer 12347 is present, from Iceland, and no user id carries a float '.0' suffix."""
    assert retail.users is not None
    users = retail.users.set_index("user_id")
    assert users.loc["12347", "country"] == "Iceland"
    ids = pd.Series(retail.events["user_id"].dropna().unique())
    assert not ids.str.contains(".", regex=False).any()
    assert ids.str.fullmatch(r"[0-9]+").all()


def test_online_retail_report_matches_independent_counts(
    retail: Imported, raw_retail: pd.DataFrame, valid_lines: pd.Series
) -> None:
    """Lines read, kept, cancelled and anonymous match counts recomputed from the raw file."""
    report = retail.report
    assert report["lines_read"] == len(raw_retail) == 541_909
    assert report["kept"] == int(valid_lines.sum()) == 527_725
    cancelled = raw_retail["InvoiceNo"].astype(str).str.startswith("C")
    assert report["dropped_cancellation"] == int(cancelled.sum()) == 9288
    guests = valid_lines & raw_retail["CustomerID"].isna()
    assert report["anonymous_events"] == int(guests.sum()) == 131_388
    assert int(retail.events["user_id"].isna().sum()) == report["anonymous_events"]
    dropped = sum(v for k, v in report.items() if k.startswith("dropped_"))
    assert report["kept"] + dropped == report["lines_read"]
    assert report["dropped_malformed"] == 0


def test_online_retail_anonymous_sessions_are_guest_invoices(
    retail: Imported, raw_retail: pd.DataFrame, valid_lines: pd.Series
) -> None:
    """Guest events form one session per guest invoice, named 'inv-<InvoiceNo>'."""
    guest_invoices = raw_retail.loc[valid_lines & raw_retail["CustomerID"].isna(), "InvoiceNo"].astype(str)
    anonymous = retail.events[retail.events["user_id"].isna()]
    assert set(anonymous["session_id"]) == {f"inv-{i}" for i in guest_invoices.unique()}


def test_online_retail_items_cover_every_event_once(
    retail: Imported, raw_retail: pd.DataFrame, valid_lines: pd.Series
) -> None:
    """There is one item per upper-cased valid stock code (3,791), each with a title."""
    codes = set(raw_retail.loc[valid_lines, "StockCode"].astype(str).str.upper())
    assert len(codes) == 3791
    assert set(retail.items["item_id"]) == codes == set(retail.events["item_id"])
    assert retail.items["title"].notna().all()
    assert (retail.items["price"] > 0).all()


def test_online_retail_most_purchase_lines_get_a_category(retail: Imported) -> None:
    """More than 75% of kept purchase lines belong to an item whose category is not 'other'."""
    category = retail.events["item_id"].map(retail.items.set_index("item_id")["category"])
    share = float((category != OTHER).mean())
    assert share > 0.75
    assert int((category != OTHER).sum()) == retail.report["categorised_events"]


# --------------------------------------------------------------------------------------------------
# REES46
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rees_path(shared_data: Callable[[str], Path]) -> Path:
    return shared_data("rees46-sample/2019-Oct-head.csv.gz")


@pytest.fixture(scope="module")
def rees(rees_path: Path) -> Imported:
    return read_rees46(rees_path)


@pytest.fixture(scope="module")
def raw_rees(rees_path: Path) -> pd.DataFrame:
    return pd.read_csv(rees_path, dtype={"product_id": str, "category_id": str, "user_id": str})


def test_rees46_frames_validate(rees: Imported) -> None:
    """The real REES46 events, items and users frames pass the canonical validators."""
    assert rees.users is not None
    validate_events(rees.events, now=NOW)
    validate_items(rees.items)
    validate_users(rees.users)


def test_rees46_counts_match_the_raw_file(rees: Imported, raw_rees: pd.DataFrame) -> None:
    """All 17,433 lines are read; only the price <= 0 lines are dropped, and event types map one to one."""
    assert rees.report["lines_read"] == len(raw_rees) == 17_433
    priced = raw_rees[raw_rees["price"] > 0]
    assert rees.report["kept"] == len(priced)
    assert rees.report["dropped_bad_price"] == len(raw_rees) - len(priced) == 19
    expected = priced["event_type"].replace({"cart": "add_to_cart"}).value_counts().to_dict()
    assert rees.events["event_type"].value_counts().to_dict() == expected


def test_rees46_ids_and_users_match_the_raw_file(rees: Imported, raw_rees: pd.DataFrame) -> None:
    """Users are the distinct user ids of priced events and item ids are the product ids as strings."""
    priced = raw_rees[raw_rees["price"] > 0]
    assert raw_rees["user_id"].nunique() == 4504  # README figure, before dropping 0-price lines
    assert rees.users is not None
    assert set(rees.users["user_id"]) == set(priced["user_id"])
    assert set(rees.items["item_id"]) == set(priced["product_id"])
    assert not rees.events["user_id"].str.contains(".", regex=False).any()
    assert rees.items["category"].str.fullmatch(r"[a-z_]+(/[a-z_]+)*|cat-[0-9]+").all()

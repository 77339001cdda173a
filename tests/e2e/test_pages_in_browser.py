"""The pages in a real browser (Debian's headless Chromium driven by Selenium) against the API served by
uvicorn and a real Redis: `/shop` shows a shopper's carousel with its reasons, a purchase made with its
buttons leaves the next carousel, a cart left alone comes back as a reminder, an anonymous visitor gets
their country's list and what goes with an item, and `/ops` shows the live version; no page logs a
console error."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_server import served
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from shop_store import GERMANY_ITEMS, ITEMS, VERSION, ShopStore, item_title, reason_text

from carousel.rules.holdout import assign_variant
from configs.settings import Settings
from infra.browser import BrowserUnavailable, chromium_arguments, ensure_chromium
from serving.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

WAIT_S = 10


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module (starting one takes seconds), with a fresh profile."""
    try:
        chromium, chromedriver = ensure_chromium()
    except BrowserUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to run the browser tests: {exc}")
        pytest.skip(str(exc))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in chromium_arguments(tmp_path_factory.mktemp("chromium-profile")):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def base_url(shop_settings: Settings, shop_store: ShopStore) -> Iterator[str]:
    """The API (lifespan and all) served by uvicorn on a free port, over the published shop store."""
    with served(create_app(shop_settings)) as url:
        yield url


@pytest.fixture
def console(browser: WebDriver) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The browser's console entries of this test; a SEVERE one (an uncaught error, a failed request)
    fails the test at its end."""
    browser.get_log("browser")  # drop what earlier tests left
    seen: list[dict[str, Any]] = []

    def entries() -> list[dict[str, Any]]:
        seen.extend(browser.get_log("browser"))
        return seen

    yield entries
    severe = [e for e in entries() if e.get("level") == "SEVERE"]
    assert not severe, f"console errors: {severe}"


def _wait(browser: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Poll `condition` until it holds. An element found on the page being left goes stale when the next
    page replaces it (a busy machine stretches that moment): such a poll is retried, as a missing one."""
    return WebDriverWait(
        browser,
        WAIT_S,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, f"timed out waiting for {what}")


def _cards(browser: WebDriver, shelf: str) -> list[dict[str, str]]:
    """The cards of one shelf in order, read in one script (the shelf is re-rendered as answers come)."""
    cards: list[dict[str, str]] = browser.execute_script(
        """return [...document.querySelectorAll(`#${arguments[0]}-cards .card`)].map((c) => ({
             item_id: c.dataset.itemId, code: c.dataset.reason,
             title: c.querySelector('.title').textContent,
             reason: c.querySelector('.reason').textContent}));""",
        shelf,
    )
    return cards


def _meta(browser: WebDriver, shelf: str) -> dict[str, str]:
    chips: dict[str, str] = browser.execute_script(
        """return Object.fromEntries([...document.querySelectorAll(`#${arguments[0]}-meta .chip`)]
             .map((c) => [c.dataset.key, c.querySelector('b') ? c.querySelector('b').textContent : 'yes']));""",
        shelf,
    )
    return chips


def _loads(browser: WebDriver, shelf: str) -> int:
    return int(browser.find_element(By.ID, shelf).get_attribute("data-loads") or 0)


def _open_shop(browser: WebDriver, base_url: str) -> None:
    browser.get(f"{base_url}/shop")
    _wait(
        browser,
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
        "the page",
    )


def test_the_shop_shows_a_shoppers_carousel_with_its_reasons(
    browser: WebDriver, base_url: str, shop_store: ShopStore, console: Callable[[], list[dict[str, Any]]]
) -> None:
    """The picker offers the shoppers with a list and the carousel is the picked one's, reasons shown."""
    _open_shop(browser, base_url)
    picker = Select(browser.find_element(By.ID, "shopper"))
    offered = [option.get_attribute("value") for option in picker.options]
    assert offered == [*shop_store.shoppers, shop_store.no_consent]
    shopper = picker.first_selected_option.get_attribute("value")
    assert shopper == shop_store.shoppers[0]
    cards = _cards(browser, "recommended")
    expected = shop_store.lists[shopper][:10]
    assert [c["item_id"] for c in cards] == expected
    assert [c["title"] for c in cards] == [item_title(i) for i in expected]
    assert all(c["code"] == "viewed" and c["reason"] == f"viewed{reason_text(c['item_id'])}" for c in cards)
    assert _meta(browser, "recommended") == {"source": "personal", "variant": "treatment", "version": VERSION}

    # Another shopper: the carousel follows the picker.
    other = shop_store.shoppers[3]
    picker.select_by_value(other)
    _wait(
        browser,
        lambda d: [c["item_id"] for c in _cards(d, "recommended")] == shop_store.lists[other][:10],
        "the other shopper's list",
    )


def test_buying_the_first_item_removes_it_from_the_next_carousel(
    browser: WebDriver, base_url: str, shop_store: ShopStore, console: Callable[[], list[dict[str, Any]]]
) -> None:
    """Buy on the first card posts a purchase; the carousel asked again lacks it and shows its complements."""
    _open_shop(browser, base_url)
    first = _cards(browser, "recommended")[0]["item_id"]
    loads = _loads(browser, "recommended")
    browser.find_element(
        By.CSS_SELECTOR, "#recommended-cards .card:first-child button[data-action=purchase]"
    ).click()
    _wait(browser, lambda d: _loads(d, "recommended") > loads, "the carousel to be asked again")
    after = _cards(browser, "recommended")
    assert first not in [c["item_id"] for c in after]
    assert len(after) == 10
    # The purchase's complements (its published similar items) come forward with their reason.
    complements = {c["item_id"] for c in after if c["code"] == "bought_with"}
    following = {ITEMS[ITEMS.index(first) + k] for k in (1, 2, 3)}
    assert complements and complements <= following
    log = browser.find_element(By.ID, "activity").text
    assert "purchase" in log and first in log and "202 accepted" in log


def test_a_cart_left_alone_comes_back_as_a_reminder(
    browser: WebDriver,
    base_url: str,
    shop_settings: Settings,
    console: Callable[[], list[dict[str, Any]]],
) -> None:
    """An item added to the cart comes back first as a reminder once the delay has passed, unasked."""
    _open_shop(browser, base_url)
    carted = _cards(browser, "recommended")[4]["item_id"]
    browser.find_element(
        By.CSS_SELECTOR, f"#recommended-cards .card[data-item-id='{carted}'] button[data-action=add_to_cart]"
    ).click()
    added = time.monotonic()
    _wait(browser, lambda d: carted in d.find_element(By.ID, "cart").text, "the cart panel")

    def reminder_first(driver: WebDriver) -> bool:
        cards = _cards(driver, "recommended")
        return bool(cards) and (cards[0]["item_id"], cards[0]["code"]) == (carted, "cart_reminder")

    # No click: the page asks again by itself once the abandonment delay has passed, and not before.
    _wait(browser, reminder_first, "the cart reminder")
    assert time.monotonic() - added >= shop_settings.cart_abandon_after_s - 0.5


def test_an_anonymous_visitor_sees_their_countrys_list_and_what_goes_with_an_item(
    browser: WebDriver,
    base_url: str,
    shop_settings: Settings,
    console: Callable[[], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    """An anonymous visitor from Germany gets Germany's list, and a clicked item its similar items."""
    _open_shop(browser, base_url)
    # The radio buttons are drawn as a segmented control: a person clicks its label.
    browser.find_element(By.XPATH, "//input[@name='mode'][@value='anonymous']/parent::label").click()
    Select(browser.find_element(By.ID, "country")).select_by_value("Germany")
    _wait(
        browser,
        lambda d: [c["item_id"] for c in _cards(d, "recommended")] == GERMANY_ITEMS[:10],
        "Germany's list",
    )
    session = browser.find_element(By.ID, "session-id").text
    assert session.startswith("shop-")
    # A random session lands in the holdout now and then; it still gets the country's list.
    variant = assign_variant(
        session, salt=shop_settings.holdout_salt, holdout_percent=shop_settings.holdout_percent
    )
    assert _meta(browser, "recommended") == {"source": "segment", "variant": variant, "version": VERSION}

    anchor = GERMANY_ITEMS[2]
    browser.find_element(By.CSS_SELECTOR, f"#recommended-cards .card[data-item-id='{anchor}'] .thumb").click()
    following = ITEMS[ITEMS.index(anchor) + 1 : ITEMS.index(anchor) + 4]
    _wait(browser, lambda d: [c["item_id"] for c in _cards(d, "similar")] == following, "the similar items")
    assert browser.find_element(By.ID, "anchor-name").text == item_title(anchor)
    assert _meta(browser, "similar") == {"source": "similar", "version": VERSION}
    assert {c["code"] for c in _cards(browser, "similar")} == {"bought_together"}

    screenshot = tmp_path / "shop.png"
    assert browser.save_screenshot(str(screenshot))
    png = screenshot.read_bytes()
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width >= 1000 and height >= 600
    # A blank page compresses to a few kilobytes; a page of cards, text and gradients does not.
    assert len(png) > 40_000, len(png)


def test_the_ops_page_shows_the_live_version(
    browser: WebDriver, base_url: str, shop_store: ShopStore, console: Callable[[], list[dict[str, Any]]]
) -> None:
    """Behind the login form (the admin token), the ops page names the live version, and loads without a
    console error."""
    browser.get(f"{base_url}/ops")
    _wait(browser, lambda d: "/ops/login" in d.current_url, "the redirect to the login form")
    browser.find_element(By.ID, "token").send_keys("test-admin-token-0123456789")
    browser.find_element(By.ID, "login").click()
    # The login page has its own heading: wait for the ops page's address, then for its heading.
    _wait(browser, lambda d: d.current_url.rstrip("/").endswith("/ops"), "the redirect back to /ops")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "carousel ops", "the ops page")
    live = browser.find_element(By.XPATH, "//p[contains(., 'Live version')]").text
    assert VERSION in live

"""`GET /shop`: a small demo storefront (plain HTML, CSS and JavaScript under `serving/static/shop/`, no
build step) that shows the carousels with their reasons and sends storefront events.

The page itself only calls the public API (`/v1/recommendations`, `/v1/items/{id}/similar`,
`/v1/events`) plus two read-only helpers of its own:

- `GET /shop/api/shoppers`: up to `limit` shoppers of the lake's users table whose personal list resolves
  in the live version (the shopper picker), the countries to browse from anonymously, and the cart
  abandonment delay (so the page can say when a cart reminder will show);
- `GET /shop/api/items?id=...`: titles, categories and prices of catalog items from the lake, so cards
  show names and events carry the item's price.

Lake tables are read in a worker thread and kept in memory until their file changes.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import StringConstraints

from carousel.cache.keys import user_key
from carousel.cache.scripts import RESOLVE_USER_LIST
from carousel.lake import Lake
from carousel.rules.holdout import assign_variant
from carousel.rules.identity import shopper_token
from configs.settings import Settings
from serving.deps import SettingsDep
from serving.inputs import CONTEXT_PATTERN, ID_PATTERN
from serving.responses import error_response, json_response
from serving.store import ListStore, StoreUnavailable

# The demo's shopper tokens last a day: long enough for a session of trying things out.
SHOPPER_TOKEN_TTL_S = 86_400

router = APIRouter(tags=["shop"])

STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "shop"
# The only files served from STATIC_DIR (by name: nothing else on disk is reachable through the route).
ASSETS = {
    "shop.css": "text/css; charset=utf-8",
    "shop.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Shoppers checked for a personal list per request at most: a picker of 50 needs no full table scan.
MAX_SHOPPERS_SCANNED = 2000
# Shoppers whose list is resolved in one pipelined round trip (one script each on the shopper's key).
RESOLVE_BATCH = 200
MAX_COUNTRIES = 30

ItemIds = Annotated[
    list[Annotated[str, StringConstraints(pattern=ID_PATTERN)]],
    Query(alias="id", min_length=1, max_length=100, description="catalog item ids (repeat the parameter)"),
]


@dataclass(frozen=True)
class _Snapshot:
    """A lake table as read from one file at one modification time."""

    path: Path
    mtime_ns: int
    frame: pd.DataFrame


class _LakeTableCache:
    """One lake table (a few columns) held in memory and re-read only when its file changes."""

    def __init__(self, columns: list[str]) -> None:
        self._columns = columns
        self._snapshot: _Snapshot | None = None

    async def read(self, path: Path) -> pd.DataFrame | None:
        try:
            mtime_ns = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        snapshot = self._snapshot
        # Keyed by path too: apps with different lakes (tests) may share this process.
        if snapshot is None or (snapshot.path, snapshot.mtime_ns) != (path, mtime_ns):
            frame = await asyncio.to_thread(lambda: pq.read_table(path, columns=self._columns).to_pandas())
            snapshot = self._snapshot = _Snapshot(path, mtime_ns, frame)
        return snapshot.frame


_users = _LakeTableCache(["user_id", "country", "consent_personalization"])
_items = _LakeTableCache(["item_id", "title", "category", "price", "in_stock"])


@router.get("/shop", include_in_schema=False)
async def shop_page() -> Response:
    """The storefront page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """The app's icon. Browsers ask every origin for /favicon.ico when a page names none (`/ops`
    does not): answered, it is no 404 in their console."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/shop/static/{name}", include_in_schema=False)
async def shop_asset(name: str) -> Response:
    """The page's stylesheet and script."""
    if name not in ASSETS:
        return error_response(404, f"no shop asset named {name!r}")
    # Always revalidated: the demo is edited and reloaded, and the files are tiny.
    return FileResponse(STATIC_DIR / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


@router.get("/shop/api/shoppers")
async def shop_shoppers(
    request: Request,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=50)] = 50,
) -> Response:
    """Shoppers with a personal list in the live version (consenting ones first), the countries
    anonymous visitors can browse from, and the cart abandonment delay in seconds."""
    store = request.app.state.store
    users = await _users.read(Lake(settings.lake_dir).users_path)
    answer: dict[str, Any] = {
        "version": None,
        "shoppers": [],
        "countries": _countries(users),
        "cart_abandon_after_s": settings.cart_abandon_after_s,
    }
    try:
        version = await store.live_version()
        if version is None or users is None or users.empty:
            answer["version"] = version
            return json_response(answer)
        meta = await store.version_meta(version) or {}
        base = str(meta.get("base") or version)
        candidates = users.sort_values("consent_personalization", ascending=False, kind="stable")
        head = candidates.head(MAX_SHOPPERS_SCANNED)
        rows = list(
            zip(head["user_id"].astype(str), head["country"], head["consent_personalization"], strict=True)
        )
        found: list[dict[str, Any]] = []
        for start in range(0, len(rows), RESOLVE_BATCH):
            batch = rows[start : start + RESOLVE_BATCH]
            has_list = await _have_lists(store, version, base, [row[0] for row in batch])
            found.extend(
                _shopper(*row, settings=settings)
                for row, listed in zip(batch, has_list, strict=True)
                if listed
            )
            if len(found) >= limit:
                break
    except StoreUnavailable as exc:
        response = error_response(503, f"the list store is unavailable ({exc}); retry later")
        response.headers["Retry-After"] = "1"
        return response
    answer["version"] = version
    answer["shoppers"] = found[:limit]
    return json_response(answer)


@router.get("/shop/api/items")
async def shop_items(settings: SettingsDep, ids: ItemIds) -> Response:
    """Title, category, price and stock of the given catalog items (unknown ids are left out)."""
    catalog = await _items.read(Lake(settings.lake_dir).items_path)
    found: dict[str, dict[str, Any]] = {}
    if catalog is not None:
        rows = catalog[catalog["item_id"].isin(set(ids))]
        columns = (rows[c].tolist() for c in ("item_id", "title", "category", "price", "in_stock"))
        for item_id, title, category, price, in_stock in zip(*columns, strict=True):
            found[str(item_id)] = {
                "title": None if title is None or pd.isna(title) else str(title),
                "category": str(category),
                "price": float(price),
                "in_stock": bool(in_stock),
            }
    return json_response({"items": found})


async def _have_lists(store: ListStore, version: str, base: str, user_ids: list[str]) -> list[bool]:
    """Whether each shopper's list resolves in `version`: the serving script, pipelined, under the
    store's deadline and breaker. One call per batch rather than one per shopper: a burst of concurrent
    reads would open many connections at once, and a few connect timeouts would open the breaker for
    the whole API."""

    async def resolve() -> list[Any]:
        pipe = store.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.eval(RESOLVE_USER_LIST, 1, user_key(user_id), version, base)
        results: list[Any] = await pipe.execute()
        return results

    return [bool(payload) for payload in await store.call(resolve)]


def _shopper(user_id: str, country: Any, consent: Any, *, settings: Settings) -> dict[str, Any]:
    usable = isinstance(country, str) and re.fullmatch(CONTEXT_PATTERN, country)
    return {
        "user_id": user_id,
        # Sent back as request context and in events: only a value the API accepts there.
        "country": country if usable else None,
        "consent_personalization": bool(consent),
        # Shown in the picker: a holdout shopper is served the non-personal list on purpose.
        "variant": assign_variant(
            user_id, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent
        ),
        # What a store's backend hands the browser of a signed-in shopper (`carousel.rules.identity`).
        "shopper_token": _shopper_token(user_id, settings),
    }


def _shopper_token(user_id: str, settings: Settings) -> str | None:
    if settings.shopper_token_secret is None:
        return None
    secret = settings.shopper_token_secret.get_secret_value()
    return shopper_token(user_id, secret, expires_at=int(time.time()) + SHOPPER_TOKEN_TTL_S)


def _countries(users: pd.DataFrame | None) -> list[str]:
    """The shoppers' countries, most common first (what an anonymous visitor can browse from)."""
    if users is None or users.empty:
        return []
    counts = users["country"].dropna().astype(str).value_counts()
    # Only values the API accepts as request context (and in events) can be offered.
    usable = [str(c) for c in counts.index if re.fullmatch(CONTEXT_PATTERN, str(c))]
    return usable[:MAX_COUNTRIES]

"""The baseline guard through the real path: a store whose shoppers changed habits between the two label
windows, trained and scored by the refresh, published, and read over HTTP and on `/ops`; then the same
model with an explore model serving the never-bought places, rescored and read the same way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from carousel.lake import Lake
from configs.settings import Settings
from jobs.ingest.synthetic import StoreSpec, generate_store
from jobs.ranking.guard import LEARNED, POOLED, band_names
from jobs.ranking.store import ModelStore
from jobs.stages import refresh, run
from serving.app import create_app

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}
END = datetime(2026, 11, 1, tzinfo=UTC)
SHOPPERS = 300
# Each shopper's four staples, bought in pairs on twelve trips before either label window.
STAPLE_TRIPS = 12


def _changed_habits(items: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Purchases of shoppers who bought their staples for months, then tried three bestsellers they had
    never bought in the older label window (what a ranker trained on it learns: skip the shopper's own
    items), then went back to their staples in the newest one, where re-buys win. Returns the events and
    each shopper's staples in the order a re-buy baseline gives them: staples a and c are bought seven
    times, b and d six; c was bought last, then a, then d (trip 11), then b (trip 10)."""
    rng = np.random.default_rng(5)
    stock = items.loc[items["in_stock"], ["item_id", "price"]].reset_index(drop=True)
    price = dict(zip(stock["item_id"], stock["price"], strict=True))
    staples_pool, bestsellers = stock["item_id"][:120].to_numpy(), stock["item_id"][120:140].to_numpy()
    end = pd.Timestamp(END)
    rows: list[dict[str, object]] = []

    def buy(user: str, session: str, item: str, at: pd.Timestamp) -> None:
        rows.append(
            {
                "user_id": user,
                "session_id": session,
                "item_id": item,
                "event_type": "purchase",
                "ts": at,
                "quantity": 1,
                "price": float(price[item]),
                "country": "Germany",
                "device": "desktop",
                "referrer": "direct",
            }
        )

    # Other shoppers make the bestsellers bestsellers before the older window (which puts them among its
    # candidates), and buy nothing in either label window.
    for n, user in enumerate(users["user_id"][SHOPPERS:]):
        for trip in range(3):
            at = end - pd.Timedelta(days=88 - 12 * trip) + pd.Timedelta(minutes=n)
            for item in rng.choice(bestsellers, size=2, replace=False):
                buy(user, f"{user}-b{trip}", item, at)
    served_order: dict[str, list[str]] = {}
    for n, user in enumerate(users["user_id"][:SHOPPERS]):
        a, b, c, d = rng.choice(staples_pool, size=4, replace=False)
        hour = pd.Timedelta(minutes=int(n % 600))
        for trip in range(STAPLE_TRIPS):
            at = end - pd.Timedelta(days=88) + trip * pd.Timedelta(days=3.5) + hour
            for item in (a, b) if trip % 2 == 0 else (c, d):
                buy(user, f"{user}-t{trip}", item, at)
        for k, item in enumerate(rng.choice(bestsellers, size=3, replace=False)):
            buy(user, f"{user}-e{k}", item, end - pd.Timedelta(days=38 - 5 * k) + hour)
        buy(user, f"{user}-r0", a, end - pd.Timedelta(days=15) + hour)
        buy(user, f"{user}-r1", c, end - pd.Timedelta(days=5) + hour)
        served_order[str(user)] = [str(c), str(a), str(d), str(b)]
    return pd.DataFrame(rows), served_order


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=STOREFRONT) as client:
        yield client


def test_a_baseline_that_beat_the_ranker_on_the_newest_window_orders_the_served_lists(
    settings: Settings, api: TestClient
) -> None:
    """The full run's guard finds that re-buys beat the ranker for shoppers with 10+ orders, records it in
    model.json and on `/ops`, and their published lists put their staples first in the re-buy order; the
    same model with the guard switched off (its model.json edited) serves other lists."""
    store = generate_store(StoreSpec(users=SHOPPERS + 150, items=200, days=10, seed=3, end=pd.Timestamp(END)))
    users = store.users.assign(consent_personalization=True, consent_marketing=True)
    events, staples = _changed_habits(store.items, users)
    lake = Lake(settings.lake_dir)
    lake.upsert_items(
        store.items.assign(first_seen=pd.Timestamp(END) - pd.Timedelta(days=120)), source="items"
    )
    lake.upsert_users(users, source="users")
    lake.append_events(events, now=pd.Timestamp(END), source="changed habits")

    guarded = refresh.run_refresh(settings, interval_end=END, run_id="guarded", mode="full")
    models = ModelStore(settings.models_dir)
    number = models.latest()
    assert number is not None
    meta = models.describe(number)
    top_band = band_names()[-1]
    assert meta.get("guard"), {k: meta.get(k) for k in ("windows", "evaluation", "as_of", "train_rows")}
    assert meta["guard"]["serve"]["all"][-1] == "repurchase", meta["guard"]
    assert meta["guard"]["comparison"]["all"][top_band]["serve"] == "repurchase"
    # Never-bought places: the pooled choice (the blend of the ranker and the explore model unless the
    # ranker clearly beat it), and the explore model stored with the model exactly when it is read.
    pooled = meta["guard"]["comparison"]["new_items"][POOLED]
    assert set(meta["guard"]["serve"]["new_items"]) == {pooled["serve"]}, meta["guard"]
    assert meta["explore"] == (pooled["serve"] in LEARNED)
    assert (models.path(number) / "explore.txt").exists() == meta["explore"]

    lists = pd.read_parquet(run.run_dir(settings, "guarded") / "user_lists.parquet")
    served = {u: g.sort_values("rank")["item_id"].tolist() for u, g in lists.groupby("user_id")}
    assert set(staples) <= set(served)
    assert all(served[u][:4] == staples[u] for u in staples), "a guarded list left the re-buy order"
    shopper = next(iter(staples))
    body = api.get("/v1/recommendations", params={"user_id": shopper, "n": 10}).json()
    assert body["version"] == guarded.version and body["source"] == "personal"
    assert [i["item_id"] for i in body["items"]][:4] == staples[shopper]
    assert {i["reason"]["code"] for i in body["items"][:4]} == {"buy_again"}
    ops = api.get("/ops", headers=ADMIN).text
    assert "Guard: per task and band" in ops and "<td>repurchase</td>" in ops

    # The control: the same stored model without the guard, rescored over the same events.
    model_json = models.path(number) / "model.json"
    stored = json.loads(model_json.read_text())
    stored["guard"]["serve"] = {
        task: ["ranker"] * len(bands) for task, bands in stored["guard"]["serve"].items()
    }
    model_json.write_text(json.dumps(stored))
    refresh.run_refresh(settings, interval_end=END, run_id="unguarded", mode="rescore")
    control = pd.read_parquet(run.run_dir(settings, "unguarded") / "user_lists.parquet")
    ranker_first = {u: g.sort_values("rank")["item_id"].tolist()[:4] for u, g in control.groupby("user_id")}
    differ = sum(ranker_first[u] != staples[u] for u in staples)
    assert differ >= len(staples) // 2, f"the ranker alone gives the re-buy order to {len(staples) - differ}"

    # The same model with an explore model serving every band's never-bought places: the ranker with its
    # leaf values negated, so it orders never-bought items the other way round. Places of bought items
    # stay where the ranker put them; the never-bought places get other items.
    stored["guard"]["serve"]["new_items"] = ["explore"] * len(stored["guard"]["serve"]["new_items"])
    for figures in stored["guard"]["comparison"]["new_items"].values():
        figures["serve"] = "explore"
    explore_file = models.path(number) / "explore.txt"
    _negated(lgb.Booster(model_file=str(models.path(number) / "ranker.txt"))).save_model(str(explore_file))
    # As the model store records it: a booster file whose SHA-256 is not model.json's is refused.
    stored["explore"] = True
    stored["digests"]["explore.txt"] = hashlib.sha256(explore_file.read_bytes()).hexdigest()
    model_json.write_text(json.dumps(stored))
    refresh.run_refresh(settings, interval_end=END, run_id="explored", mode="rescore")
    explore = pd.read_parquet(run.run_dir(settings, "explored") / "user_lists.parquet")
    bought = events.groupby("user_id")["item_id"].agg(set)
    moved = 0
    for user, control_list in control.groupby("user_id"):
        before = control_list.sort_values("rank")["item_id"].tolist()
        after = explore.loc[explore["user_id"] == user].sort_values("rank")["item_id"].tolist()
        own = bought.get(user, set())
        assert [i if i in own else None for i in after] == [i if i in own else None for i in before], user
        moved += [i for i in after if i not in own] != [i for i in before if i not in own]
    assert moved >= len(staples) // 2, f"the explore model changed {moved} lists"
    # A rerun of a live interval is not published again: the next interval's rescore goes live, with the
    # explore model's lists read over HTTP as the run wrote them.
    live = refresh.run_refresh(
        settings, interval_end=END + timedelta(minutes=15), run_id="explored-live", mode="rescore"
    )
    assert live.version != guarded.version
    written = pd.read_parquet(run.run_dir(settings, "explored-live") / "user_lists.parquet")
    body = api.get("/v1/recommendations", params={"user_id": shopper, "n": 10}).json()
    assert body["version"] == live.version
    expected = written.loc[written["user_id"] == shopper].sort_values("rank")
    assert [i["item_id"] for i in body["items"]] == expected["item_id"].tolist()[:10]
    assert [i["reason"]["code"] for i in body["items"]] == expected["reason_code"].tolist()[:10]
    assert all(
        i["reason"]["code"] != "buy_again" for i in body["items"] if i["item_id"] not in bought[shopper]
    )
    assert "<td>explore</td></tr>" in api.get("/ops", headers=ADMIN).text


def _negated(booster: lgb.Booster) -> lgb.Booster:
    """`booster` with every leaf value negated: it scores every row minus what it scored."""
    for tree in booster.dump_model()["tree_info"]:
        for leaf in range(tree["num_leaves"]):
            booster.set_leaf_output(
                tree["tree_index"], leaf, -booster.get_leaf_output(tree["tree_index"], leaf)
            )
    return booster

"""Lists from scores: each shopper's best items with the reason that placed each one, short lists topped
up with popular items, and every item's similar items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from carousel.rules.reasons import REASON_TEXTS
from jobs.features.signals import CoocParams
from jobs.ranking.covisitation import CoVisitation, basket_similarity
from jobs.ranking.guard import SCORERS
from jobs.ranking.sparse import csr_top_k

LIST_COLUMNS = ["user_id", "rank", "item_id", "score", "reason_code", "reason_text"]


def explain_goes_with(lists: pd.DataFrame, covis: CoVisitation, titles: pd.Series) -> pd.DataFrame:
    """Name the shopper's own item behind every `goes_with_yours` reason: "Goes with <title>"."""
    rows = lists["reason_code"] == "goes_with_yours"
    if not rows.any():
        return lists
    anchors = pd.Series(
        covis.anchors(lists.loc[rows, "user_id"], lists.loc[rows, "item_id"]), index=lists.index[rows]
    )
    named = anchors.map(titles).fillna(anchors)
    lists = lists.copy()
    has = named.notna()
    lists.loc[named.index[has], "reason_text"] = "Goes with " + named[has].astype(str).str.strip().str.title()
    return lists


# The reason of a never-bought item a baseline placed (a `placed_by` column: `jobs.ranking.guard`).
_PLACED_BY_REASONS = {"als": "similar_shoppers", "popularity": "popular", "repurchase": "popular"}


def reason_codes(featured: pd.DataFrame) -> np.ndarray:
    """The signal that put each item in the list: own purchases, own views, similar shoppers, popularity.

    Where the guard served a baseline's order, a never-bought item names that baseline (similar
    shoppers for ALS, popular for popularity and for repurchase, which orders such items by popularity)."""
    bought = featured["ui_purchases"].to_numpy() > 0
    placed_by = featured["placed_by"].to_numpy() if "placed_by" in featured.columns else None
    conditions = [
        bought,
        (featured["ui_views"].to_numpy() + featured["ui_carts"].to_numpy()) > 0,
        featured["src_cooc"].to_numpy() > 0,
        featured["src_new"].to_numpy() > 0,
        featured["src_als"].to_numpy() > 0,
        featured["src_catpop"].to_numpy() > 0,
    ]
    choices = [
        "buy_again",
        "viewed",
        "goes_with_yours",
        "new_for_you",
        "similar_shoppers",
        "popular_in_category",
    ]
    if placed_by is not None:
        for scorer, code in _PLACED_BY_REASONS.items():
            conditions.insert(1, ~bought & (placed_by == SCORERS.index(scorer)))
            choices.insert(1, code)
    return np.select(conditions, choices, default="popular")


def top_lists(featured: pd.DataFrame, scores: np.ndarray, n: int, fill: pd.DataFrame) -> pd.DataFrame:
    """Per shopper the n best items by score, refilled from `fill` (popular items) when short.

    Returns user_id, rank, item_id, score, reason_code, reason_text.
    """
    ranked = featured[["user_id", "item_id"]].assign(score=scores, reason_code=reason_codes(featured))
    ranked = ranked.iloc[_list_order(ranked)]
    ranked = ranked.groupby("user_id", sort=False).head(n).reset_index(drop=True)
    ranked["rank"] = ranked.groupby("user_id").cumcount() + 1
    ranked["reason_text"] = ranked["reason_code"].map(REASON_TEXTS)
    return fill_short_lists(ranked[LIST_COLUMNS], n, fill)


def _list_order(ranked: pd.DataFrame) -> np.ndarray:
    """Row order by shopper, best score first, then item id: the order of a stable `sort_values` on
    those keys, sorted on integer codes (ids factorized in sorted order) instead of strings."""
    user_codes, _ = pd.factorize(ranked["user_id"], sort=True)
    item_codes, _ = pd.factorize(ranked["item_id"], sort=True)
    return np.lexsort((item_codes, -ranked["score"].to_numpy(dtype=np.float64), user_codes))


def fill_short_lists(
    lists: pd.DataFrame, n: int, fill: pd.DataFrame, *, floor: float | None = None
) -> pd.DataFrame:
    """Lists (`LIST_COLUMNS`, as `top_lists` returns them) with every list shorter than n topped up from
    `fill` (item_id, best first) with items it does not hold, scored below `floor`: by default the lowest
    score of all `lists`.

    Separate from `top_lists` so that lists built shopper by shopper are filled exactly as if they had
    been built at once: blocks filled one by one, each with the lowest score of all blocks as its
    floor, come out as the whole filled at once.
    """
    counts = lists.groupby("user_id").size()
    short = counts[counts < n].index
    if not len(short) or fill.empty:
        return lists
    if floor is None:
        floor = lists["score"].min() if len(lists) else 0.0
    extra = pd.DataFrame(
        {
            "user_id": np.repeat(short.to_numpy(), len(fill)),
            "item_id": np.tile(fill["item_id"].to_numpy(), len(short)),
            "score": np.tile(floor - 1.0 - np.arange(len(fill), dtype="float64") * 1e-3, len(short)),
            "reason_code": "popular",
        }
    )
    extra = extra.merge(lists[["user_id", "item_id"]], how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
    extra["reason_text"] = extra["reason_code"].map(REASON_TEXTS)
    ranked = pd.concat([lists.drop(columns="rank"), extra])
    ranked = ranked.iloc[_list_order(ranked)]
    ranked = ranked.groupby("user_id", sort=False).head(n).reset_index(drop=True)
    ranked["rank"] = ranked.groupby("user_id").cumcount() + 1
    return ranked[LIST_COLUMNS]


def published_similar_items(
    baskets: pd.DataFrame, items: pd.DataFrame, n: int, cooc: CoocParams
) -> pd.DataFrame:
    """The similar-item lists a full version publishes: the basket cosine over every session's baskets,
    guests' included (`jobs.features.collect.basket_frame`). The ranker's co-visitation feature keeps
    the known shoppers' baskets; a visitor's session list is built from these, and guest baskets are
    most of what a store's anonymous traffic buys together (on Online Retail's guest invoices, the
    session list went from 0.85x to 1.31x the bestsellers on the test month; docs/evaluation.md)."""
    similarity = None if baskets.empty else basket_similarity(baskets, cooc.shrink, cooc.neighbours)
    return similar_item_lists(similarity, items, n)


def similar_item_lists(
    similarity: tuple[sp.csr_matrix, pd.Index] | None, items: pd.DataFrame, n: int
) -> pd.DataFrame:
    """Per item, the `n` in-stock items most often bought or viewed in the same sessions (the basket
    cosine of `basket_similarity`): what `GET /v1/items/{id}/similar` serves and the source of the
    overlay's complements. Returns anchor_id, rank, item_id, score, reason_code, reason_text."""
    columns = ["anchor_id", "rank", "item_id", "score", "reason_code", "reason_text"]
    if similarity is None or not len(similarity[1]):
        return pd.DataFrame(columns=columns)
    matrix, index = similarity
    in_stock = pd.Index(items.loc[items["in_stock"], "item_id"])
    keep = np.asarray(index.isin(in_stock), dtype=np.float64)
    # Zero the columns of items that cannot be bought before taking each row's best.
    matrix = (sp.csr_matrix(matrix) @ sp.diags(keep)).tocsr()
    matrix.eliminate_zeros()
    rows, cols, values, ranks = csr_top_k(matrix, n)
    code = "bought_together"
    frame = pd.DataFrame(
        {
            "anchor_id": np.asarray(index, dtype=object)[rows],
            "rank": ranks.astype("int64"),
            "item_id": np.asarray(index, dtype=object)[cols],
            "score": values.astype("float64"),
            "reason_code": code,
            "reason_text": REASON_TEXTS[code],
        }
    )
    return frame.sort_values(["anchor_id", "rank"], kind="stable").reset_index(drop=True)[columns]


# The schema of a run's user_lists.parquet, given to the writer so every block is written alike.
LIST_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int64()),
        ("item_id", pa.string()),
        ("score", pa.float64()),
        ("reason_code", pa.string()),
        ("reason_text", pa.string()),
    ]
)


def list_table(lists: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(lists[LIST_COLUMNS], schema=LIST_SCHEMA, preserve_index=False)

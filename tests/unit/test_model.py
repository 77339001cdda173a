"""Candidates, ranker and list building on known-answer synthetic data with a fixed seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import chi2_contingency
from toy_store import toy_feature_set

from carousel.rules.reasons import REASON_TEXTS
from jobs.features.frames import FeatureSet
from jobs.ranking import als as als_module
from jobs.ranking import ranker
from jobs.ranking.als import AlsModel, AlsParams, fit_als
from jobs.ranking.candidate_features import FEATURES, add_features, label_candidates
from jobs.ranking.candidates import build_candidates
from jobs.ranking.columns import columns_at, frame_of
from jobs.ranking.covisitation import CoVisitation, co_visitation
from jobs.ranking.lists import _list_order, explain_goes_with, fill_short_lists, top_lists
from jobs.ranking.ranker import CompiledRanker, RankerParams, feature_matrix, score_candidates, train_ranker
from jobs.ranking.segments import credibility_constants, new_arrivals, segment_lists
from jobs.ranking.sparse import csr_at


@pytest.fixture
def fs() -> FeatureSet:
    return toy_feature_set()


def test_als_recommends_within_the_taste_cluster(fs: FeatureSet) -> None:
    """ALS top items of an even shopper are mostly even items (the cluster it learned)."""
    als = fit_als(fs.interactions, AlsParams(factors=8, iterations=10))
    top = als.recommend(10)
    even_user = top[top["user_id"] == "u0"]
    share_even = even_user["item_id"].str[1:].astype(int).mod(2).eq(0).mean()
    assert len(even_user) == 10 and share_even >= 0.8


def test_als_top_k_is_the_dense_product_top_k() -> None:
    """The top-k kernel gives each shopper the items, order and scores of the full product."""
    rng = np.random.default_rng(3)
    als = AlsModel(
        user_ids=np.array([f"u{n}" for n in range(300)], dtype=object),
        item_ids=np.array([f"i{n}" for n in range(2_000)], dtype=object),
        user_factors=rng.standard_normal((300, 16)).astype(np.float32),
        item_factors=rng.standard_normal((2_000, 16)).astype(np.float32),
        matrix=sp.csr_matrix((300, 2_000), dtype=np.float32),
    )
    top = als.recommend(25)
    dense = als.user_factors @ als.item_factors.T
    order = np.argsort(-dense, axis=1, kind="stable")[:, :25]
    assert top["user_id"].tolist() == np.repeat(als.user_ids, 25).tolist()
    assert top["item_id"].tolist() == als.item_ids[order.ravel()].tolist()
    np.testing.assert_allclose(top["als_score"], np.take_along_axis(dense, order, axis=1).ravel(), rtol=1e-5)
    assert top["als_rank"].tolist() == list(range(1, 26)) * 300


def test_candidates_keep_sources_and_only_in_stock_items(fs: FeatureSet) -> None:
    """Candidates are unique per (user, item), flagged by source, and never out of stock."""
    als = fit_als(fs.interactions, AlsParams(factors=8, iterations=5))
    users = fs.users["user_id"].to_numpy()
    cands = build_candidates(fs, als, users, co_visitation(fs, users), als_k=10, popular_k=5)
    assert not cands.duplicated(["user_id", "item_id"]).any()
    assert "i0" not in set(cands["item_id"])
    own = set(fs.interactions.loc[fs.interactions["user_id"] == "u1", "item_id"]) - {"i0"}
    flagged = set(cands.loc[(cands["user_id"] == "u1") & (cands["src_history"] == 1), "item_id"])
    assert flagged == own


def test_category_bestsellers_are_the_months_best_in_stock_items_of_a_shoppers_favourite_categories(
    fs: FeatureSet,
) -> None:
    """`src_catpop` flags, for each shopper, the best-selling in-stock items of their favourite category
    by the month's sales, at most `category_k` of them, and never another category's."""
    als = fit_als(fs.interactions, AlsParams(factors=8, iterations=5))
    users = fs.users["user_id"].to_numpy()
    cands = build_candidates(fs, als, users, co_visitation(fs, users), als_k=2, popular_k=1, category_k=4)
    flagged = cands[cands["src_catpop"] == 1]
    even = fs.items[(fs.items["category"] == "even") & fs.items["in_stock"]]
    best_even = set(even.sort_values(["pop_30d", "pop_90d"], ascending=False, kind="stable")["item_id"][:4])
    for user in ("u0", "u2"):  # even shoppers: their favourite category is "even"
        assert set(flagged.loc[flagged["user_id"] == user, "item_id"]) == best_even
    parity = flagged["item_id"].str[1:].astype(int) % 2
    assert "i0" not in set(flagged["item_id"])
    assert (parity == flagged["user_id"].str[1:].astype(int) % 2).all()
    assert set(cands["src_catpop"].unique()) == {0.0, 1.0}


def test_scores_by_slices_of_a_column_order_matrix_are_the_whole_frames(
    fs: FeatureSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ranker trained and scoring through `feature_matrix` (column order, filled per column) and in
    slices of `PREDICT_ROWS` gives the scores of one predict over the frame's row-order copy, and a
    ranker trained on that copy is the same ranker."""
    als = fit_als(fs.interactions, AlsParams(factors=8, iterations=5))
    users = fs.users["user_id"].to_numpy()
    cands = build_candidates(fs, als, users, co_visitation(fs, users), als_k=10, popular_k=5)
    labelled = label_candidates(add_features(cands, fs, als), fs.interactions[["user_id", "item_id"]])
    params = RankerParams(num_boost_round=20, min_data_in_leaf=5)
    booster = train_ranker(labelled, params)
    assert booster is not None
    row_order = labelled[list(FEATURES)].to_numpy(dtype=np.float64)
    matrix = feature_matrix(labelled)
    assert matrix.flags["F_CONTIGUOUS"] and np.array_equal(matrix, row_order, equal_nan=True)
    monkeypatch.setattr(ranker, "PREDICT_ROWS", 7)
    assert len(labelled) > 3 * 7
    scores = score_candidates(labelled, CompiledRanker(booster))
    # The compiled trees are LightGBM's, to floating-point rounding (a summation order of its own).
    np.testing.assert_allclose(scores, booster.predict(row_order), rtol=0, atol=1e-12)
    assert np.array_equal(score_candidates(labelled, CompiledRanker(booster)), scores)
    monkeypatch.setattr(ranker, "feature_matrix", lambda frame: frame[list(FEATURES)].to_numpy(np.float64))
    row_order_booster = train_ranker(labelled, params)
    assert row_order_booster is not None
    assert row_order_booster.model_to_string() == booster.model_to_string()


def test_ranker_training_is_reproducible_on_both_threads() -> None:
    """The same candidates train the same ranker, on the two threads training uses: a full run that
    trains again must publish the same lists. LightGBM's bagging by query (4.6) breaks this with more
    than one thread, so it is not used; this is the quick check that an option like it fails."""
    rng = np.random.default_rng(5)
    shoppers, per_shopper = 300, 50
    labelled = pd.DataFrame(rng.random((shoppers * per_shopper, len(FEATURES))), columns=list(FEATURES))
    labelled.insert(0, "user_id", np.repeat([f"u{i:04d}" for i in range(shoppers)], per_shopper))
    labelled["label"] = (rng.random(len(labelled)) < 0.05).astype("int32")
    params = RankerParams(num_boost_round=30, min_data_in_leaf=20)
    models = {train_ranker(labelled, params).model_to_string() for _ in range(3)}  # type: ignore[union-attr]
    assert len(models) == 1


def test_ranker_learns_and_lists_are_complete(fs: FeatureSet) -> None:
    """A ranker trained on labels = 'bought before' ranks history first; lists have n unique items."""
    als = fit_als(fs.interactions, AlsParams(factors=8, iterations=5))
    users = fs.users["user_id"].to_numpy()
    cands = build_candidates(fs, als, users, co_visitation(fs, users), als_k=10, popular_k=5)
    featured = add_features(cands, fs, als)
    labelled = label_candidates(featured, fs.interactions[["user_id", "item_id"]])
    booster = train_ranker(labelled, RankerParams(num_boost_round=30, min_data_in_leaf=5))
    assert booster is not None
    scores = score_candidates(labelled, CompiledRanker(booster))
    lists = top_lists(labelled, scores, n=12, fill=fs.popular_items(30))
    sizes = lists.groupby("user_id").size()
    assert (sizes == 12).all() and len(sizes) == len(users)
    assert not lists.duplicated(["user_id", "item_id"]).any()
    assert lists.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, 13))).all()
    first = lists[lists["rank"] <= 3].merge(fs.interactions, on=["user_id", "item_id"], how="left")
    assert first["weight"].notna().mean() > 0.9
    assert set(lists["reason_code"]) <= set(REASON_TEXTS)


def test_features_match_plain_left_merges(fs: FeatureSet) -> None:
    """add_features' integer-key joins give the values of plain pandas left merges on the string ids."""
    als = fit_als(fs.interactions, AlsParams(factors=8, iterations=5))
    users = fs.users["user_id"].to_numpy()
    cands = build_candidates(fs, als, users, co_visitation(fs, users), als_k=10, popular_k=5)
    # Drop a few feature rows so that the joins also have misses to fill.
    fs.user_item = fs.user_item.iloc[::2]
    fs.affinity = fs.affinity.iloc[1:]
    featured = add_features(cands, fs, als)
    expected = (
        cands.merge(fs.user_item, on=["user_id", "item_id"], how="left")
        .merge(
            fs.items[["item_id", "category", "item_price", "pop_7d", "pop_trend"]], on="item_id", how="left"
        )
        .merge(fs.users, on="user_id", how="left")
        .merge(fs.affinity, on=["user_id", "category"], how="left")
    )
    expected["ui_views"] = expected["ui_views"].fillna(0.0)
    expected["cat_affinity"] = expected["cat_affinity"].fillna(0.0)
    for col in ("ui_views", "ui_days_since_touch", "category", "pop_7d", "u_events", "cat_affinity"):
        pd.testing.assert_series_equal(featured[col], expected[col], check_dtype=False)
    assert featured["ui_views"].eq(0).any() and featured["cat_affinity"].eq(0).any()


def test_columns_at_positions_are_a_left_merge_dtypes_included() -> None:
    """Rows taken column by column at positions (-1 for a miss) equal a left merge on a unique key, dtypes
    included (ints with a miss become float, booleans object), with and without misses and on an empty
    right side; a column joined twice is an error."""
    right = pd.DataFrame(
        {
            "key": ["a", "b", "c"],
            "count": np.array([1, 2, 3], dtype=np.int32),
            "big": np.array([10, 20, 30], dtype=np.int64),
            "rate": [0.5, np.nan, 1.5],
            "flag": [True, False, True],
            "name": ["x", None, "z"],
            "seen": pd.to_datetime(["2026-01-01", "2026-02-01", None]),
            "kind": pd.Categorical(["p", "q", "p"]),
        }
    )
    for wanted in (["c", "zz", "a", "a", "b"], ["b", "a"], []):
        left = pd.DataFrame({"key": wanted})
        expected = left.merge(right, on="key", how="left").drop(columns="key")
        positions = pd.Index(right["key"]).get_indexer(pd.Index(wanted))
        got = frame_of(columns_at(right, positions, skip=("key",)))
        pd.testing.assert_frame_equal(got, expected)
    empty = right.iloc[:0]
    got = frame_of(columns_at(empty, np.array([-1, -1]), skip=("key",)))
    expected = pd.DataFrame({"key": ["a", "b"]}).merge(empty, on="key", how="left").drop(columns="key")
    pd.testing.assert_frame_equal(got, expected)
    with pytest.raises(ValueError, match="joined twice"):
        frame_of(columns_at(right, None), columns_at(right, None, skip=("key",)))


def test_lists_filled_after_blocks_equal_lists_built_at_once(fs: FeatureSet) -> None:
    """Lists built block by block and filled once equal top_lists over everyone, fill scores included."""
    rng = np.random.default_rng(1)
    featured = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{u}" for u in range(6)], [1, 9, 2, 9, 3, 9]),
            "item_id": [f"i{i}" for i in rng.integers(1, 40, size=33)],
        }
    ).drop_duplicates()
    for col in ("ui_purchases", "ui_views", "ui_carts", "src_als", "src_cooc", "src_new", "src_catpop"):
        featured[col] = rng.integers(0, 2, size=len(featured)).astype(float)
    scores = rng.normal(size=len(featured))
    fill = fs.popular_items(12)
    whole = top_lists(featured, scores, n=8, fill=fill)
    empty = pd.DataFrame({"item_id": pd.Series(dtype=object)})
    first = (featured["user_id"] < "u3").to_numpy()
    blocks = pd.concat(
        [
            top_lists(featured[first], scores[first], n=8, fill=empty),
            top_lists(featured[~first], scores[~first], n=8, fill=empty),
        ],
        ignore_index=True,
    )
    assert (blocks.groupby("user_id").size() < 8).any()
    pd.testing.assert_frame_equal(fill_short_lists(blocks, 8, fill), whole)


def test_top_lists_refill_short_lists_from_popular(fs: FeatureSet) -> None:
    """A shopper with two candidates still gets n items, the extra ones marked popular."""
    featured = pd.DataFrame(
        {
            "user_id": ["x", "x"],
            "item_id": ["i1", "i2"],
            "ui_purchases": [1.0, 0.0],
            "ui_views": [0.0, 0.0],
            "ui_carts": [0.0, 0.0],
            "src_als": [0.0, 1.0],
            "src_cooc": [0.0, 0.0],
            "src_new": [0.0, 0.0],
            "src_catpop": [0.0, 0.0],
        }
    )
    lists = top_lists(featured, np.array([2.0, 1.0]), n=5, fill=fs.popular_items(10))
    assert lists["item_id"].tolist()[:2] == ["i1", "i2"]
    assert len(lists) == 5 and lists["item_id"].is_unique
    assert lists["reason_code"].tolist() == ["buy_again", "similar_shoppers", "popular", "popular", "popular"]


def _popularity(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    """(segment, item_id, buyers) of these segments, with the global segment their sum."""
    rows = [(segment, item, buyers) for segment, row in counts.items() for item, buyers in row.items()]
    total: dict[str, int] = {}
    for _, item, buyers in rows:
        total[item] = total.get(item, 0) + buyers
    rows += [("global", item, buyers) for item, buyers in total.items()]
    return pd.DataFrame(rows, columns=["segment", "item_id", "buyers"])


def test_segment_lists_top_up_thin_categories_from_global() -> None:
    """A department with one bought item gets the global list after it, without repeating it."""
    pop = pd.DataFrame(
        {
            "segment": ["global"] * 4 + ["category:garden"],
            "item_id": ["a", "b", "c", "d", "c"],
            "buyers": [9, 7, 5, 3, 2],
        }
    )
    lists = segment_lists(pop, n=3)
    garden = lists[lists["segment"] == "category:garden"]
    assert garden["item_id"].tolist() == ["c", "a", "b"]
    assert garden["reason_code"].tolist() == ["popular_in_category", "bestseller", "bestseller"]
    assert lists[lists["segment"] == "global"]["item_id"].tolist() == ["a", "b", "c"]


def test_a_thin_country_of_the_global_taste_gets_the_global_order() -> None:
    """Where countries buy alike, one purchase in a small country does not put its item first."""
    same_taste = {"a": 60, "b": 50, "c": 40, "d": 30, "e": 20, "f": 10}
    pop = _popularity(
        {
            "country:north": same_taste,
            "country:south": {item: 2 * buyers for item, buyers in same_taste.items()},
            "country:tiny": {"f": 1},
        }
    )
    lists = segment_lists(pop, n=4)
    tiny = lists[lists["segment"] == "country:tiny"]
    assert tiny["item_id"].tolist() == ["a", "b", "c", "d"]
    assert tiny["reason_code"].eq("bestseller").all()


def test_large_countries_with_distinct_tastes_keep_their_own_orders() -> None:
    """Two large countries that buy opposite ends of the catalog each keep their own best sellers."""
    pop = _popularity(
        {
            "country:north": {"a": 300, "b": 240, "c": 180, "d": 10, "e": 6, "f": 2},
            "country:south": {"a": 4, "b": 8, "c": 12, "d": 360, "e": 420, "f": 480},
        }
    )
    lists = segment_lists(pop, n=4)
    assert lists[lists["segment"] == "country:north"]["item_id"].tolist() == ["a", "b", "c", "d"]
    assert lists[lists["segment"] == "country:south"]["item_id"].tolist() == ["f", "e", "d", "c"]
    assert lists[lists["segment"] == "global"]["item_id"].tolist() == ["f", "e", "d", "a"]
    assert lists.loc[lists["segment"] != "global", "reason_code"].eq("popular_in_country").all()


def test_credibility_constant_is_the_within_over_the_between_segment_variance() -> None:
    """k is (I - 1) over the chi-square's excess on its degrees of freedom, per N - sum(N_s^2) / N;
    a dimension without excess or with one segment gets k = inf."""
    counts = {
        "country:north": {"a": 30, "b": 20, "c": 10},
        "country:south": {"a": 10, "b": 20, "c": 30},
        "device:mobile": {"a": 5},
    }
    table = np.array([[30, 20, 10], [10, 20, 30]])
    chi_square = chi2_contingency(table, correction=False)[0]
    n, sizes = table.sum(), table.sum(axis=1)
    expected = 2 / ((chi_square - 2) / (n - (sizes**2).sum() / n))
    got = credibility_constants(_popularity(counts))
    assert got["country"] == pytest.approx(expected)
    assert got["device"] == np.inf and got["referrer"] == np.inf


def test_exploration_slots_show_new_arrivals_every_fifth_position() -> None:
    """Slots 5 and 10 of a 10-item segment list go to new arrivals the list did not hold, in order."""
    pop = pd.DataFrame(
        {
            "segment": ["global"] * 12,
            "item_id": [f"p{i}" for i in range(12)],
            "buyers": list(range(50, 38, -1)),
        }
    )
    fresh = pd.DataFrame({"item_id": ["p1", "n1", "n2", "n3"], "department": ["home"] * 4})
    lists = segment_lists(pop, n=10, fresh=fresh, explore_every=5)
    items = lists["item_id"].tolist()
    assert items == ["p0", "p1", "p2", "p3", "n1", "p4", "p5", "p6", "p7", "n2"]
    assert lists.loc[lists["item_id"].isin(["n1", "n2"]), "reason_code"].eq("new_arrival").all()
    assert lists["rank"].tolist() == list(range(1, 11))


def test_new_arrivals_are_recent_in_stock_best_sellers_first() -> None:
    """Only in-stock items younger than the window qualify, ordered by early sales."""
    items = pd.DataFrame(
        {
            "item_id": ["old", "new_slow", "new_fast", "new_gone"],
            "category": ["home/a", "home/b", "Kitchen/c", "home/d"],
            "in_stock": [True, True, True, False],
            "item_age_days": [90.0, 3.0, 5.0, 1.0],
            "pop_7d": [10.0, 1.0, 4.0, 9.0],
        }
    )
    fresh = new_arrivals(items, max_age_days=14)
    assert fresh["item_id"].tolist() == ["new_fast", "new_slow"]
    assert fresh["department"].tolist() == ["kitchen", "home"]


def test_goes_with_reason_names_the_shoppers_own_item() -> None:
    """An item that co-occurs with a shopper's purchase is explained by naming that purchase."""
    fs = toy_feature_set()
    fs.baskets = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s2", "s2", "s3", "s3"],
            "item_id": ["i2", "i3", "i2", "i3", "i5", "i7"],
            "weight": 1.0,
        }
    )
    fs.interest = pd.DataFrame(
        {"user_id": ["shopper", "shopper"], "item_id": ["i2", "i5"], "interest": [3.0, 0.1]}
    )
    covis = co_visitation(fs, np.array(["shopper"], dtype=object))
    top = covis.top(5)
    assert top["item_id"].tolist()[:2] == ["i3", "i7"]  # i3 goes with the recent, often-bought i2
    lists = pd.DataFrame(
        {
            "user_id": ["shopper", "shopper"],
            "item_id": ["i3", "i7"],
            "reason_code": ["goes_with_yours", "goes_with_yours"],
            "reason_text": ["x", "x"],
        }
    )
    titles = pd.Series({"i2": "BLUE MUG", "i5": "RED SAUCER"})
    explained = explain_goes_with(lists, covis, titles)
    assert explained["reason_text"].tolist() == ["Goes with Blue Mug", "Goes with Red Saucer"]


def test_anchors_name_the_shoppers_item_that_contributes_most() -> None:
    """The vectorized `anchors` equals, pair by pair, the sparse row x column product it replaced (ties
    go to the lowest item, unknown shoppers or items get None)."""
    rng = np.random.default_rng(3)
    shopper_items = sp.random(80, 40, density=0.1, random_state=1, format="csr")
    item_item = sp.random(40, 40, density=0.15, random_state=2, format="csr")
    shopper_items.data = np.round(shopper_items.data * 4) / 4  # coarse values make ties
    item_item.data = np.round(item_item.data * 4) / 4
    users = np.array([f"u{k}" for k in range(80)], dtype=object)
    items = np.array([f"i{k}" for k in range(40)], dtype=object)
    covis = CoVisitation(users, items, (shopper_items @ item_item).tocsr(), shopper_items, item_item.tocsc())
    asked_users = rng.choice(np.append(users, "stranger"), 2_000)
    asked_items = rng.choice(np.append(items, "unknown"), 2_000)
    expected = []
    for user, item in zip(asked_users, asked_items, strict=True):
        if user == "stranger" or item == "unknown":
            expected.append(None)
            continue
        contribution = shopper_items.getrow(int(user[1:])).multiply(item_item.tocsc().getcol(int(item[1:])).T)
        best = contribution.indices[int(np.argmax(contribution.data))] if contribution.nnz else None
        expected.append(None if best is None else items[best])
    got = covis.anchors(pd.Series(asked_users), pd.Series(asked_items))
    assert list(got) == expected
    assert sum(a is not None for a in expected) > 500  # the case is not trivially all None


def test_stored_values_of_a_sparse_product_are_found_for_any_pairs() -> None:
    """The binary search over stored keys reads what SciPy's fancy indexing reads, including pairs
    with nothing stored, on a product whose column indices SciPy left unsorted."""
    rng = np.random.default_rng(5)
    left = sp.random(50, 80, density=0.1, format="csr", random_state=rng)
    right = sp.random(80, 120, density=0.1, format="csr", random_state=rng)
    product = (left @ right).tocsr()
    product.indices = product.indices.copy()
    for row in range(product.shape[0]):  # reverse each row's entries: unsorted, same matrix
        start, end = product.indptr[row], product.indptr[row + 1]
        product.indices[start:end] = product.indices[start:end][::-1].copy()
        product.data[start:end] = product.data[start:end][::-1].copy()
    product.has_sorted_indices = False
    dense = product.toarray()
    rows, cols = rng.integers(0, 50, 5_000), rng.integers(0, 120, 5_000)
    found = csr_at(product, rows, cols)
    np.testing.assert_array_equal(found, dense[rows, cols])
    assert (found == 0).any() and (found > 0).any()
    # Its indices were sorted in place: the same matrix, and a second lookup agrees.
    assert product.has_sorted_indices
    np.testing.assert_array_equal(product.toarray(), dense)
    np.testing.assert_array_equal(csr_at(product, rows, cols), found)
    assert not csr_at(sp.csr_matrix((3, 4)), np.array([0, 2]), np.array([1, 3])).any()


def test_list_order_is_the_stable_sort_by_shopper_score_and_item() -> None:
    rng = np.random.default_rng(6)
    ranked = pd.DataFrame(
        {
            "user_id": rng.choice(["u10", "u2", "u3", "ü1"], 400),
            "item_id": [f"i{n}" for n in rng.permutation(400)],
            "score": rng.integers(0, 5, 400).astype(float),  # many ties: the item id decides them
        }
    )
    expected = ranked.sort_values(
        ["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable"
    )
    pd.testing.assert_frame_equal(ranked.iloc[_list_order(ranked)], expected)


def test_als_scores_pairs_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dot products of any pairs, NaN where the shopper or item is unknown, whatever the chunk size."""
    rng = np.random.default_rng(8)
    als = AlsModel(
        user_ids=np.array(["a", "b", "c"], dtype=object),
        item_ids=np.array(["x", "y"], dtype=object),
        user_factors=rng.standard_normal((3, 4)).astype(np.float32),
        item_factors=rng.standard_normal((2, 4)).astype(np.float32),
        matrix=sp.csr_matrix((3, 2), dtype=np.float32),
    )
    users = pd.Series(list(rng.choice(["a", "b", "c", "new"], 50)))
    items = pd.Series(list(rng.choice(["x", "y", "gone"], 50)))
    monkeypatch.setattr(als_module, "PAIR_CHUNK", 7)
    scores = als.score_pairs(users, items)
    for user, item, score in zip(users, items, scores, strict=True):
        if user == "new" or item == "gone":
            assert np.isnan(score)
        else:
            u, i = "abc".index(user), "xy".index(item)
            assert score == pytest.approx(float(als.user_factors[u] @ als.item_factors[i]), rel=1e-5)

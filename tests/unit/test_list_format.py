"""The stored list format (`carousel.cache.payload`): what the loader writes is what the API serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from carousel.cache import keys as layout
from carousel.cache import payload as list_format
from carousel.rules.reasons import REASON_TEXTS
from jobs.publishing import PublishError
from jobs.publishing.lists_file import SortedListsFile, open_lists
from jobs.publishing.loader import content_digest, list_payloads, significant


def test_a_list_round_trips_in_the_served_shape_with_standard_texts_left_out() -> None:
    """Decoding gives every item's id, score and reason back; only non-standard texts are stored."""
    rows = [
        ("i1", 2.5, "similar_shoppers", REASON_TEXTS["similar_shoppers"]),
        ("i2", 1.25, "goes_with_yours", "Goes with Red Mug"),
        ("i3", -0.5, "similar_shoppers", REASON_TEXTS["similar_shoppers"]),
        ("i4", -0.75, "popular_in_country", "Popular in Germany"),
    ]
    payload = list_format.encode_items(rows)
    assert list_format.decode_items(payload) == [
        {"item_id": i, "score": s, "reason": {"code": c, "text": t}} for i, s, c, t in rows
    ]
    table = orjson.loads(payload)[0]
    assert table == [
        ["similar_shoppers"],
        ["goes_with_yours", "Goes with Red Mug"],
        ["popular_in_country", "Popular in Germany"],
    ]


def test_iter_items_is_lazy() -> None:
    """The API builds only the items it serves: taking two of a thousand builds two."""
    payload = list_format.encode_items((f"i{k}", 1.0, "popular", "x") for k in range(1_000))
    items = list_format.iter_items(payload)
    assert [next(items)["item_id"], next(items)["item_id"]] == ["i0", "i1"]


def test_scores_keep_four_significant_digits() -> None:
    values = np.array([0.123456, -2.345678, 0.0, 1.23456e-7, 12345.678])
    assert significant(values, 4).tolist() == [0.1235, -2.346, 0.0, 1.235e-7, 12350.0]


def test_loader_payloads_follow_rank_order_per_owner() -> None:
    """`list_payloads` groups rows by owner and orders them by rank, whatever the frame's order."""
    frame = pd.DataFrame(
        {
            "user_id": ["b", "a", "a", "b"],
            "rank": [2, 2, 1, 1],
            "item_id": ["b2", "a2", "a1", "b1"],
            "score": [0.5, 0.25, 0.75, 0.9],
            "reason_code": "popular",
            "reason_text": REASON_TEXTS["popular"],
        }
    )
    decoded = {
        owner: [i["item_id"] for i in list_format.decode_items(p)]
        for owner, p in list_payloads(frame, "user_id")
    }
    assert decoded == {"a": ["a1", "a2"], "b": ["b1", "b2"]}


def test_a_shoppers_keys_share_one_hash_tag() -> None:
    """List, consent and real-time keys of one shopper land in one cluster slot (one script reads them)."""
    user = "shopper:42}x"
    keys = [layout.user_key(user), layout.consent_key(user), *layout.shopper_state_keys(user).all]
    tags = {key[key.index("{") + 1 : key.index("}")] for key in keys}
    assert tags == {"u:shopper:42"}
    assert layout.tagged_user_id(layout.consent_key(user), layout.CONSENT_PREFIX) == user


def test_vectorized_payloads_equal_encoding_each_list_on_its_own() -> None:
    """The loader's vectorized encoding gives, byte for byte, what `encode_items` gives list by list."""
    rng = np.random.default_rng(5)
    rows = 600
    codes = np.array(["popular", "goes_with_yours", "viewed", "popular_in_country"], dtype=object)
    frame = pd.DataFrame(
        {
            "user_id": rng.choice(np.array([f"u{k}" for k in range(40)], dtype=object), rows),
            "rank": rng.permutation(rows),
            "item_id": [f"i{k}" for k in range(rows)],
            "score": rng.normal(size=rows),
            "reason_code": rng.choice(codes, rows),
            "reason_text": rng.choice(
                np.array(["Goes with A", "Goes with B", "Popular right now"], dtype=object), rows
            ),
        }
    )
    expected = {}
    for owner, group in frame.sort_values(["user_id", "rank"]).groupby("user_id"):
        scores = significant(group["score"].to_numpy(), list_format.SCORE_DIGITS).tolist()
        expected[owner] = list_format.encode_items(
            zip(group["item_id"], scores, group["reason_code"], group["reason_text"], strict=True)
        )
    assert dict(list_payloads(frame, "user_id")) == expected


def _lists(users: int, length: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{k:04d}" for k in range(users)], length),
            "rank": np.tile(np.arange(1, length + 1), users),
            "item_id": [f"i{k}" for k in rng.integers(0, 500, users * length)],
            "score": rng.random(users * length),
            "reason_code": "popular",
            "reason_text": REASON_TEXTS["popular"],
        }
    )
    return frame.sample(frac=1.0, random_state=1).sort_values("user_id", kind="stable", ignore_index=True)


def test_a_sorted_file_read_in_blocks_gives_the_whole_frames_lists_and_digest(tmp_path: Path) -> None:
    """Blocks that cut lists in the middle (7 rows each, lists of 5, ranks shuffled within a list) still
    give every list whole, in owner order: the same payloads and digest as the frame read at once."""
    frame = _lists(users=40, length=5)
    frame.to_parquet(tmp_path / "lists.parquet", index=False, row_group_size=11)
    source = SortedListsFile(tmp_path / "lists.parquet", block_rows=7)
    assert source.is_sorted() and source.rows() == 200
    blocks = list(source.blocks())
    assert len(blocks) > 10 and sum(len(b) for b in blocks) == 200
    assert all(b["user_id"].iloc[-1] < c["user_id"].iloc[0] for b, c in zip(blocks, blocks[1:], strict=False))
    streamed = [pair for block in blocks for pair in list_payloads(block, "user_id")]
    assert streamed == list(list_payloads(frame, "user_id"))
    segments = frame.rename(columns={"user_id": "segment"}).head(10)
    assert content_digest(source, segments) == content_digest(frame, segments)


def test_an_unsorted_file_is_detected_and_refused_block_by_block(tmp_path: Path) -> None:
    frame = _lists(users=10, length=3)
    shuffled = pd.concat([frame.iloc[15:], frame.iloc[:15]], ignore_index=True)
    shuffled.to_parquet(tmp_path / "lists.parquet", index=False)
    source = SortedListsFile(tmp_path / "lists.parquet", block_rows=4)
    assert not source.is_sorted()
    with pytest.raises(PublishError, match="not sorted by user_id"):
        list(source.blocks())


def test_rows_without_an_owner_are_refused_not_compared(tmp_path: Path) -> None:
    """A row whose owner is null stops the reading with the loader's error (the gate and the publish
    stage turn it into a refusal), not with a TypeError from comparing None with a string."""
    frame = _lists(users=6, length=3)
    frame.loc[7, "user_id"] = None
    frame.to_parquet(tmp_path / "lists.parquet", index=False)
    with pytest.raises(PublishError, match="rows without a user_id"):
        list(SortedListsFile(tmp_path / "lists.parquet", block_rows=4).blocks())


def test_lists_are_streamed_when_sorted_and_an_older_unsorted_file_is_read_whole(tmp_path: Path) -> None:
    frame = _lists(users=10, length=3)
    frame.to_parquet(tmp_path / "sorted.parquet", index=False)
    pd.concat([frame.iloc[15:], frame.iloc[:15]]).to_parquet(tmp_path / "unsorted.parquet", index=False)
    streamed = open_lists(tmp_path / "sorted.parquet", columns=("user_id", "item_id"))
    assert isinstance(streamed, SortedListsFile)
    assert list(pd.concat(streamed.blocks()).columns) == ["user_id", "item_id"]
    whole = open_lists(tmp_path / "unsorted.parquet", columns=("user_id", "item_id"))
    assert (
        isinstance(whole, pd.DataFrame) and len(whole) == 30 and list(whole.columns) == ["user_id", "item_id"]
    )

"""The stored formats: a list's payload and a version's meta.

A list payload is compact, because a store keeps one per shopper: the distinct reasons of the list, then
the item ids, scores and reason references as three parallel arrays; a reason's text is stored only when
it is not the code's standard text (`carousel.rules.reasons.REASON_TEXTS`), e.g. "Goes with <title>"::

    [[["similar_shoppers"], ["goes_with_yours", "Goes with Red Mug"]], ["i1", "i7"], [0.93, 0.9], [0, 1]]

`decode_items` (or lazily `iter_items`) turns it back into the served shape:
``{"item_id": "i1", "score": 0.93, "reason": {"code": "similar_shoppers", "text": "..."}}``. A 30-item
list takes under 1 KB; Redis keeps a hash of such values in its compact listpack encoding when
`hash-max-listpack-value` is at least `LISTPACK_VALUE_BYTES` (the managed server sets it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from carousel.rules.reasons import REASON_TEXTS

# Scores are stored with this many significant digits: they order nothing (rows are in rank order) and
# are shown to clients only as a relative strength.
SCORE_DIGITS = 4


# The largest hash value Redis should keep in a listpack (`hash-max-listpack-value`): above a list's size.
LISTPACK_VALUE_BYTES = 4096


def encode_items(items: Iterable[tuple[str, float, str, str]]) -> bytes:
    """The stored payload of one list from its (item_id, score, reason code, reason text) in rank order
    (the loader rounds the scores to `SCORE_DIGITS` first, for a whole run at once)."""
    reasons: dict[tuple[str, str], int] = {}
    ids, scores, refs = [], [], []
    for item_id, score, code, text in items:
        ids.append(item_id)
        scores.append(score)
        refs.append(reasons.setdefault((code, text), len(reasons)))
    return encode_columns([reason_entry(code, text) for code, text in reasons], ids, scores, refs)


def reason_entry(code: str, text: str) -> list[str]:
    """A reason as stored: its code, and its text only when that is not the code's standard text."""
    return [code] if REASON_TEXTS.get(code) == text else [code, text]


def encode_columns(table: list[list[str]], ids: list[str], scores: list[float], refs: list[int]) -> bytes:
    """The payload from its parts: reasons, then item ids, scores and reason indices (rank order)."""
    return orjson.dumps([table, ids, scores, refs])


def iter_items(payload: bytes) -> Iterator[dict[str, Any]]:
    """The items of a stored list in the served shape, lazily (callers usually need the first few)."""
    table, ids, scores, refs = orjson.loads(payload)
    reasons = [{"code": r[0], "text": r[1] if len(r) > 1 else REASON_TEXTS.get(r[0], "")} for r in table]
    for item_id, score, ref in zip(ids, scores, refs, strict=True):
        yield {"item_id": item_id, "score": score, "reason": reasons[ref]}


def decode_items(payload: bytes) -> list[dict[str, Any]]:
    """Every item of a stored list, in the served shape."""
    return list(iter_items(payload))


def encode_meta(meta: dict[str, Any]) -> bytes:
    return orjson.dumps(meta)


def decode_meta(payload: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = orjson.loads(payload)
    return meta

"""Erased shoppers are remembered only by a digest of their id, so the batch can leave them out of every
run (modelling, lists, audiences) without the id being kept anywhere."""

from __future__ import annotations

import hashlib

DIGEST_PREFIX = "carousel-erasure:"


def erasure_digest(user_id: str) -> str:
    """The SHA-256 of the prefixed id: what `DELETE /v1/users/{id}` records and the batch compares."""
    return hashlib.sha256((DIGEST_PREFIX + user_id).encode()).hexdigest()

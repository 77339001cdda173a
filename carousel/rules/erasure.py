"""Erased shoppers are remembered only by a digest of their id, so the batch can leave them out of every
run (modelling, lists, audiences) without the id being kept anywhere.

The digest is SHA-256 of a secret salt (`CAROUSEL_ERASURE_SALT`) and the id: with a salt known to all,
the digests of enumerable ids (e-mail addresses, sequential numbers) would reverse by trying them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


def erasure_digest(user_id: str, salt: str) -> str:
    """The SHA-256 of salt + id: what `DELETE /v1/users/{id}` records and the batch compares."""
    return hashlib.sha256((salt + user_id).encode()).hexdigest()


@dataclass(frozen=True)
class Erasures:
    """The recorded erasures (digests) and the salt they were made with."""

    digests: frozenset[str]
    salt: str

    def __bool__(self) -> bool:
        return bool(self.digests)

    def __contains__(self, user_id: object) -> bool:
        return erasure_digest(str(user_id), self.salt) in self.digests

    def erased(self, user_ids: Iterable[object]) -> set[str]:
        """The ids among `user_ids` that were erased."""
        return {str(u) for u in user_ids if str(u) in self} if self.digests else set()

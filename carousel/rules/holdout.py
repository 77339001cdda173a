"""Holdout assignment: a salted hash of the shopper (or the session for anonymous visitors).

The same function decides the variant on the storefront and for email audiences, so one shopper is in
the same group everywhere; changing the salt reshuffles everyone.
"""

from __future__ import annotations

import hashlib

TREATMENT = "treatment"
HOLDOUT = "holdout"


def assign_variant(subject: str, *, salt: str, holdout_percent: float) -> str:
    """`holdout` for a stable `holdout_percent` share of subjects, `treatment` for the rest."""
    digest = hashlib.blake2b(f"{salt}:{subject}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10_000  # basis points: 0.01% resolution
    return HOLDOUT if bucket < holdout_percent * 100 else TREATMENT

"""Shoppers' consent, and which source wins.

Two sources say whether a shopper agreed to personalization and to marketing: the lake's users table
(`consent_personalization`, `consent_marketing`, as the store last exported it) and the record the API
keeps from `PUT /v1/users/{id}/consent` (the store's consent platform, in real time). The API's record is
the newer word: where it exists it wins, in both directions; a shopper with neither counts as
consenting (the store sends opt-outs explicitly). The batch's modelling, its segment lists and the
marketing audiences all apply `opted_out`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["personalization", "marketing"]


@dataclass(frozen=True)
class Consent:
    """A recorded choice per purpose; None where the record does not say."""

    personalization: bool | None
    marketing: bool | None

    def allows(self, purpose: Purpose) -> bool | None:
        allowed: bool | None = getattr(self, purpose)
        return allowed


def opted_out(lake_opted_out: Iterable[str], recorded: Mapping[str, Consent], purpose: Purpose) -> set[str]:
    """The shoppers who do not consent to `purpose`: those the lake says opted out, unless the API
    recorded a yes since, and those whose record says no."""
    out = set(lake_opted_out)
    for user, consent in recorded.items():
        allowed = consent.allows(purpose)
        if allowed is True:
            out.discard(user)
        elif allowed is False:
            out.add(user)
    return out

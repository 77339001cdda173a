"""What the API recorded about shoppers, as the batch reads it (blocking client): consent records and
erasure digests. The batch applies them before it models, publishes or builds an audience."""

from __future__ import annotations

from typing import Any

from carousel.cache.client import SyncRedis
from carousel.cache.keys import CONSENT_PREFIX, ERASED_SESSIONS_KEY, ERASURES_KEY, tagged_user_id
from carousel.rules.consent import Consent
from carousel.rules.erasure import Erasures
from configs.settings import Settings


def parse_consent(raw: dict[Any, Any] | None) -> Consent:
    """A consent record (hash {personalization, marketing} of "0"/"1") as a `Consent`."""
    values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in (raw or {}).items()}

    def flag(name: str) -> bool | None:
        value = values.get(name)
        if value is None:
            return None
        return (value.decode() if isinstance(value, bytes) else str(value)) == "1"

    return Consent(flag("personalization"), flag("marketing"))


def consent_record(personalization: bool, marketing: bool) -> dict[str, str]:
    """The hash a consent record is stored as."""
    return {"personalization": "1" if personalization else "0", "marketing": "1" if marketing else "0"}


def recorded_consents(client: SyncRedis) -> dict[str, Consent]:
    """Every consent record the API holds, by shopper (a SCAN)."""
    out = {}
    for key in client.scan_iter(match=CONSENT_PREFIX + "*", count=5_000):
        out[tagged_user_id(key, CONSENT_PREFIX)] = parse_consent(client.hgetall(key))
    return out


def erased_digests(client: SyncRedis) -> set[str]:
    """The digests of every erased shopper (`carousel.rules.erasure.erasure_digest`)."""
    return {d.decode() if isinstance(d, bytes) else str(d) for d in client.smembers(ERASURES_KEY)}


def erased_sessions(client: SyncRedis, salt: str) -> Erasures:
    """The guest sessions erased shoppers had used (`serving.erasure`), as salted digests."""
    digests = {d.decode() if isinstance(d, bytes) else str(d) for d in client.smembers(ERASED_SESSIONS_KEY)}
    return Erasures(frozenset(digests), salt)


def erasures(client: SyncRedis, settings: Settings) -> Erasures:
    """Every erased shopper, as a set that answers `user_id in erasures`. The salt is asked for only when
    someone was erased: a store without erasures runs without one (`Settings.erasure_salt_value`)."""
    digests = frozenset(erased_digests(client))
    return Erasures(digests, settings.erasure_salt_value() if digests else "")

"""Every Redis key carousel uses, in one place. Written by the loader (`jobs/publishing/`), the batch
stages and the API (`serving/`); each of them names a key only through this module.

Lists and versions (`docs/redis.md` explains how versions resolve)::

    carousel:{versions}:live           -> the live version id (one atomic SET switches versions)
    carousel:{versions}:history        -> list of published version ids, newest first
    carousel:{versions}:pending        -> set of versions written but not (or no longer) published,
                                          whose leftovers the next publish sweeps away
    carousel:ver:<version>:meta        -> orjson manifest of the version (run id, kind, base, counts)
    carousel:ver:<version>:s:<segment> -> list payload of one segment ("global", "country:fr", ...)
    carousel:ver:<version>:catalog     -> hash item_id -> orjson attributes (title, category, brand, price,
                                          in_stock) as of the version: titles in reasons, departments for
                                          visitors' interest, prices of minimal events, `fields=`
    carousel:u:{u:<user_id>}           -> hash: field <version> -> the list payload of one shopper
    carousel:i:<item_id>               -> hash: field <version> -> the item's similar items (full versions)

What the API records about shoppers::

    carousel:consent:{u:<user_id>}     -> hash {personalization: "0"|"1", marketing: "0"|"1"}
    carousel:erasures                  -> set of erasure digests (`carousel.rules.erasure`)
    carousel:erasures:sessions         -> set of digests of the sessions erased shoppers used
    carousel:rt:{u:<user_id>}:<part>   -> real-time state of a signed-in shopper (cart, purchases, views,
                                          interest, sessions); `{s:<session_id>}` for a visitor
    carousel:events                    -> stream of accepted events, drained into the lake by group `lake`
    carousel:ev:<event_id>             -> "1" for a day once an event with that client-given id is taken
    carousel:events:rejected           -> stream of entries the lake refused, kept for inspection
    carousel:unavailable, carousel:prices -> stock and price overrides (`PUT /v1/items/{id}`)

Marketing audiences (a hash tag per campaign, so a new snapshot replaces the old one with two RENAMEs in
one transaction, on a Redis Cluster too)::

    carousel:aud:{<campaign>}:index    -> zset user_id -> triggered_at (epoch s): the paging order
    carousel:aud:{<campaign>}:rows     -> hash user_id -> orjson row
    carousel:aud:{carts}:pending       -> zset user_id -> time of their newest add-to-cart
    carousel:aud:{carts}:no-marketing  -> set of shoppers without marketing consent

Every key of one shopper carries the hash tag `{u:<user_id>}`, so the API reads their list, consent and
real-time state with one script in one round trip, on one node of a cluster as on a single Redis.
Identifiers match the API's ID_PATTERN, which allows no braces, so a tag never ends early.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "carousel"

# -- lists and versions ---------------------------------------------------------------------------
# The version bookkeeping shares the hash tag `{versions}`: a rollback changes all three in one
# transaction, which a Redis Cluster allows only within one slot.
LIVE_KEY = f"{PREFIX}:{{versions}}:live"
HISTORY_KEY = f"{PREFIX}:{{versions}}:history"
# Versions being written and not yet live: a loader killed mid-way leaves its version here, and the next
# publish sweeps it away.
PENDING_KEY = f"{PREFIX}:{{versions}}:pending"
USER_PREFIX = f"{PREFIX}:u:"
ITEM_PREFIX = f"{PREFIX}:i:"
# Keys whose fields are versions; swept and pruned together.
VERSIONED_HASH_PREFIXES = (USER_PREFIX, ITEM_PREFIX)


def version_prefix(version: str) -> str:
    return f"{PREFIX}:ver:{version}:"


def meta_key(version: str) -> str:
    return f"{version_prefix(version)}meta"


def segment_key(version: str, segment: str) -> str:
    return f"{version_prefix(version)}s:{segment}"


def catalog_key(version: str) -> str:
    """Hash item_id -> orjson attributes of the version's catalog (`carousel.cache.catalog`)."""
    return f"{version_prefix(version)}catalog"


def user_tag(user_id: str) -> str:
    """The hash tag every key of one shopper carries: their keys share a slot on a Redis Cluster."""
    return f"{{u:{user_id}}}"


def user_key(user_id: str) -> str:
    """The hash of a shopper's lists (field = version)."""
    return f"{USER_PREFIX}{user_tag(user_id)}"


def tagged_user_id(key: str | bytes, prefix: str) -> str:
    """The shopper of a key `<prefix>{u:<user_id>}` (the inverse of `user_key` and its siblings)."""
    text = key.decode() if isinstance(key, bytes) else key
    return text[len(prefix) + 3 : -1]


def item_key(item_id: str) -> str:
    """The hash of an item's similar-items lists (field = version; written by full versions only)."""
    return f"{ITEM_PREFIX}{item_id}"


# -- what the API records about shoppers -----------------------------------------------------------
CONSENT_PREFIX = f"{PREFIX}:consent:"
ERASURES_KEY = f"{PREFIX}:erasures"
# Salted digests of the guest sessions erased shoppers used, whose events the compaction takes out of the
# lake.
ERASED_SESSIONS_KEY = f"{PREFIX}:erasures:sessions"
UNAVAILABLE_KEY = f"{PREFIX}:unavailable"
PRICES_KEY = f"{PREFIX}:prices"
EVENTS_STREAM = f"{PREFIX}:events"
REJECTED_STREAM = f"{PREFIX}:events:rejected"
# Sign-ins: a session first seen with a shopper (session_id, user_id, ts), drained into the lake's session
# links so the batch attributes the session's earlier anonymous events to the shopper.
LINKS_STREAM = f"{PREFIX}:links"
# The consumer group through which the drain moves the stream into the lake.
DRAIN_GROUP = "lake"
REALTIME_PREFIX = f"{PREFIX}:rt"


EVENT_ID_PREFIX = f"{PREFIX}:ev:"


def event_id_key(event_id: str) -> str:
    """Set once per client-given `event_id` (with a TTL): a retried request's events are taken once."""
    return f"{EVENT_ID_PREFIX}{event_id}"


def consent_key(user_id: str) -> str:
    return f"{CONSENT_PREFIX}{user_tag(user_id)}"


@dataclass(frozen=True)
class SubjectKeys:
    """The real-time keys of one subject, a signed-in shopper or a visitor's session (one hash slot)."""

    cart: str
    purchases: str
    views: str
    interest: str
    sessions: str
    owner: str

    @property
    def all(self) -> tuple[str, ...]:
        return (self.cart, self.purchases, self.views, self.interest, self.sessions, self.owner)


def _state_keys(tag: str) -> SubjectKeys:
    base = f"{REALTIME_PREFIX}:{tag}"
    return SubjectKeys(
        cart=f"{base}:cart",
        purchases=f"{base}:purchases",
        views=f"{base}:views",
        interest=f"{base}:interest",
        sessions=f"{base}:sessions",
        owner=f"{base}:owner",
    )


def shopper_state_keys(user_id: str) -> SubjectKeys:
    return _state_keys(user_tag(user_id))


def session_state_keys(session_id: str) -> SubjectKeys:
    return _state_keys(f"{{s:{session_id}}}")


def state_keys(*, user_id: str | None, session_id: str | None) -> SubjectKeys | None:
    """The signed-in shopper's keys, else the session's; None when neither is known."""
    if user_id:
        return shopper_state_keys(user_id)
    if session_id:
        return session_state_keys(session_id)
    return None


# -- marketing audiences ---------------------------------------------------------------------------
PENDING_CARTS_KEY = f"{PREFIX}:aud:{{carts}}:pending"
NO_MARKETING_KEY = f"{PREFIX}:aud:{{carts}}:no-marketing"


def audience_index_key(campaign: str) -> str:
    return f"{PREFIX}:aud:{{{campaign}}}:index"


def audience_rows_key(campaign: str) -> str:
    return f"{PREFIX}:aud:{{{campaign}}}:rows"

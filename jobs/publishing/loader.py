"""Load a run's lists into Redis as a new version and switch the live pointer atomically.

Steps: write the version's lists (shoppers as fields of their hash, segments under the version's own
prefix; nothing the live version resolves to is touched), check that every one is there, write the
version's manifest, then move `carousel:{versions}:live` with one atomic compare-and-set (a script on that
single key: the pointer only moves forward), and finally drop versions beyond the retention. A failure at any
step before the switch leaves the live version serving; a half-written version is never pointed at.

Two kinds of version (see `carousel.cache.keys`): *full* (every shopper; its own base) and *delta* (only
the shoppers whose inputs changed, on top of the live version's base), so the 15-minute run writes a
few thousand fields instead of every shopper's key and stays atomic and reversible.

Run by the publish stage (`jobs.stages.publish`); retention and rollback: `jobs.publishing.retention`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from carousel.cache import keys
from carousel.cache.catalog import CATALOG_FIELDS, encode_entries
from carousel.cache.client import SyncRedis
from carousel.cache.memory import read_memory
from carousel.cache.payload import SCORE_DIGITS, encode_columns, encode_meta, reason_entry
from carousel.cache.scripts import SWITCH_FORWARD, WRITE_AND_PRUNE, PipelinedScript, slot_batches
from carousel.cache.shoppers import erased_digests
from carousel.cache.versions import BATCH, decode, read_meta
from carousel.rules.erasure import Erasures
from jobs.publishing import PublishError
from jobs.publishing.lists_file import Lists, SortedListsFile, blocks, drop_erased
from jobs.publishing.retention import (
    WRITE_BATCH,
    apply_retention,
    prune_users,
    retained_pairs,
    sweep_abandoned,
)

Kind = Literal["full", "delta"]


@dataclass(frozen=True)
class PublishResult:
    version: str
    live: str
    switched: bool
    user_lists: int
    segment_lists: int
    removed_versions: list[str]
    kind: str = "full"
    base: str = ""
    digest: str = ""
    # On a rerun of the live interval: whether the recomputed lists equal the published ones.
    identical: bool | None = None


# What a loader process should get when it shares a machine with the API: NumPy's huge pages off. With
# them on, the loader's multi-gigabyte arrays fault in 2 MB pages and every process on a small machine
# stalls meanwhile, the API and Redis included (docs/performance.md). NumPy reads the variable when it is
# imported, so it is set for the process that is started.
LOADER_ENV = {"NUMPY_MADVISE_HUGEPAGE": "0"}
# Items per HSET of the catalog: a few hundred KB per command.
CATALOG_FIELDS_PER_CALL = 2_000


def loader_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (this process's environment by default) with `LOADER_ENV` on top, and nothing else of this
    process's: a caller that points its job at another Redis or var/ keeps what it set."""
    return {**(os.environ if base is None else base), **LOADER_ENV}


def content_digest(
    user_lists: Lists, segment_lists: pd.DataFrame, item_lists: pd.DataFrame | None = None
) -> str:
    """SHA-256 over every (owner, payload) of a version in a fixed order: equal digests, equal content."""
    digest = _Digest()
    frames: list[tuple[str, Lists, str]] = [("u", user_lists, "user_id"), ("s", segment_lists, "segment")]
    if item_lists is not None:
        frames.append(("i", item_lists, "anchor_id"))
    for kind, frame, column in frames:
        for _ in digest.payloads(kind, frame, column):
            pass
    return digest.hexdigest()


class _Digest:
    """The content digest, fed by the lists as they are encoded (users, then segments, then items)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def payloads(self, kind: str, lists: Lists, key_column: str) -> Iterator[tuple[str, bytes]]:
        for block in blocks(lists):
            for owner, payload in list_payloads(block, key_column):
                self._sha.update(f"{kind}:{owner}\n".encode())
                self._sha.update(payload)
                self._sha.update(b"\n")
                yield owner, payload

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def list_payloads(lists: pd.DataFrame, key_column: str) -> Iterator[tuple[str, bytes]]:
    """(owner, payload) for every list in a frame sorted by (owner, rank), in the stored compact format
    (`keys.encode_items`, which this builds vectorized: a million lists take seconds, not minutes)."""
    if lists.empty:
        return
    lists = lists.sort_values([key_column, "rank"], kind="stable")
    owners = lists[key_column].to_numpy()
    items = lists["item_id"].astype(str).tolist()
    scores = significant(lists["score"].to_numpy(dtype="float64"), SCORE_DIGITS).tolist()
    bounds = np.flatnonzero(owners[1:] != owners[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(owners)]])
    row_owner = np.repeat(np.arange(len(starts), dtype=np.int64), ends - starts)
    # Each distinct (code, text) once per list, in order of first use; rows point at it. Integer keys
    # throughout: factorizing strings once, then pairs and (list, pair) as int64.
    code_ids, code_names = pd.factorize(lists["reason_code"].astype(str).to_numpy())
    text_ids, text_names = pd.factorize(lists["reason_text"].astype(str).to_numpy())
    pairs, pair_keys = pd.factorize(code_ids.astype(np.int64) * len(text_names) + text_ids)
    entries = [
        reason_entry(str(code_names[k // len(text_names)]), str(text_names[k % len(text_names)]))
        for k in pair_keys.tolist()
    ]
    used, first_uses = pd.factorize(row_owner * len(pair_keys) + pairs)  # uniques in order of first use
    first_owner = first_uses // len(pair_keys)
    # Rows are grouped by list, so a first use's position within its list is its rank after the list's
    # first first-use.
    first_local = np.arange(len(first_uses)) - np.searchsorted(first_owner, first_owner, side="left")
    refs = first_local[used].tolist()
    table_pairs = (first_uses % len(pair_keys)).tolist()
    table_bounds = np.searchsorted(first_owner, np.arange(len(starts) + 1)).tolist()
    for k, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        table = [entries[p] for p in table_pairs[table_bounds[k] : table_bounds[k + 1]]]
        yield (
            str(owners[start]),
            encode_columns(table, items[start:end], scores[start:end], refs[start:end]),
        )


def significant(values: np.ndarray, digits: int) -> np.ndarray:
    """`values` rounded to `digits` significant digits (0 stays 0), for the whole run at once."""
    magnitude = np.floor(np.log10(np.abs(values), where=values != 0, out=np.zeros_like(values)))
    factor = 10.0 ** (digits - 1 - magnitude)
    rounded: np.ndarray = np.round(values * factor) / factor
    return rounded


def publish_version(
    client: SyncRedis,
    *,
    version: str,
    user_lists: Lists,
    segment_lists: pd.DataFrame,
    manifest: dict[str, Any],
    keep_versions: int = 2,
    kind: Kind = "full",
    item_lists: pd.DataFrame | None = None,
    catalog: pd.DataFrame | None = None,
    erasure_salt: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PublishResult:
    """Write a version, verify it, switch the pointer forward, and apply retention.

    Parameters
    ----------
    client : redis.Redis or redis.cluster.RedisCluster
    version : str
        Sortable version id (the data interval end), e.g. ``20261129T004500Z``.
    user_lists, segment_lists : pandas.DataFrame
        The run's validated output (`user_id`/`segment`, `rank`, `item_id`, `score`, reason columns).
        For a delta, `user_lists` holds only the shoppers whose inputs changed. The shoppers' lists
        may also be a `SortedListsFile`, encoded and written block by block.
    manifest : dict
        Stored as the version's meta key and read by the API (`generated_at`, run id, counts).
    kind : "full" or "delta"
        A delta is published on top of the live version's base; it needs a live version.
    item_lists : pandas.DataFrame, optional
        Similar items per `anchor_id` (full versions; a delta's items resolve to its base's).
    erasure_salt : str, optional
        The salt of the recorded erasures (`carousel.rules.erasure`): needed once any shopper was erased,
        whose list is then left out.
    catalog : pandas.DataFrame, optional
        The items as of the run (`item_id` and `carousel.cache.catalog.CATALOG_FIELDS`), stored with the
        version for the API (`carousel.cache.catalog`).
    on_step : callable, optional
        Called with each step's name as it ends (`checked`, `shoppers written`, ..., `pruned`): for
        logs, and for the benchmark that lines up serving latency with what the loader was doing.
    """
    step = on_step or (lambda _: None)
    if kind == "delta" and item_lists is not None:
        raise PublishError("similar-item lists belong to full versions; a delta inherits its base's")
    # A run computed before a shopper was erased must not bring their list back.
    user_lists = _without_erased(user_lists, erased_digests(client), erasure_salt)
    live = decode(client.get(keys.LIVE_KEY))
    if live == version:
        # A rerun of the interval that is already live: nothing to switch and nothing to rewrite; say
        # whether the recomputed content is the published one.
        digest = content_digest(user_lists, segment_lists, item_lists)
        stored = (read_meta(client, version) or {}).get("digest")
        return PublishResult(version, version, False, 0, 0, [], kind, "", digest, stored == digest)
    base = _base_of(client, version, kind, live)
    # A version this loader (or a killed one) left half-written is cleared before writing anew.
    sweep_abandoned(client, keep=set())
    check_memory(client, estimate_bytes(user_lists, segment_lists, version))
    client.sadd(keys.PENDING_KEY, version)
    retained = retained_pairs(client, version, base, keep_versions)
    step("checked")
    writer = _VersionWriter(client, version, retained)
    user_keys = writer.hashed(writer.digest.payloads("u", user_lists, "user_id"), keys.user_key)
    step("shoppers written")
    segment_keys = writer.segments(segment_lists)
    if catalog is not None:
        segment_keys.append(writer.catalog(catalog))
    item_keys: list[str] = []
    if item_lists is not None:
        item_keys = writer.hashed(writer.digest.payloads("i", item_lists, "anchor_id"), keys.item_key)
    step("segments and items written")
    missing = _missing_fields(client, user_keys + item_keys, version) + _missing_keys(client, segment_keys)
    if missing:
        raise PublishError(
            f"version {version} is incomplete: {len(missing)} lists missing, e.g. {missing[0]}"
        )
    step("verified")
    digest = writer.digest.hexdigest()
    counts = {"user_lists": len(user_keys), "segment_lists": len(segment_keys), "item_lists": len(item_keys)}
    meta = {**manifest, "version": version, "kind": kind, "base": base, "digest": digest, **counts}
    _switch(client, version, meta)
    step("switched")
    removed = apply_retention(client, keep_versions=keep_versions)
    step("retention applied")
    if kind == "full":
        # Shoppers absent from a full version keep old fields no retained version resolves to: drop them.
        prune_users(client, retained_pairs(client, version, base, keep_versions))
        step("pruned")
    return PublishResult(
        version, version, True, len(user_keys), len(segment_keys), removed, kind, base, digest
    )


def _base_of(client: SyncRedis, version: str, kind: Kind, live: str | None) -> str:
    """The base the new version builds on: itself when full, the live version's base when a delta."""
    if live is not None and live > version:
        raise PublishError(f"version {version} is not newer than the live version {live}; nothing published")
    if kind == "full":
        return version
    live_meta = read_meta(client, live) if live else None
    if live_meta is None:
        raise PublishError(
            f"incremental version {version} needs a live version to build on and there is none: "
            "run a full refresh first"
        )
    return str(live_meta.get("base") or live)


class _VersionWriter:
    """Writes one version's lists in pipelined batches, taking the content digest as the lists are
    encoded (in `content_digest`'s order), so a million lists are encoded once."""

    def __init__(self, client: SyncRedis, version: str, retained: list[str]) -> None:
        self.client, self.version, self.retained = client, version, retained
        self.digest = _Digest()
        self.pipe = client.pipeline(transaction=False)
        self.script = PipelinedScript(client, WRITE_AND_PRUNE)

    def hashed(self, entries: Iterator[tuple[str, bytes]], key_of: Callable[[str], str]) -> list[str]:
        """Each (owner, payload) as the version's field of the owner's hash; the keys written."""
        written: list[str] = []
        pending = 0
        pairs = len(self.retained) // 2
        for batch in slot_batches(self.client, ((key_of(owner), payload) for owner, payload in entries)):
            batch_keys = [key for key, _ in batch]
            args = [self.version, self.version, pairs, *self.retained, *(p for _, p in batch)]
            self.script.queue(self.pipe, batch_keys, args)
            written.extend(batch_keys)
            pending += len(batch_keys)
            if pending >= WRITE_BATCH:
                _execute(self.pipe)
                pending = 0
        _execute(self.pipe)
        return written

    def segments(self, segment_lists: pd.DataFrame) -> list[str]:
        """The segment lists under the version's own prefix; the keys written."""
        written: list[str] = []
        for owner, payload in self.digest.payloads("s", segment_lists, "segment"):
            written.append(keys.segment_key(self.version, owner))
            self.pipe.set(written[-1], payload)
        _execute(self.pipe)
        return written

    def catalog(self, items: pd.DataFrame) -> str:
        """The version's catalog hash (`carousel.cache.catalog`), `CATALOG_FIELDS_PER_CALL` fields per
        HSET; the key written."""
        key = keys.catalog_key(self.version)
        columns = ["item_id", *(c for c in CATALOG_FIELDS if c in items.columns)]
        table = items[columns].astype(object)
        rows = cast(list[dict[str, Any]], table.where(table.notna(), cast(Any, None)).to_dict("records"))
        fields: dict[str, bytes] = {}
        for item_id, value in encode_entries(rows):
            fields[item_id] = value
            if len(fields) >= CATALOG_FIELDS_PER_CALL:
                self.pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                fields = {}
        if fields:
            self.pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        _execute(self.pipe)
        return key


def _switch(client: SyncRedis, version: str, meta: dict[str, Any]) -> None:
    """Write the version's meta, then move the live pointer forward to it (one atomic script)."""
    client.set(keys.meta_key(version), encode_meta(meta))
    now_live = decode(client.eval(SWITCH_FORWARD, 1, keys.LIVE_KEY, version))
    if now_live != version:
        raise PublishError(
            f"a newer version {now_live} went live during this publish; {version} not switched"
        )
    client.lpush(keys.HISTORY_KEY, version)
    client.srem(keys.PENDING_KEY, version)


def _without_erased(user_lists: Lists, digests: set[str], salt: str | None) -> Lists:
    """The lists without erased shoppers' (a file's blocks are filtered as they are read)."""
    if not digests:
        return user_lists
    if salt is None:
        raise PublishError(
            f"{len(digests)} shoppers were erased, and no erasure salt was given to leave them out: "
            "nothing published"
        )
    erased = Erasures(frozenset(digests), salt)
    if isinstance(user_lists, SortedListsFile):
        return replace(user_lists, erased=erased)
    return drop_erased(user_lists, erased)


# Redis's own cost of one small string key (dict entry, key and value objects, allocator rounding).
KEY_OVERHEAD_BYTES = 90


def estimate_bytes(user_lists: Lists, segment_lists: pd.DataFrame, version: str, sample: int = 2_000) -> int:
    """Memory the version will take in Redis, from the encoded size of a sample of its lists (a sorted
    file's: from its first block, scaled to its rows)."""

    def shopper_key(v: str, owner: str) -> str:
        # A shopper's list is a field of their hash, named by the version: key and field both count.
        return keys.user_key(owner) + v

    total = _sampled_bytes(segment_lists, "segment", keys.segment_key, version, sample)
    if not isinstance(user_lists, SortedListsFile):
        return total + _sampled_bytes(user_lists, "user_id", shopper_key, version, sample)
    first = next(user_lists.blocks(), None)
    if first is None or first.empty:
        return total
    block_bytes = _sampled_bytes(first, "user_id", shopper_key, version, sample)
    return total + int(block_bytes * user_lists.rows() / len(first))


def _sampled_bytes(
    frame: pd.DataFrame, column: str, key_of: Callable[[str, str], str], version: str, sample: int
) -> int:
    if frame.empty:
        return 0
    owners = frame[column].drop_duplicates()
    picked = owners.sample(min(sample, len(owners)), random_state=0) if len(owners) > sample else owners
    subset = frame[frame[column].isin(picked)]
    sizes = [len(payload) + len(key_of(version, owner)) for owner, payload in list_payloads(subset, column)]
    return int(np.mean(sizes) * len(owners)) + KEY_OVERHEAD_BYTES * len(owners)


def check_memory(client: SyncRedis, needed_bytes: int, headroom: float = 0.10) -> None:
    """Refuse to load when Redis's maxmemory leaves no room for the new version.

    Without this, a full Redis would evict (or refuse) keys half-way through, possibly live ones.
    With no maxmemory set there is no limit to check against.
    """
    nodes = read_memory(client)
    share = needed_bytes / max(1, len(nodes))  # keys spread evenly over a cluster's primaries
    for node in nodes:
        limit, used = node.limit, node.used
        if limit and used + share * (1 + headroom) > limit:
            where = "" if len(nodes) == 1 else f" node {node.node}"
            raise PublishError(
                f"Redis{where} has {max(0, limit - used) / 1e6:.1f} MB free under maxmemory "
                f"({limit / 1e6:.1f} MB) but the new version needs about {share * (1 + headroom) / 1e6:.1f} MB: "
                "nothing loaded (raise maxmemory or lower retention)"
            )


def _missing_keys(client: SyncRedis, keys: list[str]) -> list[str]:
    missing: list[str] = []
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(key)
        missing.extend(k for k, found in zip(chunk, pipe.execute(), strict=True) if not found)
    return missing


def _missing_fields(client: SyncRedis, keys: list[str], field: str) -> list[str]:
    missing: list[str] = []
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.hexists(key, field)
        missing.extend(k for k, found in zip(chunk, pipe.execute(), strict=True) if not found)
    return missing


def _execute(pipe: Any) -> None:
    # SET answers True and the write script the number of fields it pruned; None or False is a refusal.
    results = pipe.execute(raise_on_error=True)
    if any(r is None or r is False for r in results):
        raise PublishError("Redis refused part of the version's writes")

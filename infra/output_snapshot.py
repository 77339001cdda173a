"""Check that a change leaves carousel's output alone: the published Redis content byte for byte, and
every figure of an evaluation report. Used to show that a refactor changes no behaviour
(docs/operations.md, "Checking that a change keeps the output").

    python -m infra.output_snapshot dump REDIS_URL OUT.jsonl     # every carousel key and its value
    python -m infra.output_snapshot lists BEFORE.jsonl AFTER.jsonl
    python -m infra.output_snapshot evaluations BEFORE.json AFTER.json

`lists` compares the keys that make up published versions (shoppers' and items' hashes, the versions'
meta and segment lists, the version bookkeeping); `evaluations` compares every value of two
`carousel evaluate` reports but the timings and the input path. Both exit 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from carousel.cache.client import text
from carousel.cache.keys import ITEM_PREFIX, PREFIX, USER_PREFIX

# The keys of published versions: what "the published lists" are.
LIST_KEY_PREFIXES = (USER_PREFIX, ITEM_PREFIX, f"{PREFIX}:ver:", f"{PREFIX}:{{versions}}")


def dump(url: str, out: Path) -> int:
    """Every key under the carousel prefix with its type and value (bytes as hex), sorted by key."""
    client = redis.Redis.from_url(url)
    rows = []
    keys: Any = client.scan_iter(match=f"{PREFIX}:*", count=10_000)
    for key in sorted(keys):
        kind = text(client.type(key))
        rows.append(json.dumps({"key": key.decode(), "type": kind, "value": _value(client, key, kind)}))
    out.write_text("\n".join(rows) + "\n")
    print(f"{len(rows)} keys -> {out}")
    return len(rows)


def _value(client: redis.Redis, key: bytes, kind: str) -> Any:
    """A key's value, bytes as hex (replies are bytes: the client does not decode them)."""
    reply: Any
    if kind == "string":
        reply = client.get(key)
        return reply.hex()
    if kind == "hash":
        reply = client.hgetall(key)
        return {k.decode(): v.hex() for k, v in sorted(reply.items())}
    if kind == "list":
        reply = client.lrange(key, 0, -1)
        return [v.hex() for v in reply]
    if kind == "set":
        reply = client.smembers(key)
        return sorted(v.hex() for v in reply)
    if kind == "zset":
        reply = client.zrange(key, 0, -1, withscores=True)
        return [[m.decode(), s] for m, s in reply]
    return kind  # streams: their presence only


def differing_lists(before: Path, after: Path) -> list[str]:
    """The published-list keys that differ between two dumps (missing on one side, or another value)."""

    def lists(path: Path) -> dict[str, Any]:
        rows = (json.loads(line) for line in path.read_text().splitlines() if line)
        return {r["key"]: r for r in rows if r["key"].startswith(LIST_KEY_PREFIXES)}

    old, new = lists(before), lists(after)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def differing_figures(before: Path, after: Path) -> list[str]:
    """Every value of two evaluation reports that differs, but the timings and the input path."""
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    for report in (old, new):
        report.pop("timings_s", None)
        report.pop("input", None)
    return list(_differences(old, new, ""))


def _differences(old: Any, new: Any, path: str) -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            if key not in old or key not in new:
                yield f"{path}/{key}: only in one report"
            else:
                yield from _differences(old[key], new[key], f"{path}/{key}")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _differences(a, b, f"{path}[{i}]")
    elif old != new:
        yield f"{path}: {old!r} -> {new!r}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.output_snapshot", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dump", help="write every carousel key of a Redis as JSON lines")
    d.add_argument("url")
    d.add_argument("out", type=Path)
    for name in ("lists", "evaluations"):
        c = sub.add_parser(name, help=f"compare two {'dumps' if name == 'lists' else 'evaluation reports'}")
        c.add_argument("before", type=Path)
        c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.what == "dump":
        dump(args.url, args.out)
        return 0
    found = (differing_lists if args.what == "lists" else differing_figures)(args.before, args.after)
    print(
        f"{args.before} vs {args.after}: {len(found)} differing {'keys' if args.what == 'lists' else 'values'}"
    )
    for line in found[:40]:
        print(f"  {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""How full Redis is and whether its eviction policy may drop what carousel cannot lose, from `INFO
memory` (allowed by managed services that disable CONFIG), node by node on a Redis Cluster.

What must never be evicted has no TTL: the live version's lists, shoppers' consent, the erasure records
and the event stream not yet drained. An ``allkeys-*`` policy evicts those as readily as anything else,
silently. ``noeviction`` (the managed Redis's) refuses writes instead when Redis is full, and the
``volatile-*`` policies evict only keys with a TTL (the real-time state, event ids, rate-limit counters),
which the API can do without.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from carousel.cache.client import AsyncRedis, SyncRedis

# From this share of maxmemory on, a node is reported as nearly full: the loader reserves a new
# version's whole size before writing it, so a node this full usually refuses the next version.
NEARLY_FULL = 0.9


@dataclass(frozen=True)
class NodeMemory:
    """One Redis node's memory: bytes used, its maxmemory (0: no limit) and its eviction policy."""

    node: str
    used: int
    limit: int
    policy: str

    @property
    def share(self) -> float | None:
        """Used bytes over maxmemory; None without a limit."""
        return self.used / self.limit if self.limit else None


def every_primary(client: SyncRedis | AsyncRedis) -> dict[str, Any]:
    """`info`'s arguments that make a cluster client ask every primary: by default it asks one node."""
    return (
        {"target_nodes": RedisCluster.PRIMARIES}
        if isinstance(client, RedisCluster | AsyncRedisCluster)
        else {}
    )


def node_address(client: SyncRedis | AsyncRedis) -> str:
    """A single node's name as a cluster's replies name theirs (``host:port``), or its socket's path:
    an operator with several stores' Redis servers sees which one a figure or a warning is about."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs['host']}:{kwargs.get('port', 6379)}" if kwargs.get("host") else "redis"


def memory_nodes(info: Mapping[str, Any], single: str = "redis") -> list[NodeMemory]:
    """The nodes of an `INFO memory` reply (`every_primary`): one node's fields, named `single`, or a
    cluster client's replies keyed by node."""
    replies = {single: info} if "used_memory" in info else dict(info)
    return [
        NodeMemory(
            node=str(name),
            used=int(reply.get("used_memory", 0)),
            limit=int(reply.get("maxmemory", 0)),
            policy=str(reply.get("maxmemory_policy", "unknown")),
        )
        for name, reply in replies.items()
    ]


def read_memory(client: SyncRedis) -> list[NodeMemory]:
    """Every primary's memory, from a blocking client (the batch)."""
    return memory_nodes(client.info("memory", **every_primary(client)), node_address(client))


async def read_memory_async(client: AsyncRedis) -> list[NodeMemory]:
    """Every primary's memory, from the API's client."""
    return memory_nodes(await client.info("memory", **every_primary(client)), node_address(client))


def memory_warnings(nodes: list[NodeMemory]) -> list[str]:
    """What an operator must act on: a policy that may evict keys without a TTL, a node nearly full."""
    warnings = []
    for node in nodes:
        if node.policy.startswith("allkeys-"):
            warnings.append(
                f"{node.node}: maxmemory-policy {node.policy} may evict any key when Redis is full, "
                "the live lists, consent, erasures and undrained events included; "
                "set noeviction or a volatile-* policy"
            )
        share = node.share
        if share is not None and share >= NEARLY_FULL:
            warnings.append(
                f"{node.node}: {node.used / 1e6:.1f} MB used of {node.limit / 1e6:.1f} MB maxmemory "
                f"({share:.0%}): the next version may be refused, and events too once it is full; "
                "raise maxmemory or lower retention"
            )
    return warnings

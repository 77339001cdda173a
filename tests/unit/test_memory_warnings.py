"""The reading of `INFO memory` and what an operator is warned about (`carousel.cache.memory`)."""

from __future__ import annotations

import redis
import redis.asyncio

from carousel.cache.memory import NodeMemory, memory_nodes, memory_warnings, node_address

MB = 1_000_000


def _info(used: int, limit: int, policy: str) -> dict[str, object]:
    return {"used_memory": used, "maxmemory": limit, "maxmemory_policy": policy, "used_memory_human": "x"}


def test_one_node_and_a_clusters_nodes_are_read_alike() -> None:
    single = memory_nodes(_info(5 * MB, 0, "noeviction"), "10.0.0.9:6379")
    assert single == [NodeMemory("10.0.0.9:6379", 5 * MB, 0, "noeviction")]
    cluster = {
        "10.0.0.1:7000": _info(MB, 10 * MB, "volatile-lru"),
        "10.0.0.2:7000": _info(2 * MB, 0, "noeviction"),
    }
    nodes = memory_nodes(cluster)
    assert [(n.node, n.used, n.limit, n.policy) for n in nodes] == [
        ("10.0.0.1:7000", MB, 10 * MB, "volatile-lru"),
        ("10.0.0.2:7000", 2 * MB, 0, "noeviction"),
    ]
    assert nodes[0].share == 0.1 and nodes[1].share is None


def test_a_policy_that_evicts_keys_without_ttl_and_a_nearly_full_node_are_warned_about() -> None:
    calm = [
        NodeMemory("a", 89 * MB, 100 * MB, "noeviction"),
        NodeMemory("b", 500 * MB, 0, "volatile-lru"),
        NodeMemory("c", MB, 0, "volatile-ttl"),
    ]
    assert memory_warnings(calm) == []
    evicting = memory_warnings(
        [NodeMemory("a", MB, 0, "allkeys-lru"), NodeMemory("b", MB, 0, "allkeys-random")]
    )
    assert len(evicting) == 2 and "allkeys-lru" in evicting[0] and evicting[1].startswith("b: ")
    assert "consent" in evicting[0] and "noeviction" in evicting[0]
    full = memory_warnings([NodeMemory("a", 90 * MB, 100 * MB, "noeviction")])
    assert len(full) == 1 and "90.0 MB used of 100.0 MB" in full[0] and "(90%)" in full[0]
    both = memory_warnings([NodeMemory("a", 99 * MB, 100 * MB, "allkeys-lfu")])
    assert len(both) == 2


def test_a_single_node_is_named_by_its_address_or_socket() -> None:
    assert node_address(redis.Redis(host="10.0.0.9", port=6380)) == "10.0.0.9:6380"
    assert node_address(redis.Redis(unix_socket_path="/run/redis.sock")) == "/run/redis.sock"
    assert (
        node_address(redis.asyncio.Redis.from_url("redis://cache.internal:6399/2")) == "cache.internal:6399"
    )

"""Make sure a Redis server is reachable: the configured one, or a project-managed `redis-server`.

`ensure_redis` uses `CAROUSEL_REDIS_URL` when it is set and answers; otherwise it starts (and, on a
machine without one, installs) a `redis-server` on 127.0.0.1:6399 whose files live under `var/redis`.
Called by `carousel infra up`, which `make demo` and `make test` run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from carousel.cache.payload import LISTPACK_VALUE_BYTES

MANAGED_HOST = "127.0.0.1"
MANAGED_PORT = 6399
MANAGED_URL = f"redis://{MANAGED_HOST}:{MANAGED_PORT}/0"


class RedisUnavailable(RuntimeError):
    """No Redis could be reached or started; the message says what to do."""


def is_reachable(url: str, timeout_s: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.path.exists(p)), None
    )


def install_redis_server() -> str:
    """Install Debian's redis-server when running as root on an apt machine; explain otherwise."""
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and (binary := redis_server_binary()):
            # Debian's package starts its own service on 6379; the project uses its managed one only.
            subprocess.run(["service", "redis-server", "stop"], check=False, capture_output=True)
            return binary
        raise RedisUnavailable(f"installing redis-server with apt-get failed: {done.stderr.strip()[-500:]}")
    raise RedisUnavailable(
        "no redis-server found: install Redis 7+ (e.g. `sudo apt-get install redis-server` or "
        "`brew install redis`), or point CAROUSEL_REDIS_URL at a running server"
    )


def start_managed(var_dir: Path) -> str:
    """Start the project-managed server on 127.0.0.1:6399 (idempotent) and return its URL."""
    if is_reachable(MANAGED_URL):
        return MANAGED_URL
    return start_server((var_dir / "redis").resolve(), MANAGED_PORT)


def start_server(data_dir: Path, port: int, *extra: str) -> str:
    """Start a `redis-server` on 127.0.0.1:`port` with its files in `data_dir`; returns its URL once it
    answers. Used for the managed server and for each test session's private one (`extra`: more
    server options, e.g. to make it a cluster node)."""
    binary = redis_server_binary() or install_redis_server()
    url = f"redis://{MANAGED_HOST}:{port}/0"
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            "--bind",
            MANAGED_HOST,
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--daemonize",
            "yes",
            "--pidfile",
            str(data_dir / "redis.pid"),
            "--logfile",
            str(data_dir / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            # A shopper's hash holds a list or two of about 1 KB: kept as one listpack (not a hash table
            # per shopper) they take a tenth less memory.
            "--hash-max-listpack-value",
            str(LISTPACK_VALUE_BYTES),
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if is_reachable(url, timeout_s=0.5):
            return url
        time.sleep(0.1)
    raise RedisUnavailable(f"redis-server did not answer on {url}; see {data_dir / 'redis.log'}")


def start_cluster(data_dir: Path, nodes: int = 3) -> list[str]:
    """A Redis Cluster of `nodes` primaries on free ports (no replicas), its slots spread evenly; returns
    the nodes' URLs once the cluster answers `cluster_state:ok`. For the tests that prove the key layout
    and the loader work on a cluster unchanged."""
    urls = []
    for k in range(nodes):
        node_dir = data_dir / f"node{k}"
        urls.append(
            start_server(
                node_dir,
                _cluster_port(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
            )
        )
    addresses = [url.removeprefix("redis://").split("/")[0] for url in urls]
    cli = shutil.which("redis-cli") or str(
        Path(redis_server_binary() or "redis-server").with_name("redis-cli")
    )
    subprocess.run(
        [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        infos = [redis.Redis.from_url(url).execute_command("CLUSTER INFO") for url in urls]
        if all(info.get("cluster_state") == "ok" for info in infos):
            return urls
        time.sleep(0.2)
    raise RedisUnavailable(f"the cluster on {addresses} did not reach cluster_state:ok")


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher, so at most 55,535) is free too."""
    for _ in range(200):
        port = free_port()
        if port <= 55_535 and _is_free(port + 10_000):
            return port
    raise RedisUnavailable("no free port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((MANAGED_HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((MANAGED_HOST, 0))
        return int(probe.getsockname()[1])


def stop_server(url: str) -> bool:
    """Shut a server down; False when it was not running."""
    if not is_reachable(url):
        return False
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    return True


def ensure_redis(var_dir: Path) -> str:
    """The URL of a reachable Redis: `CAROUSEL_REDIS_URL` if it answers, else the managed server."""
    configured = os.environ.get("CAROUSEL_REDIS_URL")
    if configured and is_reachable(configured):
        return configured
    return start_managed(var_dir)


def stop_managed(var_dir: Path) -> bool:
    """Shut the managed server down; False when it was not running."""
    return stop_server(MANAGED_URL)

"""`carousel serve --workers 2`: each worker listens on its own socket (SO_REUSEPORT), so a pool of
long-lived connections is spread over the workers instead of landing on whichever woke first; a worker
that dies is replaced; SIGTERM stops them all; a port another server holds is refused; workers do not
outlive a supervisor killed outright."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from configs.settings import Settings
from infra.redis_server import free_port

pytestmark = pytest.mark.integration

TOKEN = "workers-test-token-0123456789"


def _env(store_env: dict[str, str]) -> dict[str, str]:
    tokens = ("CAROUSEL_ADMIN_TOKEN", "CAROUSEL_MARKETING_TOKEN", "CAROUSEL_STOREFRONT_TOKEN")
    return {**os.environ, **store_env, **dict.fromkeys(tokens, TOKEN)}


def _serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "carousel.cli", "serve", "--port", str(port), "--workers", "2"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_live(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the API did not come up")


def _workers(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The server's live workers (not multiprocessing's resource tracker, not a worker dead and not yet
    reaped)."""
    workers = []
    for child in psutil.Process(process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:
            continue
    return workers


def _listens(worker: psutil.Process, port: int) -> bool:
    try:
        return any(c.laddr.port == port and c.status == "LISTEN" for c in worker.net_connections(kind="tcp"))
    except psutil.Error:
        return False


def _wait_listening(process: subprocess.Popen[bytes], port: int, timeout_s: float = 60) -> None:
    """Until each of the two workers listens on the port (a worker still importing the app does not)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listening = [_listens(worker, port) for worker in _workers(process)]
        if len(listening) == 2 and all(listening):
            return
        time.sleep(0.2)
    raise AssertionError("the workers did not all listen")


def _connections_per_worker(process: subprocess.Popen[bytes], port: int) -> list[int]:
    return [
        sum(
            1
            for c in worker.net_connections(kind="tcp")
            if c.laddr.port == port and c.status == "ESTABLISHED"
        )
        for worker in _workers(process)
    ]


def test_workers_share_a_pool_of_connections_restart_and_stop(
    settings: Settings, store_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(store_env)
    server = _serve(port, env, tmp_path / "api.log")
    try:
        _wait_live(url, server)
        _wait_listening(server, port)

        # A pool of 32 keep-alive connections, opened at once as a load balancer's would be.
        pool = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        for conn in pool:
            conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        for conn in pool:
            assert conn.recv(64).startswith(b"HTTP/1.1 200")
        per_worker = _connections_per_worker(server, port)
        assert sum(per_worker) == 32 and min(per_worker) > 0, per_worker  # all on one: 2 in 2**32
        for conn in pool:
            conn.close()

        # A second server on the same port is refused, as with one shared socket.
        second = subprocess.run(
            [sys.executable, "-m", "carousel.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "Address already in use" in second.stderr + second.stdout

        # A worker killed outright is replaced, and the API keeps answering.
        victim = _workers(server)[0]
        victim.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = [w for w in _workers(server) if w.pid != victim.pid and w.is_running()]
            if len(alive) == 2:
                break
            time.sleep(0.2)
        assert len(alive) == 2, "the killed worker was not replaced"
        _wait_listening(server, port)
        _wait_live(url, server)

        workers = _workers(server)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_workers_that_cannot_load_the_app_stop_the_server_instead_of_restarting_forever() -> None:
    command = [sys.executable, "-m", "serving.workers", "no_such_module:app", "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "no_such_module" in done.stderr


def test_workers_stop_when_their_supervisor_is_killed_and_the_port_can_be_served_again(
    settings: Settings, store_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL (or the OOM killer) gives the supervisor no chance to stop its workers: the kernel sends
    them SIGTERM, so they neither keep serving nor keep the port from the server started next."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(store_env)
    first = _serve(port, env, tmp_path / "first.log")
    second = None
    try:
        _wait_live(url, first)
        _wait_listening(first, port)
        workers = _workers(first)
        first.kill()
        first.wait()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, [w.pid for w in alive]
        second = _serve(port, env, tmp_path / "second.log")
        _wait_live(url, second)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_every_worker_counts_a_browser_against_one_limit_by_the_address_its_proxy_forwards(
    settings: Settings, store_env: dict[str, str], tmp_path: Path
) -> None:
    """`carousel serve --workers 2` with `events_browser_requests_per_minute` 4: eight browser requests
    from one forwarded address, each on a new connection (the kernel spreads them over the workers), get
    four 202s and four 429s, and another address is still taken; with `auth_failures_per_minute` 4, eight
    wrong admin tokens from one address get four 401s and four 429s alike. With `forwarded_allow_ips`
    naming another proxy, X-Forwarded-For is not believed: every client is the proxy, and shares its limit."""
    event = {"session_id": "s1", "item_id": "i1", "event_type": "view", "price": 1.0}
    guess = {"Authorization": "Bearer guess-guess-guess-guess"}

    def statuses(url: str, address: str, times: int, *, guessing: bool = False) -> list[int]:
        answers = []
        for _ in range(times):
            # A client of its own per request: a new connection, which either worker may get.
            with httpx.Client(base_url=url, timeout=10) as client:
                forwarded = {"X-Forwarded-For": address}
                if guessing:
                    answer = client.get("/ops", headers={**forwarded, **guess})
                else:
                    answer = client.post("/v1/events", json={"events": [event]}, headers=forwarded)
                answers.append(answer.status_code)
        return sorted(answers)

    for proxies, neighbour_status in (("127.0.0.1", 202), ("10.0.0.0/8", 429)):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **_env(store_env),
            "CAROUSEL_EVENTS_BROWSER_REQUESTS_PER_MINUTE": "4",
            "CAROUSEL_AUTH_FAILURES_PER_MINUTE": "4",
            "CAROUSEL_FORWARDED_ALLOW_IPS": proxies,
        }
        server = _serve(port, env, tmp_path / f"api-{port}.log")
        try:
            _wait_live(url, server)
            _wait_listening(server, port)
            assert statuses(url, f"198.51.100.{port % 200}", 8) == [202] * 4 + [429] * 4
            assert statuses(url, f"203.0.113.{port % 200}", 1) == [neighbour_status]
            if neighbour_status == 202:
                assert statuses(url, f"192.0.2.{port % 200}", 8, guessing=True) == [401] * 4 + [429] * 4
        finally:
            server.terminate()
            server.wait(timeout=60)

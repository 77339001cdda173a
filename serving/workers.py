"""`carousel serve --workers N` (N > 1): N uvicorn workers, each listening on its own socket bound to the
same port with SO_REUSEPORT, so that the kernel spreads new connections over the workers.

uvicorn's own supervisor shares one listening socket between its workers, and the worker that wakes
first may accept every pending connection. A few long-lived connections (a load balancer's or a
storefront's pool) can then all land on one worker, and the API serves at one core's rate: in
`carousel bench serve`, 16 connections all went to one of two workers in about a third of the rounds
(docs/performance.md). With a socket per worker the kernel hashes each new connection to one of them.

The supervisor restarts a worker that dies (waiting longer each time one dies soon after its start),
stops when one fails to start (a bad app or a taken port would fail the same way again), and on SIGINT
or SIGTERM stops the workers and waits for them. A worker whose supervisor dies without stopping it
(SIGKILL, the OOM killer) gets SIGTERM from the kernel and stops too: orphans would keep the port, and
the restarted server would be refused it.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

logger = logging.getLogger("carousel.serve")

# How long stopped workers get to finish their requests before they are killed.
_STOP_TIMEOUT_S = 30.0
# A worker that dies sooner than this after its start is crashing, not ending a long life: each such
# death in a row doubles the wait before the next start (from _FIRST_WAIT_S up to _MAX_WAIT_S), so a
# worker that crashes on every request does not spawn processes in a loop.
_STABLE_S = 10.0
_FIRST_WAIT_S = 0.5
_MAX_WAIT_S = 30.0


def restart_wait(quick_deaths: int) -> float:
    """Seconds before a dead worker's slot gets a new one, after `quick_deaths` deaths in a row each
    sooner than `_STABLE_S` after their start (0: it had lived long, restart at once)."""
    if quick_deaths <= 0:
        return 0.0
    return float(min(_MAX_WAIT_S, _FIRST_WAIT_S * 2 ** (quick_deaths - 1)))


def serve_workers(app: str, *, host: str, port: int, workers: int, **config: Any) -> int:
    """Run `workers` uvicorn servers of `app` on `host`:`port` until SIGINT or SIGTERM; the exit code
    (1 when a worker could not start). `config` goes to each worker's `uvicorn.Config`."""
    if port == 0:
        raise ValueError("several workers need a fixed port (each binds it with SO_REUSEPORT)")
    # SO_REUSEPORT would let this server share a port another server of the same user listens on (an
    # old deployment still running): a plain bind first fails then, as uvicorn's own would.
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    # Held while the workers run, so a plain bind of another server keeps failing; it never listens, so
    # the kernel hands it no connection.
    reserved = _reuseport_socket(host, port)
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()
    failed = False

    def start() -> BaseProcess:
        process = spawn.Process(target=_worker, args=(app, host, port, config, os.getpid()), daemon=False)
        process.start()
        return process

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: list[BaseProcess | None] = [start() for _ in range(workers)]
    started = [time.monotonic()] * workers
    quick_deaths = [0] * workers
    due: list[float] = [0.0] * workers  # when an empty slot (None) gets its next worker
    try:
        while not stop.wait(0.5):
            for k, process in enumerate(processes):
                if process is None:
                    if time.monotonic() >= due[k]:
                        processes[k], started[k] = start(), time.monotonic()
                    continue
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("worker %s failed to start; stopping", process.pid)
                    failed = True
                    stop.set()
                    break
                lived = time.monotonic() - started[k]
                quick_deaths[k] = quick_deaths[k] + 1 if lived < _STABLE_S else 0
                wait = restart_wait(quick_deaths[k])
                logger.warning(
                    "worker %s exited with %s after %.0fs; starting another in %.1fs",
                    process.pid,
                    process.exitcode,
                    lived,
                    wait,
                )
                if wait:
                    processes[k], due[k] = None, time.monotonic() + wait
                else:
                    processes[k], started[k] = start(), time.monotonic()
    finally:
        running = [process for process in processes if process is not None]
        for process in running:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in running:
            process.join(_STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


# prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> None:
    """SIGTERM to this process when the supervisor dies (Linux, as SO_REUSEPORT's spreading is); if it
    died before the request took effect, stop now."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
    if os.getppid() != parent:
        raise SystemExit(0)


def _worker(app: str, host: str, port: int, config: dict[str, Any], parent: int) -> None:
    _stop_with_parent(parent)
    try:
        sock = _reuseport_socket(host, port)
    except OSError as exc:
        logger.error("cannot bind %s:%s: %s", host, port, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
    try:
        server.run(sockets=[sock])
    except BaseException:
        if server.started:
            raise
        started = False
    else:
        started = server.started
    if not started:
        # The app could not be loaded or its startup failed: a restart would fail the same way.
        raise SystemExit(STARTUP_FAILURE)


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.workers APP --port P --workers N`: any ASGI app served as `carousel serve`
    serves the API (the serving benchmark runs its baseline this way, so both have the same server)."""
    parser = argparse.ArgumentParser(prog="python -m serving.workers")
    parser.add_argument("app", help="module:attribute of the ASGI app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be at least 2 (one worker needs no supervisor)")
    return serve_workers(
        args.app, host=args.host, port=args.port, workers=args.workers, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    raise SystemExit(main())

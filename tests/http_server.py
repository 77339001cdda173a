"""A real HTTP server for the app in tests that need one (a browser, schemathesis)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from infra.redis_server import free_port
from serving.http_protocol import JsonErrorsHttpToolsProtocol


@contextlib.contextmanager
def served(app: object) -> Iterator[str]:
    """`with served(app) as base_url:` the ASGI app run by uvicorn (lifespan and all) on a free port in a
    thread, for clients that need a real HTTP server (a browser, schemathesis)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            http=JsonErrorsHttpToolsProtocol,  # as `carousel serve` runs it
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

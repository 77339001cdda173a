"""The unit tier: fast tests with no JVM, Redis or network. Sockets are blocked for every test here
(pytest-socket), so a test that starts Spark or talks to a server fails instead of slipping in."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_sockets(socket_disabled: None) -> None:
    """Every unit test runs with sockets disabled."""

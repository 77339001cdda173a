"""What the browsers' event rate counts by (`serving.ratelimit.client_key`)."""

from __future__ import annotations

import pytest

from serving.ratelimit import client_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        # An IPv6 host picks addresses from its /64: they count as one client.
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        # An IPv4 client on a dual-stack socket is the IPv4 address, not the ::ffff:0:0/96 network.
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("testclient", "testclient"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_hosts_by_their_64(address: str | None, key: str) -> None:
    assert client_key(address) == key

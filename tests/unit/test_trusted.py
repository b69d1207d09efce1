"""Trusted networks, one rule for `real-ip-from` and `allowed-clients`."""

from __future__ import annotations

import ipaddress

import pytest

from pyd.web.trusted import contains

NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("::1/128"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize("addr, inside", [
    ("127.0.0.1", True), ("127.9.9.9", True), ("10.1.2.3", True), ("10.2.0.1", False),
    ("::1", True), ("fd00::5", True), ("fe80::1", False),
    ("::ffff:127.0.0.1", True),  # IPv4 on a dual-stack listener
    ("::ffff:10.1.0.9", True), ("::ffff:192.0.2.1", False),
    ("fd00::1%eth0", True),  # a zone index is not part of the address
    ("", False), ("/run/pyd/app.sock", False), ("not an address", False), ("999.1.1.1", False),
])
def test_an_address_is_inside_or_not(addr, inside):
    assert contains(NETS, addr) is inside


def test_no_networks_trust_nobody():
    assert contains((), "127.0.0.1") is False

"""Trusted networks: is a peer address inside a list of networks (`real-ip-from`,
`allowed-clients`)? One rule for both, so they cannot drift.

An IPv4 client reaching a dual-stack (`[::]`) listener shows as `::ffff:a.b.c.d`; it is matched
as the IPv4 address it is, so `127.0.0.1/8` covers it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)
def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(addr.partition("%")[0])  # fe80::1%eth0: the zone is not part
    except ValueError:
        return None  # a unix socket's peer (""), or anything that is not an address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def contains(networks: Iterable[Network], addr: str) -> bool:
    """Whether `addr` (a peer's address as the socket gives it) is in one of `networks`."""
    ip = _ip(addr)
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)

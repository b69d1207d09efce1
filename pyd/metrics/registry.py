"""What is counted, decided from the config before the fork: the same Layout in the master and
in every worker forked with that config."""

from __future__ import annotations

from pyd.config import Config
from pyd.ipc.counters import CELL, HEAD_CELLS, POOL_CELLS, ROUTE_CELLS, Layout

METRICS_KIND = "master"  # a Pool section the master serves itself (Pool:Metrics)
MIN_CAPACITY = 64 * 1024
SPARE_ROUTES = 64  # room kept for routes an update adds


def served_by_master(section) -> bool:
    spec = section.spec
    return getattr(spec, "served_by", "worker") == METRICS_KIND


def pool_label(section) -> str:
    """A pool's name as its RequestRecords carry it (pyd.pools.base.label; a test holds
    them equal): HTTPServer, HTTPServer:admin, echo."""
    if section.cls:
        return section.cls + (f":{section.name}" if section.name else "")
    return section.name or section.kind


def counted_pools(config: Config) -> dict[str, list[str]]:
    """{pool label: [locations]} of the pools workers serve: "/" for a pool's own app, then
    each location's prefix."""
    pools: dict[str, list[str]] = {}
    for section in config.pools:
        if served_by_master(section):
            continue
        locations = []
        if "app" in section.settings and section.settings["app"] is not None:
            locations.append("/")
        locations += [loc.arg for loc in section.blocks("location")]
        pools[pool_label(section)] = locations
    return pools


def capacity_for(config: Config) -> int:
    """The counters block's size for the scoreboard made at boot: this config's layout and
    room for SPARE_ROUTES more (pages never written cost nothing)."""
    pools = counted_pools(config)
    routes = len(pools) + sum(len(v) for v in pools.values()) + SPARE_ROUTES
    need = (HEAD_CELLS + POOL_CELLS * (len(pools) + 8) + ROUTE_CELLS * routes) * CELL
    return max(MIN_CAPACITY, need)


def layout_for(config: Config, capacity: int) -> Layout:
    return Layout.of(counted_pools(config), capacity)

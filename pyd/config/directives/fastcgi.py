"""Directives: `Pool:FastCGI`."""

from __future__ import annotations

import ipaddress

from pyd.config.directives.scopes import (
    FASTCGI,
    LOCATION,
    METRICS,
    POOLS,
)
from pyd.config.registry import MAIN, REGISTRY
from pyd.config.values import (
    FileMode,
    ListOf,
    Network,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

# -- Pool:FastCGI ---------------------------------------------------------------------------------

directive("allowed-clients", Network(), (ipaddress.ip_network("127.0.0.0/8"),
                                         ipaddress.ip_network("::1/128")),
          scopes=(FASTCGI, METRICS), multiple=True, example="10.0.0.0/8",
          help="Only these peers may connect over TCP; others are closed (FastCGI logs them) "
               "(unix sockets are guarded by socket-mode and socket-owner).")
directive("socket-mode", FileMode(), None, scopes=POOLS + (METRICS,), reload=False, example="0660",
          help="The permissions of the pool's unix socket listeners.")
directive("socket-owner", ListOf(String()), None, scopes=POOLS + (METRICS,), reload=False,
          example="www-data www-data",
          help="The owner (user, optionally group) of the pool's unix socket listeners, so "
               "that nginx can connect.")


@REGISTRY.check(MAIN)
def _worker_counts(get, at):
    lo, hi, n = get("min-workers"), get("max-workers"), get("workers")
    if lo is not None and hi is not None and lo > hi:
        yield at("min-workers"), f"min-workers {lo} is more than max-workers {hi}"
    if lo is not None and hi is None and n < lo:
        yield at("min-workers"), f"min-workers {lo} is more than workers {n}"
    if hi is not None and lo is None and n > hi:
        yield at("max-workers"), f"max-workers {hi} is less than workers {n}"


@REGISTRY.check(LOCATION)
def _location_target(get, at):
    if get("root") is not None and get("alias") is not None:
        yield at("alias"), "a location takes root or alias, not both"
    if get("root") is None and get("alias") is None and get("app") is None:
        yield at(None), "a location needs app, root or alias"

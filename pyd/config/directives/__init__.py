"""Every directive, block and section kind of pyd, declared once, split by owner.

This table drives the parser's validation, defaults, `pyd configtest`, `--name=value` overrides,
`PYD_NAME` environment overrides and docs/config.md (`python -m pyd.config.docs` regenerates it).
The order of declaration is the order of the reference and of `configtest`'s table: the
modules are imported below in that order (a loop, so that sorting imports cannot change it).
"""

import importlib

from pyd.config.directives.scopes import (  # noqa: F401  (the scopes, by name)
    APP,
    FASTCGI,
    HTTP,
    LOCATION,
    METRICS,
    NAME,
    POOLS,
    USER_POOL,
    WEB_POOLS,
)
from pyd.config.registry import MAIN, REGISTRY  # noqa: F401

OWNERS = ("process", "workers", "log", "pools", "http", "fastcgi", "service")
for _owner in OWNERS:
    importlib.import_module(f"{__name__}.{_owner}")  # each fills the registry

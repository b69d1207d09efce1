"""Pools: named config sections with listeners, served in workers.

POOL_TYPES maps a built-in pool class (`Pool:HTTPServer`) to its implementation, loaded lazily;
it is read off the directive registry, where each pool type is declared once.
"""

from pyd.config import directives as _declarations  # noqa: F401  (fills the registry)
from pyd.config.registry import REGISTRY

POOL_TYPES = {s.cls: s.impl for s in REGISTRY.sections if s.kind == "Pool" and s.impl}

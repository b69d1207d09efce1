"""pyd: a declarative application daemon for Python on gevent.

The package root exports what applications use: the version and the AppInstance base class.
"""

from pyd.version import __version__

__all__ = ["__version__", "AppInstance", "Pool"]


def __getattr__(name: str):
    # Lazy, so that `import pyd` stays cheap and imports nothing before gevent is patched.
    if name == "AppInstance":
        from pyd.apps import AppInstance

        return AppInstance
    if name == "Pool":
        from pyd.pools.base import Pool

        return Pool
    raise AttributeError(f"module 'pyd' has no attribute {name!r}")

"""pyd: a declarative application daemon for Python on gevent.

The package root exports what applications use: the version and the AppInstance base class.
"""

__version__ = "0.1.0.dev0"

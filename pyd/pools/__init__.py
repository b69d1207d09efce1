"""Pools: named config sections with listeners, served in workers.

POOL_TYPES maps a built-in pool class (`Pool:HTTPServer`) to its implementation, loaded lazily.
"""

POOL_TYPES = {
    "HTTPServer": "pyd.pools.http:HTTPServerPool",
    "FastCGI": "pyd.pools.fastcgi:FastCGIPool",
}

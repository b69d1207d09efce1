"""Routing a request-target to a location: decode the path, normalize it, longest prefix wins.

Shared by the HTTP and FastCGI pools. A location serves an app (SCRIPT_NAME is its prefix
without the trailing slash) or static files.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote_from_bytes, unquote_to_bytes


class BadTarget(Exception):
    """The request-target cannot be a path (it climbs above the root)."""


class Route:
    __slots__ = ("prefix", "script_name", "app", "section")

    def __init__(self, prefix: str, app: Callable, section=None):
        self.prefix = prefix
        self.script_name = prefix.rstrip("/")
        self.app = app
        self.section = section


class Router:
    def __init__(self, routes: list[Route]):
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self.only = self.routes[0] if len(self.routes) == 1 and self.routes[0].prefix == "/" \
            else None
        # `/api` for a location `/api/`: redirected even when a shorter location matches it
        self.redirects = {r.prefix[:-1]: redirect_location(r.prefix) for r in self.routes
                          if len(r.prefix) > 1 and r.prefix.endswith("/")}

    def match(self, path: str) -> Route | None:
        if self.only is not None:
            return self.only
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None

    def redirect_for(self, path: str) -> str | None:
        """`/api/` for `/api` when a location is `/api/` (as nginx does), else None."""
        return self.redirects.get(path) if self.redirects else None


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """The raw path and query of a request-target (origin or absolute form)."""
    if target[:1] != b"/":
        if target == b"*":
            return b"*", b""
        # absolute-form: http://host[:port]/path?query, or http://host?query
        rest = target.split(b"//", 1)[1] if b"//" in target else target
        slash, mark = rest.find(b"/"), rest.find(b"?")
        if 0 <= mark and (slash < 0 or mark < slash):
            target = b"/" + rest[mark:]
        else:
            target = rest[slash:] if slash >= 0 else b"/"
    path, _, query = target.partition(b"?")
    return path, query


# What stays as it is in a Location path: RFC 3986 pchar and "/" (letters, digits, "_.-~" always)
_PATH_SAFE = "/!$&'()*+,;=:@"


def redirect_location(path: str, query: str = "") -> str:
    """A Location for a decoded path (PATH_INFO's latin-1 text): percent-encoded again, and
    never protocol-relative. `//evil.example.com/` would send a browser to that host (and so
    would `/\\evil...`, browsers read a backslash as a slash): leading slashes are one, and a
    backslash is encoded."""
    location = quote_from_bytes(path.encode("latin-1"), _PATH_SAFE)
    if location.startswith("//"):
        location = "/" + location.lstrip("/")
    return location + ("?" + query if query else "")


def decode_path(raw: bytes) -> str:
    """PATH_INFO as PEP 3333 wants it: percent-decoded bytes as latin-1, dot-segments resolved."""
    path = unquote_to_bytes(raw) if b"%" in raw else raw
    text = path.decode("latin-1")
    if "/." in text:
        text = remove_dot_segments(text)
    return text


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4; a path that climbs above the root is refused."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments[1:], 1):
        if seg == ".":
            if i == len(segments) - 1:
                out.append("")
            continue
        if seg == "..":
            if not out:
                raise BadTarget(path)
            out.pop()
            if i == len(segments) - 1:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)

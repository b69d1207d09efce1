"""Channels and routes: which records go where, decided once per (channel, level) and cached.

A channel is a `logging` logger name (`pyd.master`, `pyd.http.access`, `shop.views`). A route
takes some channels from some level on, and names a target and a format. The main log (and the
terminal with verbose-tty) takes every channel, except records a route with `propagate off`
keeps for itself.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field


class Channels:
    """Channel patterns: a plain name takes that logger and its children (`shop` takes
    `shop.views`), a glob matches whole names (`pyd.*`, `cron.?aily`, `*`)."""

    def __init__(self, patterns: tuple[str, ...] | list[str]):
        self.patterns = tuple(patterns)
        self.everything = "*" in self.patterns
        self.names = tuple(p for p in self.patterns if not any(c in p for c in "*?["))
        globs = [fnmatch.translate(p) for p in self.patterns if p not in self.names]
        self.glob = re.compile("|".join(globs)) if globs else None

    def __contains__(self, name: str) -> bool:
        if self.everything:
            return True
        for p in self.names:
            if name == p or name.startswith(p + "."):
                return True
        return self.glob is not None and self.glob.match(name) is not None

    def __repr__(self) -> str:
        return f"Channels({', '.join(self.patterns)})"


@dataclass(eq=False)
class Route:
    """Records of these channels at this level or above go to one target, in one format."""

    channels: Channels
    level: int
    sink: int  # the target's id in the master's table (stable across config updates)
    format: object
    propagate: bool = True  # off: what this route takes stays out of the main log
    main: bool = False  # the main log or the terminal copy of it
    label: str = field(default="")


class Router:
    """Routes looked up by (channel, level); the answer is cached (it never changes until the
    next setup builds a new Router)."""

    CACHE_LIMIT = 4096

    def __init__(self, routes: list[Route]):
        self.routes = routes
        self._cache: dict[tuple[str, int], tuple] = {}
        self.level = min((r.level for r in routes), default=100)

    def routes_for(self, name: str, level: int) -> tuple:
        """((sink id, format), ...) for one record."""
        try:
            return self._cache[name, level]
        except KeyError:
            pass
        taken = [r for r in self.routes if not r.main and level >= r.level and name in r.channels]
        kept = any(not r.propagate for r in taken)
        main = [r for r in self.routes if r.main and not kept and level >= r.level
                and name in r.channels]
        found = tuple((r.sink, r.format) for r in main + taken)
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[name, level] = found
        return found

    def line_makers(self, name: str, level: int, pid: int) -> tuple | None:
        """((sink id, make(message, created)), ...) when every target can take a bare message
        as a line (the fast path of preformatted channels); None when a record is needed."""
        routes = self.routes_for(name, level)
        if not all(hasattr(fmt, "line_maker") for _, fmt in routes):
            return None
        return tuple((sink, fmt.line_maker(name, level, pid)) for sink, fmt in routes)

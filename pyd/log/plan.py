"""From the configuration to routes and targets: what `log-file`, `Log:` sections and verbose-tty ask.

Pure data, no file opened: runtime.py opens what a plan names. A target is identified by a
stable key (`file:/var/log/pyd/pyd.log`, `gelf:udp://graylog:12201`), so a config update keeps
what did not change open and workers forked before it still find their targets.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
TARGETS = ("file", "stdout", "stderr", "syslog", "gelf")


class LogSetupError(Exception):
    """The log cannot be set up as configured: one line for `pyd start` to show."""


@dataclass(frozen=True)
class Target:
    key: str
    kind: str  # file, stdout, stderr, tty, syslog, gelf
    label: str  # how reports name it: the path, the URL, "stderr"
    path: str | None = None
    endpoint: object = None
    rotate_size: int = 0
    rotate_every: float = 0.0
    rotate_keep: int = 7
    compress: str = "off"

    @property
    def rotation(self) -> tuple:
        return (self.rotate_size, self.rotate_every, self.rotate_keep, self.compress)


@dataclass(frozen=True)
class RouteSpec:
    label: str  # "the main log", "Log:errors"
    channels: tuple[str, ...]
    level: int
    target: Target
    format: str  # text, json, gelf, message
    facility: str = "user"
    propagate: bool = True
    main: bool = False
    colour: bool = False


def file_target(path: str, settings, prefix: str = "") -> Target:
    """A file and its rotation (`prefix` log- at the top level, for the main log)."""
    return Target(f"file:{path}", "file", path, path=path,
                  rotate_size=settings.get(prefix + "rotate-size") or 0,
                  rotate_every=settings.get(prefix + "rotate-every") or 0.0,
                  rotate_keep=settings.get(prefix + "rotate-keep", 7),
                  compress=settings.get(prefix + "compress") or "off")


def section_target(section) -> Target:
    s = section.settings
    if s.get("file"):
        return file_target(s["file"], s)
    if s.get("stdout"):
        return Target("stdout", "stdout", "stdout")
    if s.get("stderr"):
        return Target("stderr", "stderr", "stderr")
    for kind in ("syslog", "gelf"):
        if s.get(kind) is not None:
            endpoint = s[kind]
            return Target(f"{kind}:{endpoint}", kind, f"{kind} {endpoint}", endpoint=endpoint)
    raise LogSetupError(f"{section.header}: no target (file, stdout, stderr, syslog or gelf)")


def plan(config, tty: bool = False) -> list[RouteSpec]:
    """Every route the config asks for: the main log first, then the terminal, then Log: sections."""
    level = LEVELS[config.log_level]
    routes = [RouteSpec("the main log", ("*",), level, file_target(config.log_file,
                                                                    config.settings, "log-"),
                        "text", main=True)]
    if tty:
        routes.append(RouteSpec("the terminal", ("*",), level, Target("tty", "tty", "the terminal"),
                                "text", main=True, colour=_colour_terminal()))
    logs = {section.header: section for section in config.of_kind("Log")}
    named = {}  # Log section header -> the pools whose access-log-target it is
    for pool in config.of_kind("Pool"):
        if pool.settings.get("access-log-target"):  # declared by the pool types that log access
            named.setdefault(pool.settings["access-log-target"], []).append(pool)
    for header, section in logs.items():
        s = section.settings
        target = section_target(section)
        if header not in named or s.is_set("channels"):
            fmt = s.get("format") or ("gelf" if target.kind == "gelf" else "text")
            routes.append(RouteSpec(header, tuple(s["channels"]), LEVELS[s["level"]], target,
                                    fmt, facility=s.get("facility") or "user",
                                    propagate=s["propagate"]))
        for pool in named.get(header, ()):
            fmt = s.get("format") or ("gelf" if target.kind == "gelf" else "message")
            routes.append(RouteSpec(f"{pool.header} access-log-target {header}",
                                    (access_channel(pool),), logging.INFO, target, fmt,
                                    facility=s.get("facility") or "user", propagate=False))
    check_files(routes)
    return routes


def access_channel(pool) -> str:
    """The channel of an HTTP pool's access log: its own when it has an access-log-target."""
    if pool.settings.get("access-log-target"):
        return f"pyd.http.access.{pool.label}"
    return "pyd.http.access"


def check_files(routes: list[RouteSpec]) -> None:
    """Two routes may share a file, but not with different rotation settings."""
    seen: dict[str, RouteSpec] = {}
    for r in routes:
        first = seen.setdefault(r.target.key, r)
        if first.target.rotation != r.target.rotation:
            raise LogSetupError(f"{r.label} and {first.label} write {r.target.label} with "
                                "different rotate-*/compress settings")


def _colour_terminal() -> bool:
    return os.isatty(2) and os.environ.get("TERM", "") != "dumb" and "NO_COLOR" not in os.environ

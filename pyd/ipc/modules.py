"""The autoreload report: the source files a worker runs, as JSON datagrams to the master.

A worker sends them once after boot (`report_modules`); the master reads each datagram as
untrusted input (`parse_report`) and passes the paths on to the service process's monitor.
"""

from __future__ import annotations

import json
import os
import site
import sys
import sysconfig
from collections.abc import Iterable

REPORT_MAX = 16 * 1024  # bytes of paths per datagram, well under a unix datagram's limit
_PYD = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _system_dirs() -> tuple[str, ...]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            _PYD}
    dirs.update(sysconfig.get_path(key) for key in ("stdlib", "platstdlib", "purelib",
                                                      "platlib"))
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs if d)


# Python's own installation, site-packages and pyd: not the apps' code. Computed at import, in
# the master as root: a worker that dropped privileges might not be allowed to look.
SYSTEM_DIRS = _system_dirs()


# -- in a worker ---------------------------------------------------------------------------------

def source_files(modules: Iterable = ()) -> list[str]:
    """The .py files of the loaded modules that are the apps' code (not Python's, not pyd's)."""
    out = set()
    for module in list(modules or sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.endswith(".py"):
            path = os.path.abspath(path)
            if not path.startswith(SYSTEM_DIRS):
                out.add(path)
    return sorted(out)


def report_modules(fd: int) -> int:
    """Send the master the source files this worker runs (after boot); how many were sent."""
    paths = source_files()
    batch: list[str] = []
    size = 0
    for path in paths:
        if batch and size + len(path) + 4 > REPORT_MAX:
            _send(fd, batch)
            batch, size = [], 0
        batch.append(path)
        size += len(path) + 4
    if batch:
        _send(fd, batch)
    return len(paths)


def _send(fd: int, batch: list[str]) -> None:
    try:
        os.write(fd, json.dumps(batch).encode())
    except OSError:
        pass  # the buffer is full: autoreload is a convenience, never worth blocking a worker


# -- in the master -------------------------------------------------------------------------------

def parse_report(data: bytes) -> list[str]:
    """The paths of one worker datagram; anything else (it comes from an unprivileged process)
    is dropped."""
    try:
        paths = json.loads(data)
    except ValueError:
        return []
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, str) and os.path.isabs(p) and p.endswith(".py")
            and "\0" not in p and len(p) < 4096]

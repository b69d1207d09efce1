"""The start line: how a starting master tells whoever waits on its start pipe how it went.

The CLI (`pyd start` as a daemon) and an old master (`pyd upgrade`) hand a new master the write
end of a pipe. Once its workers serve it writes `READY <pid> <workers>`; if it cannot start,
`ERROR <why>` (the why may span lines: a config error with its caret); then it closes the pipe.
The line goes in one write, so the read that brings its newline brings all of it; the reader
takes at most MAX_SIZE bytes and waits no longer than its deadline.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass

MAX_SIZE = 64 * 1024  # an error longer than this is cut
READY, ERROR = "READY", "ERROR"


class StartLineError(ValueError):
    """What came down the start pipe is not a start line."""


@dataclass(frozen=True)
class StartLine:
    """What the new master said: it serves (its pid and how many workers), or why it does not."""

    ready: bool
    pid: int = 0
    workers: int = 0
    error: str = ""


def ready_line(pid: int, workers: int) -> bytes:
    return f"{READY} {pid} {workers}\n".encode()


def error_line(message: str) -> bytes:
    data = f"{ERROR} {message}".encode("utf-8", "replace")[:MAX_SIZE - 1]
    return data + b"\n"


def parse(data: bytes) -> StartLine | None:
    """The start line in `data`; None when nothing was said (the writer went away first)."""
    text = data[:MAX_SIZE].decode("utf-8", "replace").strip()
    if not text:
        return None
    word, _, rest = text.partition(" ")
    if word == READY:
        fields = rest.split()
        if len(fields) < 2 or not all(f.isdigit() for f in fields[:2]):
            raise StartLineError(f"a READY line without a pid and a worker count: {text[:80]!r}")
        return StartLine(True, int(fields[0]), int(fields[1]))
    if word == ERROR:
        return StartLine(False, error=rest.strip() or "an error without a message")
    raise StartLineError(f"not a start line: {text[:80]!r}")


def read(fd: int, timeout: float) -> bytes:
    """What the writer sent on `fd`: up to the read that brings a newline, the end of the
    pipe or MAX_SIZE bytes. TimeoutError when no line ended within `timeout` seconds.
    `select` waits: cooperatively where gevent patched it (the master), else blocking (the CLI).
    """
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and len(data) < MAX_SIZE:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no start line within {timeout:g}s")
        chunk = os.read(fd, MAX_SIZE - len(data))
        if not chunk:
            break
        data += chunk
    return data


def wait(fd: int, timeout: float) -> StartLine | None:
    """The start line read from `fd`; None when the writer went away without one.
    TimeoutError when none came in time, StartLineError when what came is not one."""
    return parse(read(fd, timeout))

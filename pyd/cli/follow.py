"""`pyd log`: the last records of the main log, then (with -f) following it like `tail -F`.

A record is a line that starts at column 0 and the indented lines after it (a traceback); the
text format puts time, level, pid and channel first, which --level and --channel filter on
(json lines are understood too). Following survives rotation: when the path names another
file, the old one is read to its end, then the new one from its start.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator

from pyd.log.plan import LEVELS
from pyd.log.routing import Channels

HEADER = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL)"
                    r"\s+\[\d+\] (\S+?): ")
_TAG = re.compile(rb"^(\S+ \S+ )(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_COLOURS = {b"DEBUG": b"2", b"INFO": b"32", b"WARNING": b"33", b"ERROR": b"31",
            b"CRITICAL": b"1;31"}
BLOCK = 64 << 10
POLL = 0.2


class LogError(Exception):
    """The log cannot be shown: one line for the operator."""


class Filter:
    """--channel (globs, comma-separated) and --level, applied to a record's first line."""

    def __init__(self, channel: str | None = None, level: str | None = None):
        patterns = [p.strip() for p in (channel or "").split(",") if p.strip()]
        self.channels = Channels(patterns) if patterns else None
        if level is not None and level.lower() not in LEVELS:
            raise ValueError(f"unknown level '{level}': expected one of {', '.join(LEVELS)}")
        self.level = LEVELS[level.lower()] if level else 0

    @property
    def active(self) -> bool:
        return self.channels is not None or self.level > 0

    def wants(self, first_line: str) -> bool:
        if not self.active:
            return True
        parsed = parse(first_line)
        if parsed is None:
            return False
        level, channel = parsed
        return level >= self.level and (self.channels is None or channel in self.channels)


def parse(line: str) -> tuple[int, str] | None:
    """(level, channel) of a record's first line, in text or json format."""
    m = HEADER.match(line)
    if m:
        return LEVELS[m.group(1).lower()], m.group(2)
    if line.startswith("{"):
        try:
            obj = json.loads(line)
            return LEVELS.get(str(obj.get("level", "")).lower(), 0), str(obj.get("channel", ""))
        except (ValueError, AttributeError):
            return None
    return None


def is_continuation(line: bytes) -> bool:
    return line[:1] in (b" ", b"\t")


def group(lines: list[bytes]) -> list[list[bytes]]:
    """Lines into records: a first line and its indented continuation lines."""
    records: list[list[bytes]] = []
    for line in lines:
        if records and is_continuation(line):
            records[-1].append(line)
        else:
            records.append([line])
    return records


def last_records(f, n: int, flt: Filter) -> tuple[list[list[bytes]], int]:
    """The last n records the filter wants, and where the file ended when read."""
    end = f.seek(0, os.SEEK_END)
    if n <= 0:
        return [], end
    pos, data = end, b""
    while True:
        step = min(BLOCK, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        lines = data.split(b"\n")[:-1]  # the last piece is empty, or a line not finished
        tail_complete = data.endswith(b"\n")
        if pos > 0:
            lines = lines[1:]  # maybe cut in two by the block boundary
            while lines and is_continuation(lines[0]):
                lines = lines[1:]  # the rest of a record whose start is further back
        records = [r for r in group(lines) if flt.wants(_text(r[0]))]
        if len(records) >= n or pos == 0:
            consumed = end - (0 if tail_complete else len(data) - data.rfind(b"\n") - 1)
            return records[-n:], consumed


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


class Follower:
    """Reads what is appended to a path, across rotations (a new file at the same path)."""

    def __init__(self, path: str, f, pos: int):
        self.path, self.f = path, f
        self.f.seek(pos)
        self.ino = os.fstat(f.fileno()).st_ino
        self.pending = b""

    def read(self) -> list[bytes]:
        """Complete new lines (a line still being written waits)."""
        chunk = self.f.read()
        if not chunk:
            self._check_rotation()
            chunk = self.f.read() if self.f else b""
        if not chunk:
            return []
        data = self.pending + chunk
        *lines, self.pending = data.split(b"\n")
        return lines

    def _check_rotation(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # between a rename and the new file: look again next time
        if st.st_ino != self.ino:
            rest = self.f.read()  # what the old file got after our last read
            self.pending += rest
            new = open(self.path, "rb")
            self.f.close()
            self.f, self.ino = new, st.st_ino
        elif st.st_size < self.f.tell():  # truncated (copytruncate)
            self.f.seek(0)


def colourize(line: bytes) -> bytes:
    m = _TAG.match(line)
    if not m:
        return line
    colour = _COLOURS[m.group(2)]
    return m.group(1) + b"\x1b[" + colour + b"m" + m.group(2) + b"\x1b[0m" + line[m.end():]


def open_log(path: str, wait: bool):
    """The log opened for reading; LogError when it is missing (unless waiting) or unreadable."""
    announced = False
    while True:
        try:
            return open(path, "rb")
        except FileNotFoundError:
            if not wait:
                raise LogError(f"the log file {path} does not exist (is pyd running with this "
                               "config? see log-file)") from None
            if not announced:
                print(f"pyd: waiting for the log file {path} to appear", file=sys.stderr)
                announced = True
            time.sleep(POLL)
        except PermissionError:
            raise LogError(f"cannot read the log file {path}: permission denied (it is "
                           "readable by root; try sudo)") from None
        except IsADirectoryError:
            raise LogError(f"the log file {path} is a directory") from None
        except OSError as e:
            raise LogError(f"cannot read the log file {path}: {e.strerror}") from None


def show(path: str, lines: int = 20, follow: bool = False, flt: Filter | None = None,
         out=None, colour: bool | None = None) -> None:
    """The whole of `pyd log`, writing to `out` (stdout's buffer)."""
    flt = flt or Filter()
    out = out or sys.stdout.buffer
    if colour is None:
        colour = out.isatty() and "NO_COLOR" not in os.environ
    f = open_log(path, follow)

    def emit(records: Iterator[list[bytes]]) -> None:
        for record in records:
            for line in record:
                out.write((colourize(line) if colour else line) + b"\n")
        out.flush()

    try:
        records, pos = last_records(f, lines, flt)
    except OSError as e:
        raise LogError(f"cannot read the log file {path}: {e.strerror}") from None
    emit(iter(records))
    if not follow:
        f.close()
        return
    follower = Follower(path, f, pos)
    wanted = False
    while True:
        new = follower.read()
        if not new:
            time.sleep(POLL)
            continue
        keep = []
        for line in new:
            if not is_continuation(line):
                wanted = flt.wants(_text(line))
            if wanted:
                keep.append([line])
        emit(iter(keep))


def run(args) -> int:
    """`pyd log [-n N] [-f] [--channel PATTERN] [--level LEVEL]`."""
    from pyd.cli.configtest import load_or_fail
    from pyd.cli.errors import Failure, UsageError

    try:
        flt = Filter(args.channel, args.level)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.lines < 0:
        raise UsageError("-n needs a number of 0 or more")
    config = load_or_fail(args)
    try:
        show(config.log_file, args.lines, args.follow, flt)
    except LogError as e:
        raise Failure(str(e)) from None
    return 0

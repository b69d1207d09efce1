"""A child's own output into the log: what it writes to fd 1 and 2 (`print()`, warnings, the
tracebacks of failed greenlets and threads, a C library's messages) when those lead nowhere.

A daemon's children inherit /dev/null as stdout and stderr, so their output vanished. When fd 1
or 2 is /dev/null (or closed), `Capture.start` points it at a pipe; a real thread reads the
pipe, so a child that writes while its hub is busy never blocks on a full pipe, and hands whole
lines to the hub, which logs each as one record on `pyd.stdout` (INFO) or `pyd.stderr`
(WARNING), with the child's pid like every other record. Attached to a terminal, or under an init
system that keeps stdout, the descriptors lead somewhere and are left alone.
"""

from __future__ import annotations

import collections
import logging
import os
import stat

from pyd.log.native import Done, allocate_lock, start_new_thread

MAX_LINE = 16 * 1024  # longer lines are cut into pieces of this size
MAX_PENDING = 10_000  # lines handed over but not logged yet (a hub busy for long): then dropped
READ_SIZE = 64 * 1024
CHANNELS = ((1, "pyd.stdout", logging.INFO), (2, "pyd.stderr", logging.WARNING))


def discarded(fd: int) -> bool:
    """Whether output to `fd` goes nowhere: /dev/null, or no descriptor at all."""
    try:
        st = os.fstat(fd)
    except OSError:
        return True
    if not stat.S_ISCHR(st.st_mode):
        return False
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return st.st_rdev == null.st_rdev


class _Reader:
    def __init__(self, capture: Capture, fd: int, read_fd: int, logger: logging.Logger,
                 level: int):
        self.capture, self.fd, self.read_fd = capture, fd, read_fd
        self.logger, self.level = logger, level
        self.partial = b""
        self.done = Done()

    def run(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self.read_fd, READ_SIZE)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.take(data)
            if self.partial:
                self.capture.hand_over(self, [self.partial])
                self.partial = b""
        finally:
            try:
                os.close(self.read_fd)
            except OSError:
                pass
            self.done.set()

    def take(self, data: bytes) -> None:
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        while len(self.partial) > MAX_LINE:
            lines.append(self.partial[:MAX_LINE])
            self.partial = self.partial[MAX_LINE:]
        out = []
        for line in lines:
            while len(line) > MAX_LINE:
                out.append(line[:MAX_LINE])
                line = line[MAX_LINE:]
            out.append(line)
        if out:
            self.capture.hand_over(self, out)


class Capture:
    """Start in a child right after its log is set up (`start`); `stop` before it exits, so the
    last lines (a final traceback) are logged before the log is shut down."""

    def __init__(self) -> None:
        self.readers: list[_Reader] = []
        self.pending: collections.deque = collections.deque()
        self.dropped = 0
        self.lock = allocate_lock()
        self.scheduled = False
        self.loop = None

    def start(self, channels=CHANNELS) -> list[str]:
        """Capture every descriptor of `channels` that leads nowhere; the channels captured."""
        import gevent

        self.loop = gevent.get_hub().loop
        captured = []
        for fd, channel, level in channels:
            if not discarded(fd):
                continue
            r, w = os.pipe()
            os.set_inheritable(r, False)
            os.dup2(w, fd)  # dup2 leaves fd inheritable: a subprocess's output is captured too
            os.close(w)
            reader = _Reader(self, fd, r, logging.getLogger(channel), level)
            self.readers.append(reader)
            start_new_thread(reader.run, ())
            captured.append(channel)
        return captured

    # -- in the readers' threads ------------------------------------------------------------

    def hand_over(self, reader: _Reader, lines: list[bytes]) -> None:
        with self.lock:
            room = MAX_PENDING - len(self.pending)
            if room < len(lines):
                self.dropped += len(lines) - max(room, 0)
                lines = lines[:max(room, 0)]
            self.pending.extend((reader, line) for line in lines)
            if self.scheduled or self.loop is None:
                return
            self.scheduled = True
        self.loop.run_callback_threadsafe(self.drain)

    # -- in the hub's thread ----------------------------------------------------------------

    def drain(self) -> None:
        with self.lock:
            self.scheduled = False
            items = list(self.pending)
            self.pending.clear()
            dropped, self.dropped = self.dropped, 0
        for reader, line in items:
            reader.logger.log(reader.level, "%s", line.decode("utf-8", "replace").rstrip("\r"))
        if dropped:
            logging.getLogger("pyd.stderr").warning(
                "%d lines of output dropped: written faster than they could be logged", dropped)

    def stop(self, timeout: float = 1.0) -> None:
        """Close the capturing ends, wait (up to `timeout`) for what is in the pipes, log it."""
        if not self.readers:
            return
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for reader in self.readers:
                os.dup2(null, reader.fd)  # the last write end this process holds: EOF follows
        finally:
            os.close(null)
        for reader in self.readers:
            reader.done.wait(timeout)  # a child process still holding the pipe: do not wait on
        self.readers = []
        self.drain()

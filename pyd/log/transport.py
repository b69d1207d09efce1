"""How formatted records reach their targets: directly in the master, by datagrams from workers.

Theory of operation. The master creates a unix datagram socket pair before forking: its
dispatcher (a real thread) reads one end, every worker holds the other, non-blocking. A worker
buffers formatted lines per target and, every FLUSH_INTERVAL (or at FLUSH_BYTES, or when it
exits), sends them as datagrams: a header (target id, flags, pid) and whole lines, up to
DGRAM_MAX. The kernel delivers a datagram whole or not at all, so what several workers send
never interleaves and a line is never cut; one send carries hundreds of lines. A unit longer
than a datagram (a huge line or message) goes in pieces flagged MORE, joined per (pid,
target). Messages for syslog and GELF travel length-prefixed, many to a datagram. When the
socket buffer is full the worker keeps its datagrams (up to BACKLOG_LIMIT, then it drops the
newest and counts them): it never waits.

In the master, the dispatcher takes every queued datagram, then pauses: a reader blocked in
recv() would be woken by every send, and the wake-ups cost more than the sends. Each target
gets one push per round; the master's own records are pushed directly.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import struct
from collections import deque

from pyd.log.native import get_ident, sleep

HEADER = struct.Struct("<HBI")  # target id, flags, pid
LENGTH = struct.Struct("<I")  # before each message in a datagram of messages
DGRAM_MAX = 128 << 10
PAYLOAD_MAX = DGRAM_MAX - HEADER.size
MORE = 1  # the unit goes on in the next datagram of this pid for this target
DROPPED = 2  # payload: how many lines or messages a worker could not send (ASCII)
STOP = 4  # the master is stopping: the dispatcher ends with this datagram
MESSAGES = 8  # the payload is length-prefixed messages, not lines
FLUSH_INTERVAL = 0.05
FLUSH_BYTES = 64 << 10
BACKLOG_LIMIT = 8 << 20
SOCKET_BUFFER = 4 << 20
READ_PAUSE = 0.02
_SO_SNDBUFFORCE = getattr(_socket, "SO_SNDBUFFORCE", 32)


def make_channel() -> tuple[int, int]:
    """The master's end (blocking, for the dispatcher) and the workers' end (non-blocking)."""
    import _socket as c_socket  # socket.socketpair would build gevent's sockets after patching

    ours, theirs = c_socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    for option in (_SO_SNDBUFFORCE, _socket.SO_SNDBUF):  # datagrams in flight are charged to
        try:                                              # the sender: room for a burst
            theirs.setsockopt(_socket.SOL_SOCKET, option, SOCKET_BUFFER)
            break
        except OSError:
            continue
    read_fd, write_fd = ours.detach(), theirs.detach()
    os.set_blocking(read_fd, True)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def datagrams(sink: int, data: bytes, pid: int, flags: int = 0) -> list[bytes]:
    """One unit in datagrams: cut after a line (or a message) where it can, else flagged MORE."""
    out = []
    pos, end = 0, len(data)
    pack = HEADER.pack
    while pos < end:
        stop = pos + PAYLOAD_MAX
        more = 0
        if stop >= end:
            stop = end
        elif not flags & MESSAGES and (cut := data.rfind(b"\n", pos, stop)) >= 0:
            stop = cut + 1
        else:
            more = MORE
        out.append(pack(sink, flags | more, pid) + data[pos:stop])
        pos = stop
    return out


def pack_messages(messages: list[bytes]) -> list[bytes]:
    """Messages length-prefixed, grouped into units that fit a datagram (a bigger one alone)."""
    units, unit, size = [], [], 0
    for m in messages:
        item = LENGTH.pack(len(m)) + m
        if unit and size + len(item) > PAYLOAD_MAX:
            units.append(b"".join(unit))
            unit, size = [], 0
        unit.append(item)
        size += len(item)
    if unit:
        units.append(b"".join(unit))
    return units


def unpack_messages(payload: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + LENGTH.size <= len(payload):
        (n,) = LENGTH.unpack_from(payload, pos)
        out.append(payload[pos + LENGTH.size:pos + LENGTH.size + n])
        pos += LENGTH.size + n
    return out


class WorkerWriter:
    """A worker's side: per-target buffers, flushed as datagrams to the master.

    Only the thread that created it (the hub's) touches the buffers, so the hot path takes no
    lock; a line logged from another real thread is handed over through the hub's loop.
    """

    def __init__(self, fd: int, pid: int):
        from gevent import get_hub

        self.fd, self.pid = fd, pid
        self.lines: dict[int, list[str]] = {}
        self.messages: dict[int, list[bytes]] = {}
        self.buffered = 0
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.dropped: dict[int, int] = {}
        self.before: list = []  # called at the next flush (the access log's batches)
        self.armed = False
        self.broken = False
        self.owner = get_ident()
        self._loop = get_hub().loop
        self._timer = None

    # -- the hot path ---------------------------------------------------------------------------

    def put_line(self, sink: int, line: str) -> None:
        self.put_lines(sink, (line,))

    def put_lines(self, sink: int, lines) -> None:
        """Lines for one sink, in order (one, or the access log's batches)."""
        if get_ident() != self.owner:
            self._loop.run_callback_threadsafe(self.put_lines, sink, lines)
            return
        buf = self.lines.get(sink)
        if buf is None:
            buf = self.lines[sink] = []
        buf.extend(lines)
        self._buffered(sum(map(len, lines)))

    def before_flush(self, fn) -> None:
        """Call fn() at the next flush, before the buffers go out: fn logs what it gathered
        (the access log builds its lines in a batch, away from the requests)."""
        if get_ident() != self.owner:
            self._loop.run_callback_threadsafe(self.before_flush, fn)
            return
        self.before.append(fn)
        if not self.armed:
            self.arm()

    def put_message(self, sink: int, message: bytes) -> None:
        if get_ident() != self.owner:
            self._loop.run_callback_threadsafe(self.put_message, sink, message)
            return
        self.messages.setdefault(sink, []).append(message)
        self._buffered(len(message))

    def _buffered(self, size: int) -> None:
        """`size` more bytes wait: flush past FLUSH_BYTES, else within FLUSH_INTERVAL."""
        self.buffered += size
        if self.buffered > FLUSH_BYTES:
            self.flush()
        elif not self.armed:
            self.arm()

    # -- flushing -------------------------------------------------------------------------------

    def arm(self) -> None:
        """Flush in FLUSH_INTERVAL: a one-shot libev timer of the hub."""
        self.armed = True
        if self._timer is None:
            self._timer = self._loop.timer(FLUSH_INTERVAL)
        if not self._timer.active:
            self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        self.armed = False
        self.flush()

    def flush(self) -> None:
        if self.before:
            before, self.before = self.before, []
            for fn in before:
                try:
                    fn()
                except Exception:  # one source's bug must not stop the log
                    import traceback

                    traceback.print_exc()
        lines, self.lines = self.lines, {}
        messages, self.messages = self.messages, {}
        self.buffered = 0
        pid = self.pid
        units = []  # (datagrams, lines or messages in them, target)
        for sink, chunk in lines.items():
            data = "".join(chunk).encode("utf-8", "backslashreplace")
            units.append((datagrams(sink, data, pid), len(chunk), sink))
        for sink, chunk in messages.items():
            for unit in pack_messages(chunk):
                units.append((datagrams(sink, unit, pid, MESSAGES), len(chunk), sink))
        for sink, count in list(self.dropped.items()):
            if self.backlog_bytes < BACKLOG_LIMIT:
                units.append(([HEADER.pack(sink, DROPPED, pid) + str(count).encode()], 0, sink))
                del self.dropped[sink]
        for unit, count, sink in units:
            size = sum(map(len, unit))
            if self.backlog_bytes + size > BACKLOG_LIMIT or self.broken:
                self.dropped[sink] = self.dropped.get(sink, 0) + count
                continue
            self.backlog.extend(unit)
            self.backlog_bytes += size
        self._send()
        if self.backlog and not self.armed:
            self.arm()  # the socket buffer was full: try again soon

    def _send(self) -> None:
        backlog, fd = self.backlog, self.fd
        while backlog:
            datagram = backlog[0]
            try:
                os.write(fd, datagram)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:  # the master is gone: nobody is left to write
                if e.errno in (errno.ECONNREFUSED, errno.EPIPE, errno.EBADF, errno.ENOTCONN):
                    self.broken = True
                backlog.clear()
                self.backlog_bytes = 0
                return
            backlog.popleft()
            self.backlog_bytes -= len(datagram)

    def drain(self, timeout: float = 1.0) -> None:
        """At exit: flush, and wait (briefly) for room for what is left."""
        import time

        self.flush()
        deadline = time.monotonic() + timeout
        while self.backlog and not self.broken and time.monotonic() < deadline:
            sleep(0.005)
            self._send()


class Dispatcher:
    """The master's reader: datagrams to targets. Runs in a real thread."""

    def __init__(self, fd: int, targets: dict, health):
        from pyd.log.native import socket

        # A copy of the descriptor: in a forked worker this object dies with the thread that
        # ran it and closes its copy, while runtime.py closes the master's own.
        self.sock = socket(fileno=os.dup(fd))
        self.targets = targets  # id -> Sink, shared with the master's table (only grows)
        self.health = health
        self.partial: dict[tuple[int, int], bytes] = {}
        self.batches: dict[int, list[bytes]] = {}

    def run(self, done) -> None:
        recv, size = self.sock.recv, DGRAM_MAX + 64
        try:
            while True:
                stop = False
                try:
                    stop = self.dispatch(recv(size))
                    while not stop:  # everything queued, then one push per target
                        stop = self.dispatch(recv(size, _socket.MSG_DONTWAIT))
                except BlockingIOError:
                    pass
                except InterruptedError:
                    continue
                except OSError:
                    return
                finally:
                    self.deliver()
                if stop:
                    return
                sleep(READ_PAUSE)
        finally:
            done.set()

    def dispatch(self, datagram: bytes) -> bool:
        """Take one datagram; True if it says the master stops."""
        if len(datagram) < HEADER.size:
            return False
        sink, flags, pid = HEADER.unpack_from(datagram)
        payload = datagram[HEADER.size:]
        if flags & STOP:
            return True
        key = (pid, sink)
        if key in self.partial:
            payload = self.partial.pop(key) + payload
        if flags & MORE:
            self.partial[key] = payload
            return False
        target = self.targets.get(sink)
        if flags & DROPPED:
            self.health.lost(target.label if target else "a log target", int(payload or b"0"),
                             f"worker {pid} could not keep up")
        elif target is None:
            pass
        elif flags & MESSAGES:
            for message in unpack_messages(payload):
                target.push(message)
        else:
            self.batches.setdefault(sink, []).append(payload)
        return False

    def deliver(self) -> None:
        batches, self.batches = self.batches, {}
        for sink, chunks in batches.items():
            self.targets[sink].push(b"".join(chunks))


class DirectWriter:
    """The master's side: its own records go straight to the targets' queues."""

    def __init__(self, targets: dict, drain=None):
        self.targets = targets
        self.drain = drain  # at exit (logging.shutdown): what workers sent, then every target

    def put_line(self, sink: int, line: str) -> None:
        target = self.targets.get(sink)
        if target is not None:
            target.push(line.encode("utf-8", "backslashreplace"))

    def put_message(self, sink: int, message: bytes) -> None:
        target = self.targets.get(sink)
        if target is not None:
            target.push(message)

    def flush(self) -> None:
        pass


class StderrWriter:
    """No master (`pyd runworker`, the CLI): lines go to stderr as they come."""

    def put_line(self, sink: int, line: str) -> None:
        try:
            os.write(2, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass

    def put_message(self, sink: int, message: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

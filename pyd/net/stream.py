"""Byte streams over gevent sockets: a Stream per connection, a deadline Sweeper per pool.

The only code in pyd that touches gevent's socket internals (the raw socket under gevent's,
its read and write watchers, `hub.cancel_wait`). Drivers speak to a Stream; deadlines are
checked by one Sweeper per pool, twice a second, which is cheaper than a timer per wait.

Theory of operation. A read first tries the raw non-blocking socket (the bytes are usually
there), and only then waits on the socket's read watcher with a deadline the Sweeper enforces by
throwing `Expired` into the wait. An idle keep-alive connection can be parked: its greenlet
returns, and the socket's own read watcher calls back when bytes arrive, so a parked connection
costs a watcher, not a greenlet. A send writes at once when the socket has room (the common
case) and waits for room otherwise.

TLS: a subclass over an SSL socket sets `buffered` (every read tries the SSL object before
waiting) and says in `pending()` how many decrypted bytes its SSL object holds. A stream with
pending bytes is never parked and never waits on the raw descriptor: the kernel has nothing
more to say about bytes already read and decrypted.
"""

from __future__ import annotations

import os
import socket as _stdsocket
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent

RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 20  # one sendfile(2) call at most, so other greenlets get their turn
SEND_TIMEOUT = 60.0
LINGER_TIME = 2.0  # after the last response: read and drop what the client still sends
LINGER_BYTES = 1 << 20
SWEEP_INTERVAL = 0.5  # how often deadlines are checked: timeouts are this precise


class Expired(Exception):
    """Thrown by the Sweeper into a wait past its deadline."""


class Park(Exception):
    """Thrown by the Sweeper into an idle read past its `park_at`: give up the greenlet."""


class PeerGone(ConnectionError):
    """The peer went away (a send failed or timed out). Drivers name their own class."""


class Stream:
    """One connection's bytes: recv with a deadline, send all, sendfile, park, linger.

    `reading` says what a blocked read waits for ("" when none: idle, head, body, linger...),
    `read_deadline` until when, `park_at` when the Sweeper may park it instead (0: never);
    `write_deadline` is set while a send waits for room. `gone` is the exception raised when
    the peer is gone, so each driver gets its own (HTTP and FastCGI raise wsgi.ClientGone).
    """

    # Bytes may wait above the descriptor (an SSL object's): reads never skip trying first.
    buffered = False

    # Thousands may sit parked in one worker: no per-instance __dict__.
    __slots__ = ("sock", "raw", "gone", "send_timeout", "reading", "read_deadline", "park_at",
                 "write_deadline", "parked", "_on_timeout", "_arg")

    def __init__(self, sock: Any, gone: type[Exception] = PeerGone,
                 send_timeout: float = SEND_TIMEOUT):
        self.sock = sock  # the gevent socket: what the pool closes
        self.raw = sock._sock  # the non-blocking socket under it: tried before any wait
        self.gone = gone
        self.send_timeout = send_timeout
        self.reading = ""
        self.read_deadline = 0.0
        self.park_at = 0.0
        self.write_deadline = 0.0
        self.parked = None  # the read watcher while parked (no greenlet waits on it)
        self._on_timeout: Callable[[Any], None] | None = None
        self._arg: Any = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> int:
        """Bytes already read from the descriptor and buffered above it (an SSL object's
        decrypted bytes); a plain socket buffers nothing. See the module's note on TLS."""
        return 0

    def local_address(self) -> Any:
        return self.raw.getsockname()

    # -- reading --------------------------------------------------------------------------------

    def recv(self, reading: str, deadline: float, eager: bool = True,
             park_at: float = 0.0) -> bytes:
        """The next bytes (b"" at the peer's end): at once if they are there and `eager`, else
        after waiting until `deadline` (Expired) or `park_at` (Park). OSError as it comes.

        `eager=False` always waits on the watcher, even with bytes there: between requests it
        lets every other connection have its turn first."""
        raw = self.raw
        if eager or self.buffered:
            try:
                return raw.recv(RECV_SIZE)
            except BlockingIOError:
                pass
        # _wait_recv(), written out: this is the path of every keep-alive request
        sock = self.sock
        self.reading, self.read_deadline, self.park_at = reading, deadline, park_at
        try:
            while True:
                sock._wait(sock._read_event)
                try:
                    return raw.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
        finally:
            self.reading = ""
            self.park_at = 0.0

    def recv_for(self, reading: str, timeout: float) -> bytes:
        """recv() with a deadline `timeout` seconds from now, computed only if it must wait."""
        try:
            return self.raw.recv(RECV_SIZE)
        except BlockingIOError:
            pass
        return self._wait_recv(reading, time.monotonic() + timeout, 0.0)

    def _wait_recv(self, reading: str, deadline: float, park_at: float) -> bytes:
        sock, raw = self.sock, self.raw
        self.reading, self.read_deadline, self.park_at = reading, deadline, park_at
        try:
            while True:
                sock._wait(sock._read_event)
                try:
                    return raw.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
        finally:
            # read_deadline stays: a parked stream keeps it as its keep-alive deadline
            self.reading = ""
            self.park_at = 0.0

    def recv_now(self) -> bytes | None:
        """What is there without waiting (b"" at the peer's end), None if nothing is."""
        try:
            return self.raw.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None

    def peek(self) -> bytes | None:
        """Like recv_now(), leaving the bytes to be read."""
        try:
            return self.raw.recv(RECV_SIZE, _stdsocket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return None

    def interrupt(self, exc: BaseException) -> None:
        """Wake a blocked read with `exc` (a drain ending an idle wait)."""
        if self.reading:
            gevent.get_hub().cancel_wait(self.sock._read_event, exc)

    # -- writing --------------------------------------------------------------------------------

    def send(self, data: bytes, whole: bool = False) -> None:
        """Write it all: at once when the socket has room (the common case), else in parts.

        `whole`: a greenlet killed while it waits for room still finishes this write before
        GreenletExit goes on (half a FastCGI record would garble every request sharing the
        connection)."""
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise self.gone() from None
        if sent != len(data):
            self._send_rest(memoryview(data)[sent:], whole)

    def send_two(self, head: bytes, body: bytes) -> None:
        """head then body, in one write when the socket has room (sendmsg: the body is not
        copied to join them), the rest as send() does it."""
        try:
            sent = self.raw.sendmsg((head, body))
        except BlockingIOError:
            sent = 0
        except OSError:
            raise self.gone() from None
        n = len(head)
        if sent < n:
            self._send_rest(memoryview(head)[sent:], False)
            sent = n
        if sent - n != len(body):
            self._send_rest(memoryview(body)[sent - n:], False)

    def _send_rest(self, view: memoryview, whole: bool) -> None:
        raw = self.raw
        killed = None
        while view:
            try:
                self.wait_writable()
            except gevent.GreenletExit as e:  # thrown in the wait, before any byte left
                if not whole:
                    raise
                killed = e
            try:
                view = view[raw.send(view):]
            except BlockingIOError:
                continue
            except OSError:
                raise self.gone() from None
        if killed is not None:
            raise killed

    def wait_writable(self) -> None:
        """Until the socket has room, at most send_timeout (then `gone`)."""
        sock = self.sock
        self.write_deadline = time.monotonic() + self.send_timeout
        try:
            sock._wait(sock._write_event)
        except (Expired, OSError):
            raise self.gone() from None
        finally:
            self.write_deadline = 0.0

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """sendfile(2) on the non-blocking socket, waiting for room cooperatively (gevent's
        socket.sendfile() reads the file and send()s it instead)."""
        out = self.raw.fileno()
        while count:
            try:
                sent = os.sendfile(out, fd, offset, min(count, SENDFILE_CHUNK))
            except BlockingIOError:
                self.wait_writable()
                continue
            except OSError:
                raise self.gone() from None
            if not sent:
                raise RuntimeError("the file is shorter than the length announced for it")
            offset += sent
            count -= sent

    # -- parking: an idle connection costs a watcher, not a greenlet ---------------------------

    def park(self, on_readable: Callable[[Any], None], on_timeout: Callable[[Any], None],
             arg: Any) -> None:
        """Give up the greenlet: `on_readable(arg)` runs (in the hub: spawn a greenlet there)
        when bytes arrive, `on_timeout(arg)` when the Sweeper finds read_deadline passed.
        Either way unpark() first."""
        watcher = self.sock._read_event  # the socket's own: no greenlet waits on it now
        self.parked = watcher
        self._on_timeout, self._arg = on_timeout, arg
        if self.pending():  # bytes above the descriptor: the watcher would never fire
            watcher.loop.run_callback(on_readable, arg)
        else:
            watcher.start(on_readable, arg)

    def unpark(self) -> None:
        self.parked.stop()
        self.parked = None
        self._on_timeout = self._arg = None

    def _parked_too_long(self) -> None:
        on_timeout, arg = self._on_timeout, self._arg
        self.unpark()
        on_timeout(arg)

    # -- the end --------------------------------------------------------------------------------

    def shutdown_write(self) -> None:
        """Half-close: FIN after what was sent; OSError (the peer is gone already) ignored."""
        try:
            self.sock.shutdown(_stdsocket.SHUT_WR)
        except OSError:
            pass

    def linger(self, seconds: float = LINGER_TIME, limit: int = LINGER_BYTES) -> None:
        """Half-close and drain what the peer still sends, so our last bytes are not lost
        to a reset (nginx's lingering close)."""
        try:
            self.sock.shutdown(_stdsocket.SHUT_WR)
            total = 0
            deadline = time.monotonic() + seconds
            while total < limit:
                data = self.recv("linger", deadline)
                if not data:
                    break
                total += len(data)
        except (OSError, Expired):
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Sweeper:
    """The deadlines of one pool's streams, checked every `interval` in one greenlet.

    `streams()` lists them at each sweep. A wait past its deadline gets Expired thrown in; an
    idle read past its `park_at` gets Park; a parked stream past its deadline is unparked and
    handed to the `on_timeout` it was parked with. `after(parking)` runs after each sweep with
    the number of streams asked to park (a pool may then hand freed memory back)."""

    def __init__(self, streams: Callable[[], Iterable[Stream]],
                 interval: float = SWEEP_INTERVAL,
                 after: Callable[[int], None] | None = None):
        self.streams = streams
        self.interval = interval
        self.after = after
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            parking = self.sweep(time.monotonic())
            if self.after is not None:
                self.after(parking)

    def sweep(self, now: float) -> int:
        """One pass; returns how many idle streams were asked to park."""
        cancel = gevent.get_hub().cancel_wait
        parking = 0
        for s in self.streams():
            if s.parked is not None:
                if now > s.read_deadline:
                    s._parked_too_long()
                continue
            if s.reading:
                if now > s.read_deadline:
                    cancel(s.sock._read_event, Expired())
                elif s.park_at and now > s.park_at:
                    s.park_at = 0.0  # asked once
                    cancel(s.sock._read_event, Park())
                    parking += 1
            if s.write_deadline and now > s.write_deadline:
                cancel(s.sock._write_event, Expired())
        return parking

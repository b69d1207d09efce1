"""Pool:HTTPServer: the gevent driver around the sans-IO HTTP/1.1 core.

One greenlet per connection reads from its Stream, feeds h1 and hands each request to the
connection's Exchange (routing, environ, the app, compression, the access log), writing the
response in as few writes as possible (head and body together). An idle keep-alive connection
is parked without a greenlet. Draining closes idle keep-alive connections politely and lets busy
ones finish with `Connection: close`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

import gevent

from pyd.log.plan import access_channel
from pyd.net.stream import Expired, Park, Stream, Sweeper
from pyd.pools.base import KEEP_OPEN, Pool
from pyd.protocols.h1 import (
    CLOSED,
    END,
    NEED_DATA,
    PAUSED,
    Data,
    H1Connection,
    Limits,
    ProtocolError,
    Request,
)
from pyd.system import memory
from pyd.web import wsgi
from pyd.web.accesslog import AccessLog
from pyd.web.compress import Compression
from pyd.web.exchange import Exchange, Site
from pyd.web.locations import build_router
from pyd.web.trusted import contains as trusted_network

PARK_AFTER = 0.5  # idle this long, a keep-alive connection gives up its greenlet
DRAIN_GRACE = 1.0  # draining: a connection idle only briefly may still get one more request
JOIN_BELOW = 16384  # a response body smaller than this is joined to its head (one send());
# a larger one goes beside it in one sendmsg(), without the copy a join costs
TRIM_AFTER_PARKING = 256  # parked this many at once: hand the freed stacks back to the OS


class HTTPServerPool(Pool):
    connection_is_request = False

    def __init__(self, section, listeners, worker=None, settings=None):
        super().__init__(section, listeners, worker, settings)
        s = section.settings
        self.limits = Limits(max_request_line=s["max-request-line"],
                             max_header_size=s["max-header-size"],
                             max_headers=s["max-headers"],
                             max_body_size=s["client-max-body-size"] or None)
        self.keepalive_timeout = s["keepalive-timeout"]
        self.header_timeout = s["client-header-timeout"]
        self.body_timeout = s["client-body-timeout"]
        self.send_timeout = s["send-timeout"]
        self.server_tokens = s["server-tokens"]
        self.trusted = tuple(s["real-ip-from"])
        self.access = AccessLog.create(s["access-log"], self.name, access_channel(section))
        self.scheme = "http"
        # SERVER_NAME and SERVER_PORT, when every connection has the same local address.
        self.site = Site(self.name, scheme=self.scheme,
                         server_address=_common_address(listeners), trusted=self.trusted,
                         compression=Compression.from_settings(s),
                         buffering=s["request-buffering"],
                         buffer_size=s["client-body-buffer-size"],
                         temp_path=s["client-body-temp-path"],
                         errors=_APP_ERRORS)
        if worker is not None:  # straight to the worker: this is on every request's path
            self.site.request_started = worker.request_started
        self.site.request_finished = self.finisher()
        if self.access is not None:
            self.site.observe(self.access)
        self.sweeper = Sweeper(self._streams, after=self._after_sweep)

    def load(self, apps: dict) -> None:
        self.site.router = build_router(self.section, apps)

    def start(self) -> None:
        super().start()
        self.sweeper.start()

    def handle(self, conn, address: Any) -> Any:
        c = HTTPConnection(self, conn, address)
        self.connections[gevent.getcurrent()] = c
        return c.run()

    # -- parking: an idle keep-alive connection costs a watcher, not a greenlet -----------------

    def park(self, c: HTTPConnection) -> None:
        """Keep `c` open without its greenlet; a new greenlet resumes it when bytes arrive."""
        self.connections[c] = c
        c.stream.park(self._unpark, self._parked_timeout, c)

    def _unpark(self, c: HTTPConnection) -> None:
        """Bytes arrived (or a drain wants it closed): resume the connection in a greenlet."""
        c.stream.unpark()
        self.connections.pop(c, None)
        g = self.spawn_connection(c.stream.sock, None, c.run)
        self.connections[g] = c

    def _parked_timeout(self, c: HTTPConnection) -> None:
        """keepalive-timeout passed while parked (the sweeper unparked it): just close it."""
        self.connections.pop(c, None)
        c.released()
        self.closed(c.stream.sock)

    def _streams(self) -> list[Stream]:
        return [c.stream for c in self.connections.values() if type(c) is HTTPConnection]

    def _after_sweep(self, parking: int) -> None:
        if parking >= TRIM_AFTER_PARKING:
            gevent.sleep(0)  # let them park first
            memory.trim()

    def shutdown(self, graceful: bool) -> bool:
        if graceful:
            for c in list(self.connections.values()):
                if type(c) is HTTPConnection and not c.closing:
                    c.closing = True
                    c.h1.closing = True
                    stream = c.stream
                    if stream.parked is not None:
                        self._unpark(c)  # resumed with closing set: it closes politely
                    elif stream.reading == "idle":
                        # Between two requests of a busy client, whose next request may be on
                        # the wire already: closing now would lose it (a client may retry
                        # that, wrk and many others do not). Wait a little for it, answer it
                        # with Connection: close; the sweeper ends the wait at the deadline.
                        stream.read_deadline = min(stream.read_deadline,
                                                   time.monotonic() + DRAIN_GRACE)
                        stream.park_at = 0.0
        done = super().shutdown(graceful)
        if done:
            self.sweeper.stop()
        return done

    def close_all(self) -> None:
        for c in [c for c in self.connections.values()
                  if type(c) is HTTPConnection and c.stream.parked is not None]:
            c.stream.unpark()
            self.connections.pop(c, None)
            c.released()
            self.closed(c.stream.sock)
        super().close_all()
        self.sweeper.stop()


class HTTPConnection:
    """One client connection: its h1 state, its stream, its exchange; the response writer."""

    __slots__ = ("pool", "stream", "h1", "exchange", "closing", "head_deadline", "on_wire",
                 "_pending")

    def __init__(self, pool: HTTPServerPool, sock, address: Any):
        self.pool = pool
        self.stream = Stream(sock, wsgi.ClientGone, pool.send_timeout)
        self.h1 = H1Connection(pool.limits, pool.server_tokens)
        self.closing = False
        self.head_deadline = 0.0
        self.on_wire = False  # some of this response's bytes were sent
        self._pending = b""
        if isinstance(address, tuple):
            remote_addr, remote_port = address[0], str(address[1])
        else:
            remote_addr, remote_port = "", ""
        trusted = bool(pool.trusted) and trusted_network(pool.trusted, remote_addr)
        site = pool.site
        # a wildcard listener's connection says its own address, when first asked
        self.exchange = Exchange(site, self, self.pull_body, remote_addr, remote_port,
                                 None if site.server_address else self.server_address, trusted)

    def server_address(self) -> tuple[str, str]:
        """SERVER_NAME and SERVER_PORT of this connection (a wildcard listener's)."""
        try:
            return _address(self.stream.local_address())
        except OSError:
            return "localhost", "0"

    # -- the connection's life ------------------------------------------------------------------

    def run(self) -> Any:
        """Serve requests until the connection ends (None) or is parked (KEEP_OPEN)."""
        try:
            return self._serve()
        finally:
            if self.stream.parked is None:
                self.released()

    def released(self) -> None:
        """The connection is over: break the cycles (the parser points back at h1, the
        exchange at this writer), so refcounting frees them."""
        self.h1.release()
        self.exchange = None  # it points back at this writer: dropped, it frees it

    def _serve(self) -> Any:
        h1 = self.h1
        try:
            while True:
                try:
                    ev = h1.next_event()
                except ProtocolError as e:
                    self.send_error(e)
                    return None
                if ev is NEED_DATA:
                    if not self.read():
                        return KEEP_OPEN if self.stream.parked is not None else None
                    continue
                if type(ev) is Request:
                    self.on_wire = False
                    self._pending = b""
                    self.exchange.run(ev)
                    if not h1.keep_alive:
                        if ev.keep_alive or h1.idle is False:
                            # We close, not the client: it may be sending more already.
                            self.stream.linger()
                        return
                    continue
                if ev is CLOSED:
                    return
                # PAUSED/Data/END here mean a bug in ordering; end the connection.
                return
        except wsgi.ClientGone:
            pass

    def read(self) -> bool:
        """Feed the next bytes; False when the connection should end."""
        h1 = self.h1
        idle = h1.idle
        pool = self.pool
        if idle and self.closing:
            self.close_idle()
            return False
        try:
            if idle:  # a new connection has client-header-timeout for its first request
                # Between requests it always waits on the watcher, even with the next request
                # there: otherwise a client quick to send its next request keeps this greenlet
                # serving it while every other connection waits (a p99 latency of 160 ms
                # instead of 10 ms with 64 wrk connections, as soon as there is work after a
                # response, such as the access log).
                wait = pool.keepalive_timeout if self.exchange.method else pool.header_timeout
                deadline = time.monotonic() + wait
                data = self.stream.recv("idle", deadline, False,
                                        deadline - pool.keepalive_timeout + PARK_AFTER)
            else:
                data = self.stream.recv("head", self.head_deadline)
        except Park:
            pool.park(self)
            return False
        except Expired:
            if not idle:
                self.send_error(ProtocolError(408, "request header timeout"))
            elif self.closing:
                self.close_idle()  # the drain's grace is over
            return False
        except OSError:
            return False
        if idle and data:
            self.head_deadline = time.monotonic() + pool.header_timeout
        h1.receive_data(data)
        return True

    def close_idle(self) -> None:
        """Close a keep-alive connection between requests without dropping a request: one that
        already arrived is served first; otherwise FIN, then read until the client closes."""
        stream = self.stream
        try:
            pending = stream.peek()
        except OSError:
            return
        if pending:
            self.h1.receive_data(stream.recv_now())
            self.head_deadline = time.monotonic() + self.pool.header_timeout
            self.h1.closing = True
            self._serve()  # serves it with Connection: close, then returns
            return
        stream.linger()

    def pull_body(self) -> bytes:
        """The next piece of the request body for wsgi.input; b"" at its end.

        The client's mistakes (a malformed or too large body, 408) reach the app as
        wsgi.ClientError: answered with their status, not logged as the app's failure."""
        try:
            return self._pull_body()
        except ProtocolError as e:
            raise wsgi.ClientError(e.status, e.reason) from None

    def _pull_body(self) -> bytes:
        h1 = self.h1
        while True:
            ev = h1.next_event()
            if type(ev) is Data:
                return ev.data
            if ev is END or ev is PAUSED:
                return b""
            if ev is NEED_DATA:
                req = h1.request
                if req is not None and req.expect_continue:
                    self._send(h1.informational())
                try:
                    data = self.stream.recv_for("body", self.pool.body_timeout)
                except Expired:
                    raise ProtocolError(408, "request body timeout") from None
                except OSError:
                    raise wsgi.ClientGone() from None
                if not data:
                    raise wsgi.ClientGone()
                h1.receive_data(data)
                continue
            return b""

    def send_error(self, e: ProtocolError) -> None:
        """Answer a request that could not be read (400, 408, 413, 414, 431, ...), log it in
        the access log as nginx does, and close."""
        data = self.h1.error_response(e.status, e.reason)
        self.exchange.refused(e.status, len(data) - data.index(b"\r\n\r\n") - 4)
        try:
            self._send(data)
        except wsgi.ClientGone:
            return
        self.stream.linger()

    # -- the writer: h1 framing onto the stream, for the exchange -------------------------------

    def respond(self, status: str, headers: list, body: bytes) -> None:
        if len(body) < JOIN_BELOW:
            data = self.h1.respond(status, headers, body)
            self.on_wire = True
            self.stream.send(data)
            return
        h1 = self.h1  # a large body goes out beside its head, not copied into one piece
        head = h1.start_response(status, headers, len(body))
        body = h1.body(body)
        tail = h1.end()  # b"" with a Content-Length
        self.on_wire = True
        if tail:
            self.stream.send(head + body + tail)
        elif body:
            self.stream.send_two(head, body)
        else:  # HEAD, 304: no body goes out
            self.stream.send(head)

    def start(self, status: str, headers: list, content_length: int | None) -> None:
        self._pending = self.h1.start_response(status, headers, content_length)

    def write(self, data: bytes) -> None:
        out = self.h1.body(data)
        if self._pending:
            out = self._pending + out
            self._pending = b""
        if out:
            self._send(out)

    def sendfile(self, file: Any, offset: int, count: int) -> int | None:
        mode = self.h1.body_mode
        if mode == "chunked":
            return None
        if self._pending:
            self._send(self._pending)
            self._pending = b""
        if count and mode == "raw":
            self.h1.body_sent(count)
            self.on_wire = True
            self.stream.sendfile(file.fileno(), offset, count)
            return count
        return 0

    def finish(self, tail: bytes) -> None:
        h1 = self.h1
        out = self._pending + (h1.body(tail) if tail else b"") + h1.end()
        self._pending = b""
        if out:
            self._send(out)

    def fail(self, code: int) -> None:
        """The response cannot be completed: cut it off if some of it went out, else answer
        `code`. Either way the connection closes after it."""
        self._pending = b""
        if self.on_wire:
            self.h1.abort()
            return
        self._send(self.h1.error_response(code))

    def _send(self, data: bytes) -> None:
        self.on_wire = True
        self.stream.send(data)


def _common_address(listeners) -> tuple[str, str] | None:
    """(SERVER_NAME, SERVER_PORT) shared by every connection the listeners accept: one address
    for all of them (a getsockname() less per connection). None when they differ, or for a
    wildcard address (0.0.0.0, ::), where each connection has its own local address."""
    found = set()
    for listener in listeners:
        try:
            name, port = _address(listener.sock.getsockname())
        except OSError:
            name, port = "localhost", "0"
        if port != "0":  # TCP: a unix listener says ("localhost", "0")
            try:
                if ipaddress.ip_address(name.partition("%")[0]).is_unspecified:
                    return None
            except ValueError:
                return None
        found.add((name, port))
    return found.pop() if len(found) == 1 else None


def _address(local) -> tuple[str, str]:
    if isinstance(local, tuple):
        return local[0], str(local[1])
    return "localhost", "0"




_APP_ERRORS = logging.getLogger("pyd.http")

"""Pool:FastCGI: WSGI apps behind nginx (`fastcgi_pass`), on the sans-IO codec in
protocols/fastcgi.py.

Per connection, one greenlet reads its Stream and feeds the codec; each request runs in a
greenlet of its own (requests may be multiplexed) through an Exchange, writing whole records
under the connection's lock. The app is chosen by APPNAME (an App: section), else by location
prefix on the request's path.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from pyd.net.stream import Expired, Stream, Sweeper
from pyd.pools.base import Pool
from pyd.protocols import fastcgi as fcgi
from pyd.protocols.h1 import REASONS
from pyd.web import wsgi
from pyd.web.exchange import Exchange, Site
from pyd.web.locations import build_router
from pyd.web.trusted import contains as trusted_network

log = logging.getLogger("pyd.fastcgi")

SEND_TIMEOUT = 60.0  # the web server took nothing of a response for this long: it is gone
BODY_BUFFER = 1 << 20  # per connection: past this, stop reading until the apps consume


class _Body:
    """STDIN of one request: the reader pushes chunks, the app pulls them."""

    __slots__ = ("chunks", "done", "waiter", "size", "conn", "too_large")

    def __init__(self, conn: FastCGIServerConnection):
        self.chunks: list[bytes] = []
        self.done = False
        self.waiter: Event | None = None  # made only if the app waits for the body
        self.size = 0
        self.conn = conn
        self.too_large = False

    def _wake(self) -> None:
        if self.waiter is not None:
            self.waiter.set()

    def push(self, data: bytes) -> None:
        self.size += len(data)
        limit = self.conn.pool.max_body
        if limit and self.size > limit:  # no CONTENT_LENGTH said so before: stop it here
            self.too_large = True
        else:
            self.chunks.append(data)
            self.conn.buffered += len(data)
        self._wake()

    def end(self) -> None:
        self.done = True
        self._wake()

    def pull(self) -> bytes:
        while not self.chunks:
            if self.too_large:
                raise wsgi.ClientError(413, "request body too large")
            if self.done:
                return b""
            if self.waiter is None:
                self.waiter = Event()
            self.waiter.clear()
            self.waiter.wait()
        data = self.chunks.pop(0)
        self.conn.buffered -= len(data)
        if self.conn.buffered < BODY_BUFFER:
            self.conn.room.set()
        return data


class FastCGIPool(Pool):
    connection_is_request = False

    def __init__(self, section, listeners, worker=None, settings=None):
        super().__init__(section, listeners, worker, settings)
        s = section.settings
        self.allowed = tuple(s["allowed-clients"])
        self.keepalive_timeout = s["keepalive-timeout"]
        self.body_timeout = s["client-body-timeout"]
        self.max_body = s["client-max-body-size"] or None
        self.site = Site(self.name, max_body=self.max_body, errors=log, error_stream=_ERRORS)
        if worker is not None:
            self.site.request_started = worker.request_started
        self.site.request_finished = self.finisher()
        self.sweeper = Sweeper(self._streams)

    def load(self, apps: dict) -> None:
        self.site.apps = apps
        self.site.router = build_router(self.section, apps)

    def start(self) -> None:
        super().start()
        self.sweeper.start()

    def _streams(self) -> list[Stream]:
        return [c.stream for c in self.connections.values()
                if type(c) is FastCGIServerConnection]

    def handle(self, sock, address: Any) -> None:
        if sock.family in (_stdsocket.AF_INET, _stdsocket.AF_INET6) and not trusted_network(
                self.allowed, address[0]):
            log.warning("%s: connection from %s refused (not in allowed-clients)", self.name,
                        address[0])
            return
        if sock.family in (_stdsocket.AF_INET, _stdsocket.AF_INET6):
            try:
                sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            except OSError:
                pass
        c = FastCGIServerConnection(self, sock)
        self.connections[gevent.getcurrent()] = c
        c.run()

    def shutdown(self, graceful: bool) -> bool:
        if graceful:
            for c in list(self.connections.values()):
                if isinstance(c, FastCGIServerConnection) and not c.closing:
                    c.closing = True
                    if c.stream.reading == "idle":
                        c.stream.interrupt(_Close())
        done = super().shutdown(graceful)
        if done:
            self.sweeper.stop()
        return done

    def close_all(self) -> None:
        super().close_all()
        self.sweeper.stop()


class _Close(Exception):
    """Thrown into a connection waiting between requests during a drain."""




class FastCGIServerConnection:
    def __init__(self, pool: FastCGIPool, sock):
        self.pool = pool
        self.stream = Stream(sock, wsgi.ClientGone, SEND_TIMEOUT)
        self.proto = fcgi.FastCGIConnection(max_conns=pool.max_connections,
                                            max_reqs=pool.max_connections, multiplex=True,
                                            max_params_size=256 * 1024,
                                            max_requests_in_flight=128, text_params=True)
        self.lock = Semaphore()
        self.requests: dict[int, gevent.Greenlet] = {}
        self.running: set[int] = set()  # request ids whose greenlet has started
        self.bodies: dict[int, _Body] = {}
        self.buffered = 0
        self.room = Event()
        self.room.set()
        self.closing = False
        self._seen_request = False

    def run(self) -> None:
        try:
            self._read_loop()
        finally:
            for g in list(self.requests.values()):
                g.kill(block=False)

    def _read_loop(self) -> None:
        proto = self.proto
        while True:
            if not self.room.is_set():
                self.room.wait()
            # Idle means no request between BEGIN_REQUEST and END_REQUEST, not merely none
            # running yet: a BEGIN_REQUEST may arrive alone, its PARAMS in the next read.
            idle = not proto.requests_in_flight
            if idle and (self.closing or (not proto.keep_conn and self._seen_request)):
                return
            try:
                data = self._recv(idle)
            except (_Close, Expired, OSError):
                return
            proto.receive_data(data)
            try:
                while self._dispatch(proto.next_event()):
                    pass
            except fcgi.ProtocolError as e:
                log.warning("%s: FastCGI protocol error, closing the connection: %s",
                            self.pool.name, e)
                return
            out = proto.data_to_send()
            if out:
                self.send(out)
            if not data:
                return

    def _recv(self, idle: bool) -> bytes:
        """The next bytes: at once if they are there, else wait until the deadline (which the
        pool's sweeper enforces)."""
        if idle:
            return self.stream.recv_for("idle", self.pool.keepalive_timeout)
        return self.stream.recv_for("body", self.pool.body_timeout)

    def _dispatch(self, ev) -> bool:
        """Act on one event; False when the codec needs more bytes or the peer left."""
        kind = type(ev)
        if kind is fcgi.Params:
            body = self.bodies[ev.request_id]
            self.requests[ev.request_id] = gevent.spawn(self.serve, ev.request_id, ev.params,
                                                        body)
            return True
        if kind is fcgi.Stdin:
            body = self.bodies.get(ev.request_id)
            if body is not None:
                body.push(ev.data)
                if self.buffered >= BODY_BUFFER:
                    self.room.clear()
            return True
        if kind is fcgi.StdinEnd:
            body = self.bodies.get(ev.request_id)
            if body is not None:
                body.end()
            return True
        if kind is fcgi.BeginRequest:
            self._seen_request = True
            self.bodies[ev.request_id] = _Body(self)
            return True
        if kind is fcgi.AbortRequest:
            rid = ev.request_id
            g = self.requests.get(rid)
            if g is not None and rid in self.running:
                g.kill(block=False)  # its finally closes the app's iterable and ends the id
            else:
                if g is not None:
                    g.kill(block=False)  # not started yet: it never will, so end it here
                self._end(rid, 1)
            return True
        if kind is fcgi.ConnectionClosed:
            return False
        return False  # NEED_DATA

    def _end(self, request_id: int, app_status: int = 0) -> None:
        self._forget(request_id)
        if self.proto.is_active(request_id):
            self.send(self.proto.end_request(request_id, app_status))
            self.close_if_done()

    def close_if_done(self) -> None:
        """Without FCGI_KEEP_CONN the web server waits for us to close after END_REQUEST."""
        if not self.proto.keep_conn and not self.proto.requests_in_flight:
            self.stream.shutdown_write()

    def _forget(self, request_id: int) -> None:
        """The request is over: what it left unread no longer holds the reader back."""
        body = self.bodies.pop(request_id, None)
        if body is not None and body.chunks:
            self.buffered -= sum(len(c) for c in body.chunks)
            body.chunks.clear()
            if self.buffered < BODY_BUFFER:
                self.room.set()
        self.requests.pop(request_id, None)
        self.running.discard(request_id)

    def send(self, data: bytes) -> None:
        """Whole records only, one writer at a time: multiplexed requests share the socket.

        A request killed (ABORT_REQUEST) while it waits for room finishes its records first:
        half a record would garble every other request on the connection."""
        with self.lock:
            self.stream.send(data, whole=True)

    # -- one request ----------------------------------------------------------------------------

    def serve(self, request_id: int, params: dict, body: _Body) -> None:
        t = _Response(self, request_id, params.get("REQUEST_METHOD", "GET"))
        status = 0
        self.running.add(request_id)
        try:
            Exchange(self.pool.site, t, body.pull).run_cgi(params)
            status = 0 if t.ok else 1
        except wsgi.ClientGone:
            status = 1
        except gevent.GreenletExit:
            status = 1  # ABORT_REQUEST or the connection went away
        finally:
            try:
                if t.cut:
                    self.stream.close()  # a response cut off must not look complete to nginx
                elif not t.ended:
                    self._end(request_id, status)
            except wsgi.ClientGone:
                pass
            self._forget(request_id)


class _Response:
    """The writer of one FastCGI request's response: a CGI head and STDOUT records."""

    __slots__ = ("conn", "rid", "head_only", "headers_sent", "_pending", "ok", "cut",
                 "status", "ended")

    def __init__(self, conn: FastCGIServerConnection, rid: int, method: str):
        self.conn = conn
        self.rid = rid
        self.head_only = method == "HEAD"
        self.headers_sent = False
        self._pending = b""
        self.ok = True
        self.cut = False
        self.ended = False  # END_REQUEST went out with the last of the response
        self.status = ""

    def _head(self, status: str, headers: list) -> bytes:
        parts = ["Status: ", status, "\r\n"]
        for name, value in headers:
            if "\n" in name or "\r" in name or ":" in name or "\n" in value or "\r" in value:
                raise ValueError(f"invalid response header {name!r}")
            parts += (name, ": ", value, "\r\n")
        parts.append("\r\n")
        self.status = status
        return "".join(parts).encode("latin-1")

    def respond(self, status: str, headers: list, body: bytes) -> None:
        head = self._head(status, headers)
        self.headers_sent = True
        proto = self.conn.proto
        data = proto.stdout(self.rid, head + (b"" if self.head_only else body))
        self._end_with(data)

    def _end_with(self, data: bytes) -> None:
        """The last STDOUT and END_REQUEST in one write (two writes wait on delayed ACKs)."""
        conn = self.conn
        conn._forget(self.rid)
        self.ended = True
        conn.send(data + conn.proto.end_request(self.rid, 0 if self.ok else 1))
        conn.close_if_done()

    def start(self, status: str, headers: list, content_length: int | None) -> None:
        self._pending = self._head(status, headers)
        self.headers_sent = True

    def write(self, data: bytes) -> None:
        if self.head_only:
            data = b""
        out = self._pending + data
        self._pending = b""
        if out:
            self.conn.send(self.conn.proto.stdout(self.rid, out))

    def sendfile(self, file: Any, offset: int, count: int) -> int | None:
        return None  # records must frame every byte: read and write instead

    def finish(self, tail: bytes) -> None:
        out = self._pending + (b"" if self.head_only else tail)
        data = self.conn.proto.stdout(self.rid, out) if out else b""
        self._pending = b""
        self._end_with(data)

    @property
    def on_wire(self) -> bool:
        return self.headers_sent and not self._pending

    def fail(self, code: int) -> None:
        self.ok = False
        sent = self.headers_sent and not self._pending
        self._pending = b""
        if sent:
            self.cut = True
            return
        status = f"{code} {REASONS.get(code, 'Error')}"
        text = status[4:].encode() + b"\n"
        self.respond(status, [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(text)))], text)


_ERRORS = wsgi.ErrorStream(logging.getLogger("pyd.wsgi.errors"))

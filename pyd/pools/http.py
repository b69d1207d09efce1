"""Pool:HTTPServer: the gevent driver around the sans-IO HTTP/1.1 core, and the WSGI environ.

One greenlet per connection reads, feeds h1, routes each request to its location's app and
writes the response in as few writes as possible (head and body together). Draining closes
idle keep-alive connections politely and lets busy ones finish with `Connection: close`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket as _stdsocket
import time
from typing import Any

import gevent
from gevent import socket

from pyd.system import memory
from pyd.log.plan import access_channel
from pyd.pools.base import KEEP_OPEN, Pool
from pyd.web import wsgi
from pyd.web.accesslog import AccessLog
from pyd.web.locations import build_router
from pyd.web.compress import Compression
from pyd.protocols.h1 import (
    CLOSED,
    END,
    NEED_DATA,
    PAUSED,
    REASONS,
    Data,
    H1Connection,
    Limits,
    ProtocolError,
    Request,
)
from pyd.web.routing import BadTarget, Route, Router, decode_path, split_target

RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 20  # one sendfile(2) call at most, so other greenlets get their turn
LINGER_TIME = 2.0  # after the last response: read and drop what the client still sends
LINGER_BYTES = 1 << 20
SWEEP_INTERVAL = 0.5  # how often deadlines are checked: timeouts are this precise
PARK_AFTER = 0.5  # idle this long, a keep-alive connection gives up its greenlet
DRAIN_GRACE = 1.0  # draining: a connection idle only briefly may still get one more request
TRIM_AFTER_PARKING = 256  # parked this many at once: hand the freed stacks back to the OS


_ENV_NAMES: dict[bytes, str] = {}
_SPECIAL = {b"CONTENT_TYPE": "CONTENT_TYPE", b"CONTENT_LENGTH": "CONTENT_LENGTH"}


def environ_key(name: bytes) -> str:
    """The environ key of a header, or "" for names with "_" (dropped: they could pose as
    their "-" twins once translated, as nginx and gunicorn also refuse)."""
    key = _ENV_NAMES.get(name)
    if key is None:
        if b"_" in name:
            key = ""
        else:
            upper = name.upper().replace(b"-", b"_")
            key = _SPECIAL.get(upper) or "HTTP_" + upper.decode("latin-1")
        if len(_ENV_NAMES) < 4096:
            _ENV_NAMES[name] = key
    return key


class _Expired(Exception):
    """Thrown by the pool's sweeper into a connection that waited past its deadline."""


class _Park(Exception):
    """Thrown by the sweeper into a connection idle for PARK_AFTER: park it."""


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
        self.compression = Compression.from_settings(s)
        self.buffering = s["request-buffering"]
        self.buffer_size = s["client-body-buffer-size"]
        self.temp_path = s["client-body-temp-path"]
        self.router: Router | None = None
        # SERVER_NAME and SERVER_PORT, when every connection has the same local address.
        self.server_address = _common_address(listeners)
        self.scheme = "http"
        # The environ keys every request of this pool shares; a request copies this dict.
        self.template = {
            "SERVER_SOFTWARE": "pyd", "GATEWAY_INTERFACE": "CGI/1.1",
            "wsgi.version": (1, 0), "wsgi.url_scheme": self.scheme,
            "wsgi.input_terminated": True,  # wsgi.input ends with the body, chunked or not
            "wsgi.errors": _ERRORS, "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": False, "wsgi.file_wrapper": wsgi.FileWrapper,
        }
        self._sweeper: gevent.Greenlet | None = None

    def load(self, apps: dict) -> None:
        self.router = build_router(self.section, apps)

    def start(self) -> None:
        super().start()
        self._sweeper = gevent.spawn(self._sweep)

    def handle(self, conn: socket.socket, address: Any) -> Any:
        c = HTTPConnection(self, conn, address)
        self.connections[gevent.getcurrent()] = c
        return c.run()

    # -- parking: an idle keep-alive connection costs a watcher, not a greenlet -----------------

    def park(self, c: HTTPConnection) -> None:
        """Keep `c` open without its greenlet; a new greenlet resumes it when bytes arrive."""
        watcher = c.sock._read_event  # the socket's own: no greenlet waits on it now
        c.parked = watcher
        self.connections[c] = c
        watcher.start(self._unpark, c)

    def _unpark(self, c: HTTPConnection) -> None:
        """Bytes arrived (or a drain wants it closed): resume the connection in a greenlet."""
        self._stop_watching(c)
        g = self.spawn_connection(c.sock, None, c.run)
        self.connections[g] = c

    def _stop_watching(self, c: HTTPConnection) -> None:
        c.parked.stop()
        c.parked = None
        self.connections.pop(c, None)

    def _sweep(self) -> None:
        """Timeouts and parking, once a second for every connection: cheaper than a timer
        per read."""
        hub = gevent.get_hub()
        while True:
            gevent.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            park_before = now + self.keepalive_timeout - PARK_AFTER
            parking = 0
            for c in list(self.connections.values()):
                if type(c) is not HTTPConnection:
                    continue
                if c.parked is not None:
                    if now > c.deadline:  # keepalive-timeout: just close it
                        self._stop_watching(c)
                        self.closed(c.sock)
                elif c.waiting:
                    if now > c.deadline:
                        c.expire(hub)
                    elif c.waiting == "idle" and c.deadline < park_before and not c.closing:
                        hub.cancel_wait(c.sock._read_event, _Park())
                        parking += 1
            if parking >= TRIM_AFTER_PARKING:
                gevent.sleep(0)  # let them park first
                memory.trim()

    def shutdown(self, graceful: bool) -> bool:
        if graceful:
            for c in list(self.connections.values()):
                if type(c) is HTTPConnection and not c.closing:
                    c.closing = True
                    c.h1.closing = True
                    if c.parked is not None:
                        self._unpark(c)  # resumed with closing set: it closes politely
                    elif c.waiting == "idle":
                        # Between two requests of a busy client, whose next request may be on
                        # the wire already: closing now would lose it (a client may retry
                        # that, wrk and many others do not). Wait a little for it, answer it
                        # with Connection: close; the sweeper ends the wait at the deadline.
                        c.deadline = min(c.deadline, time.monotonic() + DRAIN_GRACE)
        done = super().shutdown(graceful)
        if done and self._sweeper is not None:
            self._sweeper.kill(block=False)
        return done

    def close_all(self) -> None:
        for c in [c for c in self.connections.values()
                  if type(c) is HTTPConnection and c.parked is not None]:
            self._stop_watching(c)
            self.closed(c.sock)
        super().close_all()
        if self._sweeper is not None:
            self._sweeper.kill(block=False)


class HTTPConnection:
    """One client connection: its h1 state, its waits and deadlines, its transport methods."""

    __slots__ = ("pool", "sock", "raw", "h1", "closing", "waiting", "deadline", "head_deadline",
                 "parked",
                 "headers_sent", "on_wire", "_pending", "status", "body_bytes", "encoder",
                 "accept", "method", "remote_addr", "remote_port", "client", "server",
                 "trusted")

    def __init__(self, pool: HTTPServerPool, sock: socket.socket, address: Any):
        self.pool = pool
        self.sock = sock
        self.raw = sock._sock  # the non-blocking socket under gevent's: tried before waiting
        self.h1 = H1Connection(pool.limits, pool.server_tokens)
        self.closing = False
        self.waiting = ""  # what a blocked read or write waits for: idle, head, body, send
        self.deadline = 0.0  # ... and until when (the sweeper's business)
        self.head_deadline = 0.0
        self.parked = None  # the read watcher while parked (no greenlet)
        self.headers_sent = False
        self.on_wire = False  # some of this response's bytes were sent
        self._pending = b""
        self.status = ""
        self.body_bytes = 0
        self.encoder = None  # compressing the current response's body
        self.accept: str | None = None  # the current request's Accept-Encoding
        self.method = ""
        if isinstance(address, tuple):
            self.remote_addr, self.remote_port = address[0], str(address[1])
        else:
            self.remote_addr, self.remote_port = "", ""
        # SERVER_NAME and SERVER_PORT: the pool's, or asked of the socket when first needed
        self.server: tuple[str, str] | None = pool.server_address
        self.trusted = bool(pool.trusted) and _trusted(self.remote_addr, pool.trusted)

    # -- the connection's life ------------------------------------------------------------------

    def run(self) -> Any:
        """Serve requests until the connection ends (None) or is parked (KEEP_OPEN)."""
        try:
            return self._serve()
        finally:
            if self.parked is None:
                self.h1.release()  # its parser points back at it: let refcounting free both

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
                        return KEEP_OPEN if self.parked is not None else None
                    continue
                if type(ev) is Request:
                    self.handle_request(ev)
                    if not h1.keep_alive:
                        if ev.keep_alive or h1.idle is False:
                            # We close, not the client: it may be sending more already.
                            self.linger()
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
        if idle and self.closing:
            self.close_idle()
            return False
        try:
            if idle:  # a new connection has client-header-timeout for its first request
                wait = self.pool.keepalive_timeout if self.method else self.pool.header_timeout
                data = self._recv("idle", time.monotonic() + wait)
            else:
                data = self._recv("head", self.head_deadline)
        except _Park:
            self.pool.park(self)
            return False
        except _Expired:
            if not idle:
                self.send_error(ProtocolError(408, "request header timeout"))
            elif self.closing:
                self.close_idle()  # the drain's grace is over
            return False
        except OSError:
            return False
        if idle and data:
            self.head_deadline = time.monotonic() + self.pool.header_timeout
        h1.receive_data(data)
        return True

    def _recv(self, waiting: str, deadline: float) -> bytes:
        """One read: at once if bytes are there, else wait (the sweeper enforces deadline).

        Between requests it always waits on the watcher, even with the next request there:
        otherwise a client quick to send its next request keeps this greenlet serving it
        while every other connection waits (a p99 latency of 160 ms instead of 10 ms with
        64 wrk connections, as soon as there is work after a response, such as the access log).
        """
        if waiting != "idle":
            try:
                return self.raw.recv(RECV_SIZE)
            except BlockingIOError:
                pass
        sock = self.sock
        self.waiting, self.deadline = waiting, deadline
        try:
            while True:
                sock._wait(sock._read_event)
                try:
                    return self.raw.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
        finally:
            self.waiting = ""

    def expire(self, hub) -> None:
        """The sweeper found us waiting past the deadline: wake the wait with _Expired."""
        watcher = self.sock._write_event if self.waiting == "send" else self.sock._read_event
        hub.cancel_wait(watcher, _Expired())

    def close_idle(self) -> None:
        """Close a keep-alive connection between requests without dropping a request: one that
        already arrived is served first; otherwise FIN, then read until the client closes."""
        try:
            pending = self.raw.recv(RECV_SIZE, _stdsocket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pending = None
        except OSError:
            return
        if pending:
            self.h1.receive_data(self.raw.recv(RECV_SIZE))
            self.head_deadline = time.monotonic() + self.pool.header_timeout
            self.h1.closing = True
            self._serve()  # serves it with Connection: close, then returns
            return
        self.linger()

    def linger(self) -> None:
        """Half-close and drain what the client still sends, so our last bytes are not lost
        to a reset (nginx's lingering close)."""
        try:
            self.sock.shutdown(_stdsocket.SHUT_WR)
            total = 0
            deadline = time.monotonic() + LINGER_TIME
            while total < LINGER_BYTES:
                data = self._recv("linger", deadline)
                if not data:
                    break
                total += len(data)
        except (OSError, _Expired):
            pass

    # -- one request ----------------------------------------------------------------------------

    def handle_request(self, req: Request) -> None:
        pool = self.pool
        worker = pool.worker
        token = worker.request_started(req) if worker is not None else None
        started = time.monotonic() if pool.access is not None else 0.0
        self.headers_sent = self.on_wire = False
        self._pending = b""
        self.status = ""
        self.body_bytes = 0
        self.encoder = self.accept = None
        self.method = req.method
        self.client = self.remote_addr  # or the X-Forwarded-For of a trusted proxy
        try:
            raw_path, query = split_target(req.target)
            try:
                path = decode_path(raw_path)
            except BadTarget:
                self.simple(400, "Bad Request\n")
                return
            router = pool.router
            route = router.match(path) if router else None
            redirect = router.redirect_for(path) if router else None
            if route is None or redirect:
                if redirect:
                    location = redirect + ("?" + query.decode("latin-1") if query else "")
                    self.simple(301, "Moved Permanently\n", [("Location", location)])
                else:
                    self.simple(404, "Not Found\n")
                return
            try:
                environ = self.environ(req, route, path, query)
            except wsgi.ClientError as e:  # request-buffering: the body was refused
                self.fail(e)
                return
            body = environ["wsgi.input"]  # ours: middleware may put a wrapper in its place
            try:
                wsgi.run(route.app, environ, self, _APP_ERRORS)
            finally:
                if body is not _NO_BODY:
                    body.close()
        finally:
            if token is not None:
                worker.request_finished(token)
            if pool.access is not None and self.status:
                pool.access.log(self, req, started)

    def environ(self, req: Request, route: Route, path: str, query: bytes) -> dict:
        env = self.pool.template.copy()
        server = self.server
        if server is None:
            server = self.server = _server_address(self.raw)
        env["SERVER_NAME"], env["SERVER_PORT"] = server
        env["REMOTE_ADDR"] = self.remote_addr
        env["REMOTE_PORT"] = self.remote_port
        env["REQUEST_METHOD"] = req.method
        env["SCRIPT_NAME"] = route.script_name
        env["PATH_INFO"] = path[len(route.script_name):] if route.script_name else path
        env["QUERY_STRING"] = query.decode("latin-1") if query else ""
        env["REQUEST_URI"] = env["RAW_URI"] = req.target.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/1.1" if req.version == "1.1" else "HTTP/1.0"
        if not req.has_body:
            env["wsgi.input"] = _NO_BODY
        elif self.pool.buffering:
            env["wsgi.input"] = wsgi.spool(self.pull_body, self.pool.buffer_size,
                                           self.pool.temp_path)
        else:
            env["wsgi.input"] = wsgi.BodyReader(self.pull_body)
        for name, value in req.headers:
            key = _ENV_NAMES.get(name) or environ_key(name)
            if not key:
                continue
            old = env.get(key)
            text = value.decode("latin-1")
            if old is None:
                env[key] = text
            else:
                env[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + text
        if self.trusted:
            _apply_forwarded(env)
            self.client = env["REMOTE_ADDR"]
        if self.pool.compression is not None:
            self.accept = env.get("HTTP_ACCEPT_ENCODING")
        return env

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
                    data = self._recv("body", time.monotonic() + self.pool.body_timeout)
                except _Expired:
                    raise ProtocolError(408, "request body timeout") from None
                except OSError:
                    raise wsgi.ClientGone() from None
                if not data:
                    raise wsgi.ClientGone()
                h1.receive_data(data)
                continue
            return b""

    # -- the transport wsgi.run writes through --------------------------------------------------

    def respond(self, status: str, headers: list, body: bytes) -> None:
        compression = self.pool.compression
        if compression is not None:
            encoder, headers = compression.decide(self.method, status, headers, len(body),
                                                  self.accept)
            if encoder is not None:
                body = encoder.whole(body)
        data = self.h1.respond(status, headers, body)
        self.headers_sent = True
        self.status = status
        self.body_bytes = len(body)
        self._send(data)

    def start(self, status: str, headers: list, content_length: int | None) -> None:
        compression = self.pool.compression
        if compression is not None:
            self.encoder, headers = compression.decide(self.method, status, headers,
                                                       content_length, self.accept)
            if self.encoder is not None:
                content_length = None
        self._pending = self.h1.start_response(status, headers, content_length)
        self.headers_sent = True
        self.status = status

    def write(self, data: bytes) -> None:
        if self.encoder is not None:
            data = self.encoder.compress(data)
        out = self.h1.body(data)
        self.body_bytes += len(data)
        if self._pending:
            out = self._pending + out
            self._pending = b""
        if out:
            self._send(out)

    def sendfile(self, file: Any, offset: int, count: int | None) -> bool:
        mode = self.h1.body_mode
        if count is None or mode == "chunked" or self.encoder is not None:
            return False
        if self._pending:
            self._send(self._pending)
            self._pending = b""
        if count and mode == "raw":
            self.h1.body_sent(count)
            self.on_wire = True
            self._sendfile(file.fileno(), offset, count)
            self.body_bytes += count
        return True

    def _sendfile(self, fd: int, offset: int, count: int) -> None:
        """sendfile(2) on the non-blocking socket, waiting for room cooperatively (gevent's
        socket.sendfile() reads the file and send()s it instead)."""
        sock = self.sock
        out = sock.fileno()
        while count:
            try:
                sent = os.sendfile(out, fd, offset, min(count, SENDFILE_CHUNK))
            except BlockingIOError:
                self._wait_writable()
                continue
            except OSError:
                raise wsgi.ClientGone() from None
            if not sent:
                raise RuntimeError("the file is shorter than the length announced for it")
            offset += sent
            count -= sent

    def _wait_writable(self) -> None:
        sock = self.sock
        self.waiting, self.deadline = "send", time.monotonic() + self.pool.send_timeout
        try:
            sock._wait(sock._write_event)
        except (_Expired, OSError):
            raise wsgi.ClientGone() from None
        finally:
            self.waiting = ""

    def finish(self) -> None:
        if self.encoder is not None:
            tail = self.encoder.finish()
            self.encoder = None
            self.body_bytes += len(tail)
            self._pending += self.h1.body(tail)
        out = self._pending + self.h1.end()
        self._pending = b""
        if out:
            self._send(out)

    def fail(self, exc: BaseException | None) -> None:
        """The app failed: its status (400, 408, 413) or a 500 if nothing went out yet, else
        cut the response off. Either way the connection closes after it."""
        self._pending = b""
        self.encoder = None
        if self.on_wire:
            self.h1.abort()
            return
        status = exc.status if isinstance(exc, (ProtocolError, wsgi.ClientError)) and not \
            exc.local else 500
        self.status = str(status)
        self._send(self.h1.error_response(status))

    def simple(self, code: int, text: str, headers: list | None = None) -> None:
        """A small response of pyd's own (404, 301, ...)."""
        self.respond(f"{code} {REASONS.get(code, '')}",
                     [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])],
                     text.encode())

    def send_error(self, e: ProtocolError) -> None:
        """Answer a request that could not be read (400, 408, 413, 414, 431, ...), log it in
        the access log as nginx does, and close."""
        self.status = f"{e.status}"
        data = self.h1.error_response(e.status, e.reason)
        self.body_bytes = len(data) - data.index(b"\r\n\r\n") - 4
        self.client = self.remote_addr
        if self.pool.access is not None:
            self.pool.access.log(self, None, time.monotonic())
        try:
            self._send(data)
        except wsgi.ClientGone:
            return
        self.linger()

    def _send(self, data: bytes) -> None:
        """Write it all: at once when the socket has room (the common case), else in parts."""
        self.on_wire = True
        raw = self.raw
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise wsgi.ClientGone() from None
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._wait_writable()
            try:
                view = view[raw.send(view):]
            except BlockingIOError:
                continue
            except OSError:
                raise wsgi.ClientGone() from None


def _common_address(listeners) -> tuple[str, str] | None:
    """(SERVER_NAME, SERVER_PORT) shared by every connection the listeners accept: one address
    for all of them (a getsockname() less per connection). None when they differ, or for a
    wildcard address (0.0.0.0, ::), where each connection has its own local address."""
    found = set()
    for listener in listeners:
        name, port = _server_address(listener.sock)
        if port != "0":  # TCP: a unix listener says ("localhost", "0")
            try:
                if ipaddress.ip_address(name.partition("%")[0]).is_unspecified:
                    return None
            except ValueError:
                return None
        found.add((name, port))
    return found.pop() if len(found) == 1 else None


def _server_address(sock) -> tuple[str, str]:
    try:
        local = sock.getsockname()
    except OSError:
        return "localhost", "0"
    if isinstance(local, tuple):
        return local[0], str(local[1])
    return "localhost", "0"


def _trusted(addr: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _apply_forwarded(env: dict) -> None:
    """Behind a trusted proxy: the client's address and scheme from X-Forwarded-*."""
    forwarded = env.get("HTTP_X_FORWARDED_FOR")
    if forwarded:
        env["REMOTE_ADDR"] = forwarded.split(",")[-1].strip() or env["REMOTE_ADDR"]
    proto = env.get("HTTP_X_FORWARDED_PROTO", "").strip().lower()
    if proto in ("http", "https"):
        env["wsgi.url_scheme"] = proto


_ERRORS = wsgi.ErrorStream()
_NO_BODY = wsgi.BodyReader(None)  # one for every request without a body: it holds nothing
_APP_ERRORS = logging.getLogger("pyd.http")

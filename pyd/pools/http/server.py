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
from gevent.socket import wait_write

from ..base import Pool
from . import wsgi
from .accesslog import AccessLog
from .apps import location_app, resolve_app
from .compress import Compression
from .h1 import (
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
from .routing import BadTarget, Route, Router, decode_path, split_target

RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 20  # one sendfile(2) call at most, so other greenlets get their turn
LINGER_TIME = 2.0  # after the last response: read and drop what the client still sends
LINGER_BYTES = 1 << 20


class _Close(Exception):
    """Thrown into a connection idling between requests: close it politely."""


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
        self.access = AccessLog.create(s["access-log"], self.name)
        self.compression = Compression.from_settings(s)
        self.router: Router | None = None
        self.scheme = "http"

    def load(self, apps: dict) -> None:
        routes = []
        default = self.section.settings["app"]
        if default is not None:
            routes.append(Route("/", resolve_app(default, apps), self.section))
        for loc in self.section.blocks("location"):
            routes.append(Route(loc.arg, location_app(loc, apps), loc))
        self.router = Router(routes)

    def handle(self, conn: socket.socket, address: Any) -> None:
        c = HTTPConnection(self, conn, address)
        self.connections[gevent.getcurrent()] = c
        c.run()

    def shutdown(self, graceful: bool) -> bool:
        if graceful:
            hub = gevent.get_hub()
            for c in list(self.connections.values()):
                if isinstance(c, HTTPConnection) and not c.closing:
                    c.closing = True
                    c.h1.closing = True
                    if c.waiting_idle:
                        # Thrown only if it still waits in recv: a greenlet already woken by a
                        # request must not be interrupted in the middle of answering it.
                        hub.cancel_wait(c.sock._read_event, _Close())
        return super().shutdown(graceful)


class HTTPConnection:
    """One client connection: its h1 state, its environ template, its transport methods."""

    def __init__(self, pool: HTTPServerPool, sock: socket.socket, address: Any):
        self.pool = pool
        self.sock = sock
        self.h1 = H1Connection(pool.limits, pool.server_tokens)
        self.closing = False
        self.waiting_idle = False
        self.headers_sent = False
        self.on_wire = False  # some of this response's bytes were sent
        self._pending = b""
        self._timeout: float | None = None
        self.status = ""
        self.body_bytes = 0
        self.compression = pool.compression
        self.encoder = None  # compressing the current response's body
        self.accept: str | None = None  # the current request's Accept-Encoding
        self.method = ""
        family = sock.family
        if family in (_stdsocket.AF_INET, _stdsocket.AF_INET6):
            try:
                sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            except OSError:
                pass
            remote_addr, remote_port = address[0], str(address[1])
            local = sock.getsockname()
            server_name, server_port = local[0], str(local[1])
        else:
            remote_addr, remote_port = "", ""
            server_name, server_port = "localhost", "0"
        scheme = pool.scheme
        self.trusted = bool(pool.trusted) and _trusted(remote_addr, pool.trusted)
        self.remote_addr = remote_addr
        self.base = {
            "SERVER_NAME": server_name, "SERVER_PORT": server_port,
            "REMOTE_ADDR": remote_addr, "REMOTE_PORT": remote_port,
            "SERVER_SOFTWARE": "pyd", "GATEWAY_INTERFACE": "CGI/1.1",
            "wsgi.version": (1, 0), "wsgi.url_scheme": scheme,
            "wsgi.errors": _ERRORS, "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": False, "wsgi.file_wrapper": wsgi.FileWrapper,
        }

    # -- the connection's life ------------------------------------------------------------------

    def run(self) -> None:
        h1 = self.h1
        try:
            while True:
                try:
                    ev = h1.next_event()
                except ProtocolError as e:
                    self.send_error(e)
                    return
                if ev is NEED_DATA:
                    if not self.read():
                        return
                    continue
                if type(ev) is Request:
                    self.handle_request(ev)
                    if not h1.keep_alive:
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
        if h1.idle:
            if self.closing:
                self.close_idle()
                return False
            timeout = self.pool.keepalive_timeout
            self.waiting_idle = True
            deadline = None
        else:
            deadline = self._head_deadline
            timeout = max(0.0, deadline - time.monotonic())
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            data = self.sock.recv(RECV_SIZE)
        except _Close:
            self.waiting_idle = False
            self.close_idle()
            return False
        except TimeoutError:
            if deadline is not None:
                self.send_error(ProtocolError(408, "request header timeout"))
            return False
        except OSError:
            return False
        finally:
            self.waiting_idle = False
        if h1.idle and data:
            self._head_deadline = time.monotonic() + self.pool.header_timeout
        h1.receive_data(data)
        return True

    _head_deadline = 0.0

    def close_idle(self) -> None:
        """Close a keep-alive connection between requests without dropping a request: one that
        already arrived is served first; otherwise FIN, then read until the client closes."""
        try:
            pending = self.sock.recv(RECV_SIZE, _stdsocket.MSG_PEEK | _stdsocket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pending = None
        except OSError:
            return
        if pending:
            data = self.sock.recv(RECV_SIZE)
            self.h1.receive_data(data)
            self._head_deadline = time.monotonic() + self.pool.header_timeout
            self.h1.closing = True
            self.run()  # serves it with Connection: close, then returns
            return
        self.linger()

    def linger(self) -> None:
        """Half-close and drain what the client still sends, so our last bytes are not lost
        to a reset (nginx's lingering close)."""
        sock = self.sock
        try:
            sock.shutdown(_stdsocket.SHUT_WR)
            sock.settimeout(LINGER_TIME)
            total = 0
            deadline = time.monotonic() + LINGER_TIME
            while total < LINGER_BYTES and time.monotonic() < deadline:
                data = sock.recv(RECV_SIZE)
                if not data:
                    break
                total += len(data)
        except OSError:
            pass

    # -- one request ----------------------------------------------------------------------------

    def handle_request(self, req: Request) -> None:
        pool = self.pool
        worker = pool.worker
        token = worker.request_started(req) if worker is not None else None
        started = time.monotonic()
        self.headers_sent = self.on_wire = False
        self._pending = b""
        self.status = ""
        self.body_bytes = 0
        self.encoder = self.accept = None
        self.method = req.method
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
            environ = self.environ(req, route, path, query)
            wsgi.run(route.app, environ, self, _APP_ERRORS)
        finally:
            if token is not None:
                worker.request_finished(token)
            if pool.access is not None and self.status:
                pool.access.log(self, req, started)

    def environ(self, req: Request, route: Route, path: str, query: bytes) -> dict:
        env = self.base.copy()
        env["REQUEST_METHOD"] = req.method
        env["SCRIPT_NAME"] = route.script_name
        env["PATH_INFO"] = path[len(route.script_name):] if route.script_name else path
        env["QUERY_STRING"] = query.decode("latin-1") if query else ""
        env["REQUEST_URI"] = env["RAW_URI"] = req.target.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/1.1" if req.version == "1.1" else "HTTP/1.0"
        env["wsgi.input"] = wsgi.BodyReader(self.pull_body if req.has_body else None)
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
        if self.compression is not None:
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
                if self._timeout != self.pool.body_timeout:
                    self.sock.settimeout(self.pool.body_timeout)
                    self._timeout = self.pool.body_timeout
                try:
                    data = self.sock.recv(RECV_SIZE)
                except TimeoutError:
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
        if self.compression is not None:
            encoder, headers = self.compression.decide(self.method, status, headers, len(body),
                                                       self.accept)
            if encoder is not None:
                body = encoder.whole(body)
        data = self.h1.respond(status, headers, body)
        self.headers_sent = True
        self.status = status
        self.body_bytes = len(body)
        self._send(data)

    def start(self, status: str, headers: list, content_length: int | None) -> None:
        if self.compression is not None:
            self.encoder, headers = self.compression.decide(self.method, status, headers,
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
        out = self.sock.fileno()
        timeout = self.pool.send_timeout
        while count:
            try:
                sent = os.sendfile(out, fd, offset, min(count, SENDFILE_CHUNK))
            except BlockingIOError:
                try:
                    wait_write(out, timeout=timeout)
                except (TimeoutError, OSError):
                    raise wsgi.ClientGone() from None
                continue
            except OSError:
                raise wsgi.ClientGone() from None
            if not sent:
                raise RuntimeError("the file is shorter than the length announced for it")
            offset += sent
            count -= sent

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
        self.status = f"{e.status}"
        try:
            self._send(self.h1.error_response(e.status, e.reason))
        except wsgi.ClientGone:
            return
        self.linger()

    def _set_send_timeout(self) -> None:
        if self._timeout != self.pool.send_timeout:
            self.sock.settimeout(self.pool.send_timeout)
            self._timeout = self.pool.send_timeout

    def _send(self, data: bytes) -> None:
        self.on_wire = True
        try:
            if self._timeout != self.pool.send_timeout:
                self.sock.settimeout(self.pool.send_timeout)
                self._timeout = self.pool.send_timeout
            self.sock.sendall(data)
        except OSError:
            raise wsgi.ClientGone() from None


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
_APP_ERRORS = logging.getLogger("pyd.http")

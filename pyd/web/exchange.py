"""One request, whatever carried it: route, environ, body, the WSGI app, compression, observers.

A driver (HTTP/1.1, FastCGI; next HTTP/2) hands an Exchange a neutral request head (an h1
Request, or the CGI params a web server sent), a function that pulls the next piece of the body
(b"" at its end) and a writer that frames and sends the response (see `Writer`). The exchange
is the WSGI transport wsgi.run writes through; when the request is over it hands a frozen
RequestRecord to the pool (`request_finished`) and to the site's observers (the access log;
metrics next). Nothing here knows sockets, gevent or the pools.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from pyd.protocols.h1 import REASONS, ProtocolError
from pyd.web import wsgi
from pyd.web.routing import BadTarget, Route, Router, decode_path, split_target


class RequestRecord(NamedTuple):
    """What one request was, for observers: the access log, metrics. Frozen (a tuple).

    `status` is the status line as sent ("200 OK"; "" if nothing was answered), `code` its
    number; `bytes_out` counts body bytes after compression, `bytes_in` the request body read;
    `duration` in seconds, `time` the wall clock at the end (0.0 when the site has no
    observers: only they need it). A request that could not be read
    (400, 408, 414, 431...) has an empty `method` and `target`."""

    pool: str
    location: str  # the prefix of the location that served it ("" when none matched)
    method: str
    target: bytes  # the request-target as sent (REQUEST_URI)
    path: str  # decoded, dot-segments resolved ("" when it could not be)
    version: str  # "1.1", "1.0"
    status: str
    bytes_in: int
    bytes_out: int
    duration: float
    client: str  # the peer, or the client a trusted proxy names (real-ip-from)
    time: float
    headers: Any  # the request's (name, value) byte pairs, as sent

    @property
    def code(self) -> int:
        status = self.status
        return int(status[:3]) if status[:3].isdigit() else 0

    def header(self, name: bytes) -> bytes | None:
        """The first value of a request header, by its lowercase name."""
        for key, value in self.headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None

    @property
    def user_agent(self) -> bytes | None:
        return self.header(b"user-agent")

    @property
    def referer(self) -> bytes | None:
        return self.header(b"referer")


Observer = Callable[[RequestRecord], None]
_new_record = tuple.__new__


class Writer(Protocol):
    """The driver's side of a response: framing it for its protocol and sending it.

    `on_wire` is true once some of the response left. `sendfile` returns the body bytes it
    sent (0 when the response has no body, HEAD), or None when it cannot (then the exchange
    writes instead). `finish(tail)` sends the last body bytes with the end of the response.
    `fail(code)`: answer `code` if nothing went out yet, else cut the response off."""

    on_wire: bool

    def respond(self, status: str, headers: list, body: bytes) -> None: ...
    def start(self, status: str, headers: list, content_length: int | None) -> None: ...
    def write(self, data: bytes) -> None: ...
    def sendfile(self, file: Any, offset: int, count: int) -> int | None: ...
    def finish(self, tail: bytes) -> None: ...
    def fail(self, code: int) -> None: ...


def _no_token(what: Any) -> None:
    return None


def _nothing(token: Any, record: RequestRecord) -> None:
    pass


class Site:
    """What every exchange of one pool shares: its routes, the environ keys all its requests
    have, compression, request buffering, trusted proxies, and who hears of each request."""

    def __init__(self, name: str, *, scheme: str = "http", server_address=None,
                 trusted: tuple = (), compression=None, buffering: bool = False,
                 buffer_size: int = 0, temp_path: str | None = None, max_body: int | None = None,
                 errors: logging.Logger | None = None, error_stream=None):
        self.name = name
        self.router: Router | None = None
        self.apps: dict = {}  # App: sections by name (FastCGI's APPNAME)
        self.server_address = server_address  # (SERVER_NAME, SERVER_PORT) when shared
        self.trusted = trusted
        self.compression = compression
        self.buffering = buffering
        self.buffer_size = buffer_size
        self.temp_path = temp_path
        self.max_body = max_body
        self.errors = errors or logging.getLogger("pyd.wsgi")
        self.observers: list[Observer] = []
        # the pool's: a token for the worker's table of requests in flight, and the end
        self.request_started: Callable[[Any], Any] = _no_token
        self.request_finished: Callable[[Any, RequestRecord], None] = _nothing
        stream = error_stream or _ERRORS
        # The environ keys every request of this site shares; a request copies this dict.
        self.template = {
            "SERVER_SOFTWARE": "pyd", "GATEWAY_INTERFACE": "CGI/1.1",
            "wsgi.version": (1, 0), "wsgi.url_scheme": scheme,
            "wsgi.input_terminated": True,  # wsgi.input ends with the body, chunked or not
            "wsgi.errors": stream, "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": False, "wsgi.file_wrapper": wsgi.FileWrapper,
        }
        self.cgi_template = {k: v for k, v in self.template.items()
                             if k.startswith("wsgi.")}

    def observe(self, observer: Observer) -> None:
        self.observers.append(observer)


class Exchange:
    """The requests of one connection, one at a time (HTTP/1.1), or one request (FastCGI).

    It is the WSGI transport of wsgi.run: compression is decided here, framing and sending
    are the writer's."""

    __slots__ = ("site", "writer", "pull", "remote_addr", "remote_port", "server", "trusted",
                 "client", "headers_sent", "status", "bytes_in", "bytes_out", "encoder",
                 "accept", "method", "location")

    def __init__(self, site: Site, writer: Writer, pull: Callable[[], bytes] | None,
                 remote_addr: str = "", remote_port: str = "", server=None,
                 trusted: bool = False):
        self.site = site
        self.writer = writer
        self.pull = pull
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        # SERVER_NAME and SERVER_PORT: the site's, else a function that asks the connection
        self.server = site.server_address or server
        self.trusted = trusted
        self.client = remote_addr
        self.headers_sent = False
        self.status = ""
        self.bytes_in = self.bytes_out = 0
        self.encoder = None  # compressing the current response's body
        self.accept: str | None = None  # the current request's Accept-Encoding
        self.method = ""
        self.location = ""

    def release(self) -> None:
        """The connection is over: drop the writer (it holds this exchange: a cycle)."""
        self.writer = self.pull = None

    # -- an HTTP request ------------------------------------------------------------------------

    def run(self, head) -> None:
        """Serve one request of an HTTP head (method, target, version, headers, has_body)."""
        site = self.site
        started = time.monotonic()
        token = site.request_started(head)
        self.headers_sent = False
        self.status = ""
        self.bytes_in = self.bytes_out = 0
        self.encoder = self.accept = None
        self.method = head.method
        self.client = self.remote_addr  # or the X-Forwarded-For of a trusted proxy
        self.location = path = ""
        try:
            raw_path, query = split_target(head.target)
            try:
                path = decode_path(raw_path)
            except BadTarget:
                self.simple(400, "Bad Request\n")
                return
            router = site.router
            route = router.match(path) if router else None
            redirect = router.redirect_for(path) if router else None
            if route is None or redirect:
                if redirect:
                    location = redirect + ("?" + query.decode("latin-1") if query else "")
                    self.simple(301, "Moved Permanently\n", [("Location", location)])
                else:
                    self.simple(404, "Not Found\n")
                return
            self.location = route.prefix
            try:
                environ = self.environ(head, route, path, query)
            except wsgi.ClientError as e:  # request-buffering: the body was refused
                self.fail(e)
                return
            body = environ["wsgi.input"]  # ours: middleware may put a wrapper in its place
            try:
                wsgi.run(route.app, environ, self, site.errors)
            finally:
                if body is not _NO_BODY:
                    body.close()
        finally:
            observers = site.observers
            # tuple.__new__: RequestRecord(...) would cost a Python frame on every request
            record = _new_record(RequestRecord, (
                site.name, self.location, head.method, head.target, path, head.version,
                self.status, self.bytes_in, self.bytes_out, time.monotonic() - started,
                self.client, time.time() if observers else 0.0, head.headers))
            site.request_finished(token, record)
            if observers and self.status:
                for observe in observers:
                    observe(record)

    def environ(self, head, route: Route, path: str, query: bytes) -> dict:
        site = self.site
        env = site.template.copy()
        server = self.server
        if type(server) is not tuple:  # asked of the connection when first needed
            server = self.server = server() if server is not None else ("localhost", "0")
        env["SERVER_NAME"], env["SERVER_PORT"] = server
        env["REMOTE_ADDR"] = self.remote_addr
        env["REMOTE_PORT"] = self.remote_port
        env["REQUEST_METHOD"] = head.method
        env["SCRIPT_NAME"] = route.script_name
        env["PATH_INFO"] = path[len(route.script_name):] if route.script_name else path
        env["QUERY_STRING"] = query.decode("latin-1") if query else ""
        env["REQUEST_URI"] = env["RAW_URI"] = head.target.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/1.1" if head.version == "1.1" else "HTTP/1.0"
        if not head.has_body:
            env["wsgi.input"] = _NO_BODY
        elif site.buffering:
            env["wsgi.input"] = wsgi.spool(self._pull, site.buffer_size, site.temp_path)
        else:
            env["wsgi.input"] = wsgi.BodyReader(self._pull)
        for name, value in head.headers:
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
            apply_forwarded(env)
            self.client = env["REMOTE_ADDR"]
        if site.compression is not None:
            self.accept = env.get("HTTP_ACCEPT_ENCODING")
        return env

    def _pull(self) -> bytes:
        data = self.pull()
        self.bytes_in += len(data)
        return data

    def refused(self, code: int, body_bytes: int) -> None:
        """A request that could not be read was answered `code` by the driver (as nginx
        does, it is in the access log, its request `-`)."""
        self.client = self.remote_addr
        self.status = str(code)
        site = self.site
        if site.observers:
            record = RequestRecord(site.name, "", "", b"", "", "", self.status, 0, body_bytes,
                                   0.0, self.client, time.time(), ())
            for observe in site.observers:
                observe(record)

    # -- a request a web server sent in CGI params (FastCGI) ------------------------------------

    def run_cgi(self, env: dict) -> None:
        """Serve one request whose environ the web server built: the app by APPNAME, else by
        location on the path."""
        site = self.site
        started = time.monotonic()
        method = env.get("REQUEST_METHOD", "GET")
        uri = env.get("REQUEST_URI", "")
        token = site.request_started(f"{method} {uri} (FastCGI)")
        self.method = method
        self.client = env.get("REMOTE_ADDR", "")
        try:
            try:
                app = self.cgi_environ(env)
            except wsgi.ClientError as e:
                self.fail(e)
                return
            if app is None:
                self.respond("404 Not Found", [("Content-Type", "text/plain")], b"Not Found\n")
            else:
                wsgi.run(app, env, self, site.errors)
        finally:
            headers = tuple((name, env[key].encode("latin-1")) for name, key in _CGI_HEADERS
                            if key in env)
            protocol = env.get("SERVER_PROTOCOL", "")
            record = RequestRecord(site.name, self.location, method, uri.encode("latin-1"),
                                   env.get("PATH_INFO", ""),
                                   protocol[5:] if protocol.startswith("HTTP/") else protocol,
                                   self.status, self.bytes_in, self.bytes_out,
                                   time.monotonic() - started, self.client, time.time(),
                                   headers)
            site.request_finished(token, record)
            if self.status:
                for observe in site.observers:
                    observe(record)

    def cgi_environ(self, env: dict) -> Any:
        """Complete the web server's environ (it is this request's own) and find its app."""
        site = self.site
        length = env.get("CONTENT_LENGTH", "")
        if site.max_body and length.isdigit() and int(length) > site.max_body:
            raise wsgi.ClientError(413, "request body too large")
        env.update(site.cgi_template)
        if env.get("HTTPS", "").lower() in ("on", "1") or env.get("REQUEST_SCHEME") == "https":
            env["wsgi.url_scheme"] = "https"
        env["wsgi.input"] = wsgi.BodyReader(self._pull)
        env.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
        env.setdefault("QUERY_STRING", "")
        appname = env.get("APPNAME")
        if appname:
            return site.apps.get(appname)
        router = site.router
        path_info = env.get("PATH_INFO")
        if path_info:  # fastcgi_split_path_info: nginx already says where the app is mounted
            route = router.match(env.get("SCRIPT_NAME", "") + path_info)
        else:
            path = env.get("DOCUMENT_URI") or env.get("SCRIPT_NAME") or \
                env.get("REQUEST_URI", "/").partition("?")[0] or "/"
            route = router.match(path)
            if route is not None:
                env["SCRIPT_NAME"] = route.script_name
                env["PATH_INFO"] = path[len(route.script_name):] if route.script_name else path
        if route is None:
            return None
        self.location = route.prefix
        return route.app

    # -- the transport wsgi.run writes through --------------------------------------------------

    def respond(self, status: str, headers: list, body: bytes) -> None:
        compression = self.site.compression
        if compression is not None:
            encoder, headers = compression.decide(self.method, status, headers, len(body),
                                                  self.accept)
            if encoder is not None:
                body = encoder.whole(body)
        self.headers_sent = True
        self.status = status
        self.bytes_out = len(body)
        try:
            self.writer.respond(status, headers, body)
        except wsgi.ClientGone:
            raise
        except Exception:  # refused before anything went out (an invalid header)
            self.headers_sent = False
            self.status = ""
            self.bytes_out = 0
            raise

    def start(self, status: str, headers: list, content_length: int | None) -> None:
        compression = self.site.compression
        if compression is not None:
            self.encoder, headers = compression.decide(self.method, status, headers,
                                                       content_length, self.accept)
            if self.encoder is not None:
                content_length = None
        self.writer.start(status, headers, content_length)
        self.headers_sent = True
        self.status = status

    def write(self, data: bytes) -> None:
        if self.encoder is not None:
            data = self.encoder.compress(data)
        self.bytes_out += len(data)
        try:
            self.writer.write(data)
        except wsgi.ClientGone:
            raise
        except Exception:  # more than the Content-Length: not sent
            self.bytes_out -= len(data)
            raise

    def sendfile(self, file: Any, offset: int, count: int | None) -> bool:
        if count is None or self.encoder is not None:
            return False
        sent = self.writer.sendfile(file, offset, count)
        if sent is None:
            return False
        self.bytes_out += sent
        return True

    def finish(self) -> None:
        tail = b""
        if self.encoder is not None:
            tail = self.encoder.finish()
            self.encoder = None
            self.bytes_out += len(tail)
        self.writer.finish(tail)

    def fail(self, exc: BaseException | None) -> None:
        """The app failed: its status (400, 408, 413) or a 500 if nothing went out yet, else
        the response is cut off. Either way the connection closes after it (HTTP/1.1)."""
        self.encoder = None
        code = exc.status if isinstance(exc, (ProtocolError, wsgi.ClientError)) and not \
            exc.local else 500
        if not self.writer.on_wire:
            self.status = str(code)
        self.writer.fail(code)

    def simple(self, code: int, text: str, headers: list | None = None) -> None:
        """A small response of pyd's own (404, 301, ...)."""
        self.respond(f"{code} {REASONS.get(code, '')}",
                     [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])],
                     text.encode())


_ENV_NAMES: dict[bytes, str] = {}
_SPECIAL = {b"CONTENT_TYPE": "CONTENT_TYPE", b"CONTENT_LENGTH": "CONTENT_LENGTH"}
_CGI_HEADERS = ((b"User-Agent", "HTTP_USER_AGENT"), (b"Referer", "HTTP_REFERER"))


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


def apply_forwarded(env: dict) -> None:
    """Behind a trusted proxy: the client's address and scheme from X-Forwarded-*."""
    forwarded = env.get("HTTP_X_FORWARDED_FOR")
    if forwarded:
        env["REMOTE_ADDR"] = forwarded.split(",")[-1].strip() or env["REMOTE_ADDR"]
    proto = env.get("HTTP_X_FORWARDED_PROTO", "").strip().lower()
    if proto in ("http", "https"):
        env["wsgi.url_scheme"] = proto


_ERRORS = wsgi.ErrorStream()
_NO_BODY = wsgi.BodyReader(None)  # one for every request without a body: it holds nothing

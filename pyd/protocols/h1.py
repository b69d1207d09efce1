"""HTTP/1.1 for the server side, sans-IO: bytes in, events out, bytes to send.

Theory of operation
-------------------
llhttp (through httptools) does the parsing and is strict by default: bare CR or LF, obs-fold,
invalid tokens, Content-Length with Transfer-Encoding, duplicate Content-Lengths and bad chunk
sizes are all errors. This module adds what llhttp leaves to the server: limits (414, 431, 413),
the version (505), Host rules, transfer codings it does not know (501), the request-target's
form (its percent-encodings; an absolute-form target's authority, which replaces Host), and
framing of responses.

Two llhttp habits need help to keep the result independent of how the bytes were split into
reads. An unknown method is reported at its first unexpected byte, before the method ends: the
bytes of the failing request are found again by replaying, on a throwaway parser, what was read
since the last read that ended between requests (`_carry`, kept up to CARRY_LIMIT bytes), and
the answer (501 for a well-formed unknown method, else 400) waits for the byte after the token.
And httptools buffers a header field until it ends, so a head still incomplete after
HEAD_SLACK bytes more than the limits allow is refused with 431 (counted in whole reads).
A request line without a version (HTTP/0.9) would leave llhttp waiting for a blank line that
an HTTP/0.9 client never sends: a read that ends after such a line is answered 505 at once, as
it would be had the blank line come in the same read; and an error later in that head is 505
too, as it would be had the read ended with the line.

httptools parses everything it is fed at once, so pipelined requests arrive as a queue of
events: `Request`, then `Data` chunks of its body, then `END`. A parse error is queued where it
happened, after the events of the requests before it, so those are still answered. After END,
`next_event()` returns PAUSED until the response to that request is complete (`end()` or
`respond()`): responses go out in order, one at a time.

Two rules: the only exception that leaves this module is ProtocolError (its `status` is what to
answer, its `local` flag says the application, not the peer, was wrong); and nothing here reads
a clock except the Date header's once-a-second cache.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

import httptools

from pyd.version import __version__


class ProtocolError(Exception):
    """The exchange cannot go on. Answer `status` (if nothing was sent yet), then close."""

    def __init__(self, status: int, reason: str, local: bool = False):
        super().__init__(reason)
        self.status, self.reason, self.local = status, reason, local


class Limits:
    """What a request may weigh; the defaults are nginx's and gunicorn's orders of magnitude."""

    __slots__ = ("max_request_line", "max_header_size", "max_headers", "max_body_size")

    def __init__(self, max_request_line: int = 8190, max_header_size: int = 65536,
                 max_headers: int = 100, max_body_size: int | None = None):
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.max_body_size = max_body_size


class Request:
    """A request head. `headers` keep the peer's bytes and names as sent, except that the
    authority of an absolute-form target replaces Host (RFC 9112 3.2.2); `host` is that."""

    __slots__ = ("method", "target", "version", "headers", "keep_alive", "content_length",
                 "chunked", "expect_continue", "upgrade", "host")

    def __init__(self, method: str, target: bytes, version: str, headers: list,
                 keep_alive: bool, content_length: int | None, chunked: bool,
                 expect_continue: bool, upgrade: bool, host: bytes | None):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.host = host

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target!r} HTTP/{self.version}>"


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


END = _Sentinel("END")  # the request's body is complete
NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes
PAUSED = _Sentinel("PAUSED")  # finish the current response first
CLOSED = _Sentinel("CLOSED")  # the peer closed between requests


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: ProtocolError | None):
        self.error = error  # None: an unknown method, its status decided when it is seen whole


class _Counter:
    """httptools callbacks that only count complete requests (to replay a stream)."""

    def __init__(self):
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


def _completed(stream: bytes) -> int:
    counter = _Counter()
    try:
        httptools.HttpRequestParser(counter).feed_data(stream)
    except httptools.HttpParserError:
        pass
    return counter.complete


def _request_start(stream: bytes) -> int:
    """Where the request that failed in `stream` (read from a request boundary) begins: the
    shortest prefix holding every request that completed before the failure."""
    total = _completed(stream)
    if not total:
        return 0
    lo, hi = 0, len(stream)
    while lo < hi:
        mid = (lo + hi) // 2
        if _completed(stream[:mid]) >= total:
            hi = mid
        else:
            lo = mid + 1
    return lo


_STR_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_PREFIX = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
# What a Host value may hold (RFC 3986 reg-name, IP literals, a port); `translate` deletes these
# and anything left over is refused: cheaper than a regex on every request.
_HOST_CHARS = (b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
               b"-._~!$&'()*+,;=%:[]")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # a "%" not followed by two hex digits
_ABSOLUTE = (b"http://", b"https://")
_SUPPORTED_CODINGS = {b"chunked"}
_GOOD_HOSTS: set[bytes] = set()  # Host values already found valid (a server sees few)

# Request fields the head's checks look at, by name as sent (the peer's case): the kinds.
_OTHER, _HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT = (
    _Sentinel(n) for n in ("other", "host", "content-length", "transfer-encoding", "expect"))
_KINDS = {b"host": _HOST, b"content-length": _CONTENT_LENGTH,
          b"transfer-encoding": _TRANSFER_ENCODING, b"expect": _EXPECT}
_FIELDS: dict[bytes, _Sentinel] = {}


def _field_kind(name: bytes) -> _Sentinel:
    kind = _KINDS.get(name.lower(), _OTHER)
    if len(_FIELDS) < 1024:
        _FIELDS[name] = kind
    return kind

UNREAD_BODY_LIMIT = 65536  # a body the app left unread is skipped up to this, else we close
CARRY_LIMIT = 65536  # bytes kept to find an unknown method again; past it the answer is 400
HEAD_SLACK = 65536  # what an unfinished head may exceed the limits by before it is refused
METHOD_WINDOW = 64  # a method token longer than this is not waited for: 400

# Response framing modes.
_NONE, _LENGTH, _CHUNKED, _CLOSE = range(4)

REASONS = {
    100: "Continue", 200: "OK", 206: "Partial Content", 204: "No Content",
    301: "Moved Permanently", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_date_cache = [0, ""]


def date_header() -> str:
    """`Date: ...\\r\\n`, formatted once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = f"Date: {formatdate(now, usegmt=True)}\r\n"
    return _date_cache[1]


class H1Connection:
    """One server-side HTTP/1.1 connection."""

    # Thousands may sit idle in one worker: no per-instance __dict__.
    __slots__ = ("limits", "server_line", "_parser", "_events", "_paused", "_failed", "_eof",
                 "_stopped", "_in_head", "_body_size", "closing", "keep_alive", "request",
                 "_body_done", "_skip_body", "_mode", "_left", "_started", "_fresh", "_carry",
                 "_head_read", "_head_limit", "_bad_method", "_url", "_headers", "_head_size",
                 "_pending", "_begun", "_line_open", "_line_start")

    def __init__(self, limits: Limits | None = None, server_tokens: bool = True):
        self.limits = limits or Limits()
        self.server_line = f"Server: pyd/{__version__}\r\n" if server_tokens else "Server: pyd\r\n"
        self._parser = httptools.HttpRequestParser(self)
        # A list, not a deque: a deque's first block is ~600 bytes per idle connection, and
        # the queue holds a handful of events at most (one read's worth).
        self._events: list = []
        self._paused = False
        self._failed: ProtocolError | None = None
        self._eof = False
        self._stopped = False  # the parser hit an upgrade or an error: ignore further bytes
        self._in_head = False
        self._body_size = 0
        self.closing = False  # set by the server: this response is the last one
        self.keep_alive = True
        self.request: Request | None = None  # the request being answered
        self._body_done = True  # END of the current request was read
        self._skip_body = False  # answered before its body was read: drop the rest
        self._mode = _NONE
        self._left = 0
        self._started = False
        self._fresh = True  # the parser stands between two requests
        self._carry: bytes | None = b""  # what was read since a read ended between requests
        self._head_read = 0
        self._head_limit = self.limits.max_request_line + self.limits.max_header_size + HEAD_SLACK
        self._bad_method: bytes | None = None  # the start of a request with an unknown method
        self._begun = 0  # requests begun since `_carry` was last emptied
        self._line_open = False  # the current head's request line is still to be looked at
        self._line_start = -1  # where in `_carry` the current head begins (-1: not known yet)

    # -- input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means it closed its side."""
        if not data:
            self._eof = True
            return
        if self._stopped:
            if self._bad_method is not None and len(self._bad_method) < METHOD_WINDOW:
                self._bad_method += data[:METHOD_WINDOW]
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserCallbackError:
            self._fail(self._versionless_failure(data) or self._pending)
        except httptools.HttpParserInvalidMethodError:
            self._unknown_method(data)
        except httptools.HttpParserInvalidURLError:
            self._fail(ProtocolError(400, "invalid request-target"))
        except httptools.HttpParserError as e:
            if self._parser.get_method() == b"PRI":  # the HTTP/2 connection preface
                self._fail(ProtocolError(505, "HTTP/2.0 is not supported"))
            else:
                self._fail(self._versionless_failure(data)
                           or ProtocolError(400, str(e) or "malformed request"))
        else:
            if self._fresh:
                self._carry = b""
                self._begun = 0
            else:
                self._unfinished(data)

    def _unfinished(self, data: bytes) -> None:
        """The read ended inside a request: keep what finding an unknown method would need,
        and refuse a head that never ends (httptools would buffer it whole)."""
        carry = self._carry
        if carry is not None:
            self._carry = carry = carry + data if len(carry) + len(data) <= CARRY_LIMIT else None
        if self._in_head and self._line_open and carry is not None and self._versionless(
                carry, data):
            self._fail(ProtocolError(505, "HTTP/0.9 is not supported"))
            return
        if self._in_head:
            self._head_read += len(data)
            if self._head_read > self._head_limit:
                self._fail(ProtocolError(431, "request header fields too large"))

    def _versionless_failure(self, data: bytes) -> ProtocolError | None:
        """505 for an error in a head after a request line without a version (as a read that
        ended with that line gets), if its line was not looked at yet; else None.

        The line is found as in _versionless, in what was read, and replayed alone: it must
        parse without an error, so that the error came after it."""
        if not (self._in_head and self._line_open) or self._carry is None:
            return None
        stream = self._carry + data
        start = self._line_start
        if start < 0:
            start = 0 if self._begun == 1 else _request_start(stream)
        while stream[start:start + 1] in (b"\r", b"\n"):
            start += 1
        end = stream.find(b"\n", start)
        if end < 0 or stream.count(b" ", start, end) != 1:
            return None
        try:
            httptools.HttpRequestParser(_Counter()).feed_data(stream[start:end + 1])
        except httptools.HttpParserError:
            return None
        return ProtocolError(505, "HTTP/0.9 is not supported")

    def _versionless(self, stream: bytes, data: bytes) -> bool:
        """Whether the request line, once a read ended it, lacks a version (HTTP/0.9).

        `stream` is what was read since a read ended between requests. The head begins at
        its start for the first request since then, else where the requests before it end
        (found by replaying, once per head); its line ends at the first LF after that, looked
        for in `data` only, so a head that trickles in costs each read its own length."""
        start = self._line_start
        if start < 0:
            start = self._line_start = 0 if self._begun == 1 else _request_start(stream)
        while stream[start:start + 1] in (b"\r", b"\n"):  # empty lines before a request
            start += 1
        end = stream.find(b"\n", max(start, len(stream) - len(data)))
        if end < 0:
            return False
        self._line_open = False
        return stream.count(b" ", start, end) == 1  # METHOD SP target, no SP HTTP-version

    def _upgrade(self) -> None:
        """llhttp stops after a request asking to switch protocols (Upgrade). We switch to
        none: the request is answered as plain HTTP and the connection closes after it. Its
        body, if any, llhttp would have parsed as the next request: refused instead."""
        self._stopped = True
        events = self._events
        for i in range(len(events) - 1, -1, -1):
            ev = events[i]
            if type(ev) is Request:
                ev.keep_alive = False
                ev.upgrade = True
                if ev.has_body:
                    while len(events) > i:
                        events.pop()
                    self._fail(ProtocolError(400, "a request body with Upgrade is not supported"))
                return

    def _unknown_method(self, data: bytes) -> None:
        """llhttp met a method it does not know; find the failing request's first bytes."""
        self._stopped = True
        start = b""
        if self._carry is not None:
            stream = self._carry + data
            start = stream[_request_start(stream):].lstrip(b"\r\n")[:METHOD_WINDOW]
        self._bad_method = start
        self._events.append(_Failure(None))

    def _fail(self, error: ProtocolError) -> None:
        self._stopped = True
        self._events.append(_Failure(error))

    def next_event(self):
        """The next event: Request, Data, END, NEED_DATA, PAUSED or CLOSED.

        Raises ProtocolError where the peer's input went wrong.
        """
        if self._failed is not None:
            raise self._failed
        if self._paused:
            return PAUSED
        events = self._events
        while self._skip_body and events:
            ev = events.pop(0)
            if ev is END:
                self._skip_body = False
            elif type(ev) is _Failure:
                events.insert(0, ev)
                self._skip_body = False
        if not events:
            if self._eof:
                if self._in_head or self.request is not None or self._skip_body:
                    self._failed = ProtocolError(400, "the peer closed mid-request")
                    raise self._failed
                return CLOSED
            return NEED_DATA
        ev = events.pop(0)
        if ev is END:
            self._paused = True
            self._body_done = True
        elif type(ev) is Request:
            self.request = ev
            self._body_done = not ev.has_body
            self._started = False
            if self._body_done and events and events[0] is END:
                events.pop(0)  # the common case: no body, no Data events in between
                self._paused = True
        elif type(ev) is _Failure:
            error = ev.error
            if error is None:
                error = self._method_error()
                if error is None:
                    events.insert(0, ev)
                    return NEED_DATA
            self._failed = error
            raise error
        return ev

    def _method_error(self) -> ProtocolError | None:
        """400 or 501 for an unknown method, once the byte after the token arrived."""
        head = self._bad_method or b""
        end = _TOKEN_PREFIX.match(head).end()
        if end < len(head):
            if end and head[end] == 0x20:
                return ProtocolError(501, "unknown method")
            return ProtocolError(400, "invalid method")
        if self._eof or end >= METHOD_WINDOW or self._carry is None:
            return ProtocolError(400, "invalid method")
        return None

    @property
    def idle(self) -> bool:
        """Between requests with nothing buffered: safe to close politely."""
        return self.request is None and not self._events and not self._in_head

    @property
    def body_complete(self) -> bool:
        return self._body_done

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers: list = []
        self._head_size = 0
        self._in_head = True
        self._body_size = 0
        self._fresh = False
        self._head_read = 0
        self._line_open = True
        self._line_start = -1
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            self._line_open = False  # refused before its line ended, however it was split
            self._raise(ProtocolError(414, "request-target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_header_size:
            self._raise(ProtocolError(431, "request header fields too large"))
        if self._in_head:
            self._headers.append((name, value))
            if len(self._headers) > self.limits.max_headers:
                self._raise(ProtocolError(431, "too many header fields"))
        # else: a trailer field of a chunked body; counted, not kept

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._raise(ProtocolError(505, f"HTTP/{version} is not supported"))
        url = self._url
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            self._raise(ProtocolError(501, "CONNECT is not supported"))
        authority = None
        if not url.startswith(b"/"):
            if url.startswith(_ABSOLUTE):
                authority = _authority(url)
                if authority is None:
                    self._raise(ProtocolError(400, "userinfo or no host in the request-target"))
            elif not (url == b"*" and method == "OPTIONS"):
                self._raise(ProtocolError(400, "invalid request-target"))
        if b"#" in url:
            self._raise(ProtocolError(400, "a fragment in the request-target"))
        if url.find(b"%") >= 0 and _BAD_PERCENT.search(url.partition(b"?")[0]):
            self._raise(ProtocolError(400, "a bad percent-encoding in the request-target"))
        content_length = None
        chunked = expect = False
        host = None
        hosts = 0
        for name, value in self._headers:
            kind = _FIELDS.get(name)
            if kind is None:
                kind = _field_kind(name)
            if kind is _OTHER:
                continue
            if kind is _HOST:
                hosts += 1
                host = value
            elif kind is _CONTENT_LENGTH:
                content_length = int(value)  # llhttp checked it is digits and not repeated
            elif kind is _TRANSFER_ENCODING:
                if version == "1.0":
                    self._raise(ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request"))
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings[-1] != b"chunked" or not all(codings):
                    if b"chunked" in codings or not all(codings):
                        self._raise(ProtocolError(400, "chunked must be the last coding"))
                if not set(codings) <= _SUPPORTED_CODINGS:
                    self._raise(ProtocolError(501, "unsupported transfer coding"))
                chunked = True
            else:  # Expect
                if value.lower() != b"100-continue":
                    self._raise(ProtocolError(417, "unsupported expectation"))
                expect = version == "1.1"
        if version == "1.1" and hosts != 1:
            self._raise(ProtocolError(400, "a request needs exactly one Host header"))
        if hosts > 1:
            self._raise(ProtocolError(400, "more than one Host header"))
        if hosts and not host:
            self._raise(ProtocolError(400, "an empty Host header"))
        if authority is not None:  # RFC 9112 3.2.2: the target's authority is the host
            host = authority
            self._set_host(authority, hosts)
        if host and host not in _GOOD_HOSTS:
            if host.translate(None, _HOST_CHARS):
                self._raise(ProtocolError(400, "invalid Host header"))
            if len(_GOOD_HOSTS) >= 256:
                _GOOD_HOSTS.clear()
            _GOOD_HOSTS.add(host)
        limit = self.limits.max_body_size
        if limit and content_length is not None and content_length > limit:
            self._raise(ProtocolError(413, "request body too large"))
        self._events.append(Request(method, url, version, self._headers,
                                    parser.should_keep_alive(), content_length, chunked,
                                    expect, False, host))

    def _set_host(self, authority: bytes, hosts: int) -> None:
        headers = self._headers
        if not hosts:
            headers.append((b"Host", authority))
            return
        for i, (name, _) in enumerate(headers):
            if name.lower() == b"host":
                headers[i] = (name, authority)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        limit = self.limits.max_body_size
        if limit and self._body_size > limit:
            room = limit - (self._body_size - len(body))
            if room > 0:  # what fits is delivered, however the body was split into reads
                self._events.append(Data(body[:room]))
            self._raise(ProtocolError(413, "request body too large"))
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._events.append(END)
        self._fresh = True

    def _raise(self, error: ProtocolError) -> None:
        self._pending = error
        raise error  # httptools wraps it in HttpParserCallbackError; receive_data unwraps

    # -- output ---------------------------------------------------------------------------------

    def start_response(self, status: str, headers: list, content_length: int | None = None) -> bytes:
        """The response head for the current request, deciding how the body is framed.

        `status` is "200 OK", `headers` (name, value) strings as WSGI gives them;
        `content_length`, when known, is added if the headers lack it.
        Raises ProtocolError(local=True) if the application's status or headers are invalid.
        """
        req = self.request
        if req is None or self._started:
            raise ProtocolError(500, "no request to answer", local=True)
        # Most apps answer with the same few status lines and header lists again and again:
        # what the checks made of one is kept (see _app_head), keyed by its exact strings.
        try:
            key = (status, tuple(headers))
            checked = _HEADS.get(key)
        except TypeError:  # something unhashable in there: checked (and refused) below
            key = checked = None
        if checked is None:
            checked = _app_head(status, headers)
            if key is not None:
                if len(_HEADS) >= HEAD_CACHE:
                    _HEADS.clear()
                _HEADS[key] = checked
        head, code, length, ours, close = checked
        keep_alive = req.keep_alive and not close and not self.closing and self._failed is None
        if not self._body_done and (req.chunked or (req.content_length or 0) - self._body_size
                                    > UNREAD_BODY_LIMIT or req.expect_continue):
            # Cheaper to close than to read a large body nobody wants; and a client still
            # waiting for 100 Continue may or may not send its body: only closing is clear.
            keep_alive = False
        tail = ""
        if length is None and content_length is not None and code != 204 and code != 304:
            length = content_length
            tail = f"Content-Length: {length}\r\n"
        if req.method == "HEAD" or code == 204 or code == 304:
            mode = _NONE
        elif length is not None:
            mode = _LENGTH
        elif req.version == "1.1":
            mode = _CHUNKED
            tail += "Transfer-Encoding: chunked\r\n"
        else:
            mode = _CLOSE
            keep_alive = False
        if not keep_alive:
            tail += "Connection: close\r\n"
        elif req.version == "1.0":
            tail += "Connection: keep-alive\r\n"
        if ours == _OURS:
            tail += date_header() + self.server_line + "\r\n"
        else:
            tail += ((date_header() if ours & _DATE else "")
                     + (self.server_line if ours & _SERVER else "") + "\r\n")
        self._mode, self._left = mode, length or 0
        self.keep_alive = keep_alive
        self._started = True
        return head + tail.encode("latin-1")

    def body(self, data: bytes) -> bytes:
        """Frame a piece of the body; more than Content-Length announced is an error."""
        mode = self._mode
        if mode == _LENGTH:
            if len(data) > self._left:
                self.keep_alive = False
                raise ProtocolError(500, "the application sent more than its Content-Length",
                                    local=True)
            self._left -= len(data)
            return data
        if mode == _CHUNKED:
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if mode == _CLOSE:
            return data
        return b""  # HEAD, 204, 304: no body goes out

    @property
    def body_mode(self) -> str:
        """How body bytes go out: "none" (HEAD, 204, 304), "raw" or "chunked"."""
        return ("none", "raw", "chunked", "raw")[self._mode]

    def body_sent(self, count: int) -> None:
        """`count` raw body bytes went out by other means (sendfile)."""
        if self._mode == _LENGTH:
            if count > self._left:
                raise ProtocolError(500, "sent more than the Content-Length", local=True)
            self._left -= count

    def abort(self) -> None:
        """The response cannot be completed: the connection must close after what was sent."""
        self.keep_alive = False
        self._failed = self._failed or ProtocolError(500, "response aborted", local=True)

    def end(self) -> bytes:
        """The end of the body; after it the next request may be read (if keep_alive)."""
        out = b""
        if self._mode == _CHUNKED:
            out = b"0\r\n\r\n"
        elif self._mode == _LENGTH and self._left:
            self.keep_alive = False  # fewer bytes than announced: the framing is broken
        self._finish()
        return out

    def respond(self, status: str, headers: list, body: bytes) -> bytes:
        """A whole response in one piece: head and body in one write."""
        head = self.start_response(status, headers, len(body))
        data = self.body(body)
        return head + data + self.end()

    def _finish(self) -> None:
        self._paused = False
        self._started = False
        if not self._body_done:
            self._skip_body = True
            self._body_done = True
        self.request = None

    def release(self) -> None:
        """The connection is over: drop the parser, whose callbacks are this object's methods
        (a reference cycle only the garbage collector would break). Nothing may be fed after."""
        self._parser = None
        self._events.clear()

    def error_response(self, status: int, reason: str = "") -> bytes:
        """A complete response for a protocol error; the connection closes after it."""
        text = REASONS.get(status, "Error")
        body = f"{status} {text}\n".encode()
        self.keep_alive = False
        self._failed = self._failed or ProtocolError(status, reason or text)
        return (f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n{date_header()}"
                f"{self.server_line}\r\n").encode("latin-1") + body

    def informational(self) -> bytes:
        """`100 Continue`, for a request that expects it before sending its body."""
        if self.request is not None:
            self.request.expect_continue = False
        return b"HTTP/1.1 100 Continue\r\n\r\n"


def _authority(url: bytes) -> bytes | None:
    """The host of an absolute-form target, None if empty or with userinfo (RFC 9112 3.2.2);
    its characters are checked as Host's are."""
    rest = url[url.index(b"//") + 2:]
    end = len(rest)
    for sep in (b"/", b"?"):
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    return authority if authority and b"@" not in authority else None


# Response fields the framing owns: hop-by-hop ones are dropped (PEP 3333 forbids them to
# applications), Content-Length is checked, Date and Server are added unless the app set them.
_HOP, _LENGTH_FIELD, _DATE, _SERVER = 0, 1, 2, 4
_OURS = _DATE | _SERVER
_SPECIAL_RESPONSE = {name: _HOP for name in (
    "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
    "trailer")}
_SPECIAL_RESPONSE.update({"content-length": _LENGTH_FIELD, "date": _DATE, "server": _SERVER})
_NAMES: dict[str, str] = {}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _STR_TOKEN.fullmatch(name):
        raise ProtocolError(500, f"invalid header name {name!r}", local=True)
    lname = name.lower()
    if len(_NAMES) < 1000:
        _NAMES[name] = lname
    return lname


HEAD_CACHE = 256  # distinct (status, headers) heads kept; past it the cache starts afresh
_HEADS: dict[tuple, tuple] = {}


def _app_head(status: str, headers: list) -> tuple:
    """Check an application's status and headers; what start_response needs of them: the
    head's first bytes (status line and the app's fields, hop-by-hop ones dropped), the
    status code, the Content-Length given (or None), which of Date and Server pyd still
    adds, and whether the app asked to close (Connection: close). Depends on nothing else,
    so start_response may keep the result."""
    if type(status) is not str or "\n" in status or "\r" in status:
        raise ProtocolError(500, f"invalid status {status!r}", local=True)
    try:
        code = int(status[:3])
    except ValueError:
        code = 0
    if not 200 <= code <= 599 or (len(status) > 3 and status[3] != " "):
        raise ProtocolError(500, f"invalid status {status!r}", local=True)
    parts = ["HTTP/1.1 ", status, "\r\n"]
    length = None
    ours = _OURS
    close = False
    for name, value in headers:
        lname = _NAMES.get(name)
        if lname is None:
            lname = _check_name(name)
        try:
            bad = "\n" in value or "\r" in value or "\0" in value
        except TypeError:  # not a str
            bad = True
        if bad:
            raise ProtocolError(500, f"invalid value for header {name}", local=True)
        kind = _SPECIAL_RESPONSE.get(lname)
        if kind is not None:
            if kind == _HOP:
                if lname == "connection" and "close" in value.lower():
                    close = True
                continue
            if kind == _LENGTH_FIELD:
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ProtocolError(500, f"invalid Content-Length {value!r}", local=True)
                if length is not None or code == 204:
                    continue  # said once; never on a 204 (RFC 9110 8.6)
                length = int(value)
            else:
                ours &= ~kind  # the application's own Date or Server replaces ours
        parts += (name, ": ", value, "\r\n")
    try:
        head = "".join(parts).encode("latin-1")
    except UnicodeEncodeError:
        raise ProtocolError(500, "response headers must be latin-1", local=True) from None
    return head, code, length, ours, close

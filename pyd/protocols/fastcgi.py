"""FastCGI 1.0 responder protocol, sans-IO: bytes in, events out, record bytes to send.

Owns record framing, name-value pairs, per-request stream state and the management answers;
the gevent server in `server.py` only moves bytes between a socket and this module.

Theory of operation
-------------------
A `FastCGIConnection` is one transport connection seen from the application's side. The driver
feeds it whatever the socket returned (`receive_data`; `b""` means the peer closed) and then calls
`next_event` until it returns `NEED_DATA` (or `ConnectionClosed`). Parsing is lazy: records are
decoded one at a time inside `next_event`, so events come out in wire order and a broken record
raises `ProtocolError` only after every event before it was delivered. Splitting the input
differently never changes the events.

Each record belongs to a request id. Per the specification a request id becomes *active* when
BEGIN_REQUEST arrives and inactive when the application sends END_REQUEST (`end_request`). An
active request goes through three input phases:

    PARAMS --(empty PARAMS record: Params)--> STDIN --(empty STDIN record: StdinEnd)--> DONE

The PARAMS stream is buffered whole and decoded at its empty record, because the specification
lets the sender cut the stream anywhere, even inside a length field. STDIN is surfaced chunk by
chunk so a large body streams into the application. ABORT_REQUEST surfaces `AbortRequest` once;
the request stays active (its id cannot be reused) until the driver calls `end_request`, and any
further input for it is dropped, since nothing is left to read it.

Records for a request id that is not active are ignored silently, as the specification says.
This is what makes an early answer safe: an app may reply 413 and `end_request` before nginx
has finished sending the body, and the trailing STDIN records must not break the connection.
The same rule covers requests that were refused at BEGIN_REQUEST (unknown role, no
multiplexing, overloaded): the refusal is an END_REQUEST, so the id is inactive at once.

Some records are answered by the connection itself, never surfaced: GET_VALUES (from the
constructor's limits), refused BEGIN_REQUESTs, and unknown record types, on the null request id
(where GET_VALUES_RESULT and UNKNOWN_TYPE count as unknown: an application never receives them)
or on a request id alike; FCGI_UNKNOWN_TYPE tells a newer web server the type is unsupported
instead of cutting it off. Those answers wait in `data_to_send()`; the driver flushes it after
draining events. DATA records (the FILTER role's stream) are dropped. Protocol errors: a version
other than 1, application record types on the null request id, END_REQUEST/STDOUT/STDERR from
the web server, management types on a request id, a request id begun twice, streams out of
order, malformed or oversized PARAMS.

`keep_conn` turns False once any request began without FCGI_KEEP_CONN (refused ones included):
the driver then closes the connection when `requests_in_flight` is 0 and its output is written.

`ProtocolError` is the only exception `receive_data` and `next_event` raise; after one, the
connection is dead and every later call raises it again. The output builders (`stdout`,
`stderr`, `end_request`, ...) return bytes and raise `ValueError` for a request that is not
active, which is a bug in the caller rather than in the peer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, NoReturn

# Record header (FCGI_Header): version, type, request id, content length, padding length, reserved.
RECORD_HEADER: Final = struct.Struct("!BBHHBx")
HEADER_LEN: Final = 8
VERSION_1: Final = 1
MAX_CONTENT_LENGTH: Final = 0xFFFF

# Record types.
BEGIN_REQUEST: Final = 1
ABORT_REQUEST: Final = 2
END_REQUEST: Final = 3
PARAMS: Final = 4
STDIN: Final = 5
STDOUT: Final = 6
STDERR: Final = 7
DATA: Final = 8
GET_VALUES: Final = 9
GET_VALUES_RESULT: Final = 10
UNKNOWN_TYPE: Final = 11

RECORD_TYPE_NAMES: Final = {
    BEGIN_REQUEST: "BEGIN_REQUEST", ABORT_REQUEST: "ABORT_REQUEST", END_REQUEST: "END_REQUEST",
    PARAMS: "PARAMS", STDIN: "STDIN", STDOUT: "STDOUT", STDERR: "STDERR", DATA: "DATA",
    GET_VALUES: "GET_VALUES", GET_VALUES_RESULT: "GET_VALUES_RESULT", UNKNOWN_TYPE: "UNKNOWN_TYPE",
}

# Roles, and the BEGIN_REQUEST flag.
RESPONDER: Final = 1
AUTHORIZER: Final = 2
FILTER: Final = 3
KEEP_CONN: Final = 1

# END_REQUEST protocol statuses.
REQUEST_COMPLETE: Final = 0
CANT_MPX_CONN: Final = 1
OVERLOADED: Final = 2
UNKNOWN_ROLE: Final = 3

# GET_VALUES variable names.
MAX_CONNS: Final = b"FCGI_MAX_CONNS"
MAX_REQS: Final = b"FCGI_MAX_REQS"
MPXS_CONNS: Final = b"FCGI_MPXS_CONNS"

_BEGIN_BODY = struct.Struct("!HB5x")
_END_RECORD = struct.Struct("!BBHHBxIB3x")
# The empty STDOUT record and END_REQUEST in one pack: the usual end of a response.
_STDOUT_END_AND_END_RECORD = struct.Struct("!BBHHBxBBHHBxIB3x")
_UNKNOWN_TYPE_RECORD = struct.Struct("!BBHHBxB7x")
_LENGTH4 = struct.Struct("!I")
_PAIR11 = struct.Struct("!BB")
_PADDING = tuple(bytes(n) for n in range(8))
# Output records carry at most this much: a multiple of 8 just under 65535, so full
# records need no padding.
_OUTPUT_CHUNK = 0xFFF8
# Consumed input is dropped from the front of the buffer only past this much, so a
# stream of small reads does not copy the buffer on every call.
_COMPACT_AFTER = 1 << 16


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed. str() says why."""


@dataclass(slots=True)
class BeginRequest:
    """A responder request started; its parameters follow."""

    request_id: int
    role: int
    keep_conn: bool


@dataclass(slots=True)
class Params:
    """The whole PARAMS stream of a request, decoded (a repeated name keeps its last value)."""

    request_id: int
    params: dict[bytes, bytes]  # or dict[str, str] with text_params


@dataclass(slots=True)
class Stdin:
    """A non-empty piece of the request body."""

    request_id: int
    data: bytes


@dataclass(slots=True)
class StdinEnd:
    """The request body is complete."""

    request_id: int


@dataclass(slots=True)
class AbortRequest:
    """The web server gave up on the request; answer it with `end_request` once the app stopped."""

    request_id: int


@dataclass(slots=True)
class ConnectionClosed:
    """The peer closed its side; any request still active will get no more input."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")

Event = BeginRequest | Params | Stdin | StdinEnd | AbortRequest | ConnectionClosed

# Input phases of an active request, and output flags.
_IN_PARAMS, _IN_STDIN, _IN_DONE, _ABORTED = 0, 1, 2, 3
_STDOUT_ENDED, _STDERR_SENT = 1, 2


class _Request:
    __slots__ = ("phase", "params", "output", "held")

    def __init__(self) -> None:
        self.phase = _IN_PARAMS
        # The PARAMS stream so far: the first record's content as is (usually the only one),
        # then a bytearray, so that many tiny records cost no more memory than their bytes.
        self.params: bytes | bytearray = b""
        self.output = 0
        self.held = 0  # PARAMS bytes counted against the connection's max_params_total


def encode_record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    """One record carrying `content` (at most 65535 bytes), padded to a multiple of 8."""
    length = len(content)
    if length > MAX_CONTENT_LENGTH:
        raise ValueError(f"record content of {length} bytes exceeds {MAX_CONTENT_LENGTH}")
    padding = -length & 7
    return b"".join((RECORD_HEADER.pack(VERSION_1, record_type, request_id, length, padding),
                     content, _PADDING[padding]))


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > 0x7FFFFFFF:
        raise ValueError(f"name-value length {length} exceeds 2**31 - 1")
    return _LENGTH4.pack(length | 0x80000000)


def encode_params(pairs: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs in FastCGI form: 1-byte lengths up to 127, 4-byte lengths above."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    parts: list[bytes] = []
    append = parts.append
    for name, value in items:
        name_length, value_length = len(name), len(value)
        if name_length < 0x80 and value_length < 0x80:
            append(_PAIR11.pack(name_length, value_length))
        else:
            append(_encode_length(name_length) + _encode_length(value_length))
        append(name)
        append(value)
    return b"".join(parts)


def decode_params(data: bytes, text: bool = False) -> list[tuple[bytes, bytes]] | list[tuple[str, str]]:
    """The name-value pairs in `data`; `ProtocolError` if a pair is truncated or garbled.

    `text`: as str, decoded as latin-1 (what CGI variables are in a WSGI environ): the whole
    stream is decoded once and sliced at the same offsets, a byte being one character."""
    if type(data) is not bytes:
        data = bytes(data)  # so that the slices below are bytes, copied once
    source = data.decode("latin-1") if text else data
    pairs: list = []
    append = pairs.append
    pos = 0
    end = len(data)
    try:
        while pos < end:
            # CGI variables are short: both lengths fit one byte, and this path is per pair.
            name_length = data[pos]
            value_length = data[pos + 1]
            if (name_length | value_length) < 0x80:
                pos += 2
            else:
                name_length, value_length, pos = _long_lengths(data, pos)
            name_end = pos + name_length
            value_end = name_end + value_length
            if value_end > end:
                raise ProtocolError(f"name-value pair lengths ({name_length}, {value_length}) "
                                    f"point {value_end - end} bytes past the end of the stream")
            append((source[pos:name_end], source[name_end:value_end]))
            pos = value_end
    except (IndexError, struct.error):
        raise ProtocolError("name-value pair truncated inside its lengths") from None
    return pairs


def _long_lengths(data: bytes, pos: int) -> tuple[int, int, int]:
    """Name length, value length and the position after them, when one of them is 4 bytes."""
    length = data[pos]
    if length > 0x7F:
        length = _LENGTH4.unpack_from(data, pos)[0] & 0x7FFFFFFF
        pos += 4
    else:
        pos += 1
    value_length = data[pos]
    if value_length > 0x7F:
        value_length = _LENGTH4.unpack_from(data, pos)[0] & 0x7FFFFFFF
        pos += 4
    else:
        pos += 1
    return length, value_length, pos


class FastCGIConnection:
    """The application side of one FastCGI transport connection (see the module docstring)."""

    __slots__ = ("_buf", "_pos", "_eof", "_error", "_requests", "_outbox",
                 "_keep_conn", "_multiplex", "_max_params_size", "_max_in_flight", "_values",
                 "_max_params_total", "_params_held",
                 "_text_params")

    def __init__(self, *, max_conns: int = 1000, max_reqs: int = 1000, multiplex: bool = True,
                 max_params_size: int = 1 << 20, max_requests_in_flight: int = 1000,
                 text_params: bool = False, max_params_total: int = 1 << 20) -> None:
        self._text_params = text_params  # Params as dict[str, str] (latin-1), for WSGI
        # The input buffer is the caller's bytes object while nothing is left over (no copy
        # on the common path), and a bytearray only while a record is split across reads.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._eof = False
        self._error: str | None = None
        self._requests: dict[int, _Request] = {}
        self._outbox: list[bytes] = []
        self._keep_conn = True
        self._multiplex = multiplex
        self._max_params_size = max_params_size
        # PARAMS of all the requests in flight on this connection together, buffered or decoded
        # and held until END_REQUEST: without it, many multiplexed requests each just under
        # max_params_size hold max_requests_in_flight times that per connection.
        self._max_params_total = max_params_total
        self._params_held = 0
        self._max_in_flight = max_requests_in_flight
        self._values = {MAX_CONNS: str(max_conns).encode(), MAX_REQS: str(max_reqs).encode(),
                        MPXS_CONNS: b"1" if multiplex else b"0"}

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; `b""` means the peer closed its side."""
        if self._error is not None:
            raise ProtocolError(self._error)
        if self._eof:
            if data:
                self._fail("data received after the end of the stream")
            return  # a repeated end-of-stream is harmless
        if not data:
            self._eof = True
            return
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            self._buf = bytes(data)
            self._pos = 0
        elif type(buf) is bytes:
            tail = bytearray(memoryview(buf)[pos:])
            tail += data
            self._buf = tail
            self._pos = 0
        else:
            if pos > _COMPACT_AFTER:
                del buf[:pos]
                self._pos = 0
            buf += data

    def next_event(self) -> Event | _Sentinel:
        """The next event, `NEED_DATA` when more input is needed, or `ConnectionClosed`."""
        if self._error is not None:
            raise ProtocolError(self._error)
        buf = self._buf
        pos = self._pos
        size = len(buf)
        requests = self._requests
        while size - pos >= HEADER_LEN:
            version, rtype, rid, clen, plen = RECORD_HEADER.unpack_from(buf, pos)
            if version != VERSION_1:
                self._fail(f"unsupported FastCGI version {version} in a record header")
            start = pos + HEADER_LEN
            end = start + clen
            if end + plen > size:
                break
            pos = self._pos = end + plen
            if rid == 0:
                self._management_record(rtype, buf[start:end])
                continue
            request = requests.get(rid)
            # The hot types first: a request is BEGIN, PARAMS..., PARAMS "", STDIN..., STDIN "".
            if rtype == STDIN:
                if request is None or request.phase == _ABORTED:
                    continue
                if request.phase != _IN_STDIN:
                    self._fail(f"request {rid}: STDIN "
                               + ("before the PARAMS stream ended" if request.phase == _IN_PARAMS
                                  else "after the end of the STDIN stream"))
                if clen:
                    return Stdin(rid, bytes(buf[start:end]))
                request.phase = _IN_DONE
                return StdinEnd(rid)
            if rtype == PARAMS:
                if request is None or request.phase == _ABORTED:
                    continue
                if request.phase != _IN_PARAMS:
                    self._fail(f"request {rid}: PARAMS after the end of the PARAMS stream")
                if clen:
                    params = request.params
                    if len(params) + clen > self._max_params_size:
                        self._fail(f"request {rid}: PARAMS stream exceeds "
                                   f"{self._max_params_size} bytes")
                    if self._params_held + clen > self._max_params_total:
                        self._fail(f"request {rid}: the PARAMS of the requests in flight exceed "
                                   f"{self._max_params_total} bytes on this connection")
                    self._params_held += clen
                    request.held += clen
                    if not params:
                        request.params = buf[start:end]
                    else:
                        if type(params) is not bytearray:
                            params = request.params = bytearray(params)
                        params += memoryview(buf)[start:end]
                    continue
                request.phase = _IN_STDIN
                return Params(rid, self._decode_request_params(rid, request))
            if rtype == BEGIN_REQUEST:
                event = self._begin_request(rid, request, buf[start:end])
                if event is not None:
                    return event
                continue
            if rtype == ABORT_REQUEST:
                if request is None or request.phase == _ABORTED:
                    continue
                request.phase = _ABORTED
                request.params = b""
                return AbortRequest(rid)
            if rtype == DATA:
                continue  # the FILTER role's stream; a responder has no use for it
            if rtype in RECORD_TYPE_NAMES:
                self._fail(f"request {rid}: unexpected {RECORD_TYPE_NAMES[rtype]} record")
            self._outbox.append(_UNKNOWN_TYPE_RECORD.pack(VERSION_1, UNKNOWN_TYPE, 0, 8, 0, rtype))
        if self._eof:
            # Whatever is left is a record cut short by the close; the driver cleans up.
            return ConnectionClosed()
        return NEED_DATA

    def _fail(self, reason: str) -> NoReturn:
        self._error = reason
        raise ProtocolError(reason)

    def _management_record(self, rtype: int, content: bytes) -> None:
        if rtype == GET_VALUES:
            values = self._values
            try:
                asked = decode_params(content)
            except ProtocolError as e:
                self._fail(f"GET_VALUES: {e}")
            answer = {name: values[name] for name, _ in asked if name in values}
            self._outbox.append(encode_record(GET_VALUES_RESULT, 0, encode_params(answer)))
        elif BEGIN_REQUEST <= rtype <= DATA:
            self._fail(f"{RECORD_TYPE_NAMES[rtype]} record with the null request id 0")
        else:
            self._outbox.append(_UNKNOWN_TYPE_RECORD.pack(VERSION_1, UNKNOWN_TYPE, 0, 8, 0, rtype))

    def _begin_request(self, rid: int, request: _Request | None,
                       content: bytes) -> BeginRequest | None:
        if request is not None:
            self._fail(f"request {rid}: BEGIN_REQUEST for a request id still active")
        if len(content) != _BEGIN_BODY.size:
            self._fail(f"request {rid}: BEGIN_REQUEST body of {len(content)} bytes, expected 8")
        role, flags = _BEGIN_BODY.unpack(content)
        keep_conn = bool(flags & KEEP_CONN)
        if not keep_conn:
            self._keep_conn = False
        if role != RESPONDER:
            refusal = UNKNOWN_ROLE
        elif self._requests and not self._multiplex:
            refusal = CANT_MPX_CONN
        elif len(self._requests) >= self._max_in_flight:
            refusal = OVERLOADED
        else:
            self._requests[rid] = _Request()
            return BeginRequest(rid, role, keep_conn)
        self._outbox.append(_END_RECORD.pack(VERSION_1, END_REQUEST, rid, 8, 0, 0, refusal))
        return None

    def _decode_request_params(self, rid: int, request: _Request) -> dict:
        stream = request.params
        request.params = b""
        try:
            return dict(decode_params(stream, self._text_params))
        except ProtocolError as e:
            self._fail(f"request {rid}: PARAMS: {e}")

    def data_to_send(self) -> bytes:
        """Answers the connection produced by itself (management, refusals); then cleared."""
        if not self._outbox:
            return b""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    # -- output -----------------------------------------------------------------------------

    def _open_request(self, request_id: int) -> _Request:
        request = self._requests.get(request_id)
        if request is None:
            raise ValueError(f"request {request_id} is not active")
        return request

    def stdout(self, request_id: int, data: bytes) -> bytes:
        """STDOUT records carrying `data`; `b""` for empty data (use `stdout_end` to close)."""
        if self._open_request(request_id).output & _STDOUT_ENDED:
            raise ValueError(f"request {request_id}: STDOUT already ended")
        return _stream_records(STDOUT, request_id, data) if data else b""

    def stdout_end(self, request_id: int) -> bytes:
        """The empty STDOUT record that ends the response body."""
        request = self._open_request(request_id)
        if request.output & _STDOUT_ENDED:
            raise ValueError(f"request {request_id}: STDOUT already ended")
        request.output |= _STDOUT_ENDED
        return RECORD_HEADER.pack(VERSION_1, STDOUT, request_id, 0, 0)

    def stderr(self, request_id: int, data: bytes) -> bytes:
        """STDERR records carrying `data` (the web server logs them)."""
        request = self._open_request(request_id)
        if not data:
            return b""
        request.output |= _STDERR_SENT
        return _stream_records(STDERR, request_id, data)

    def end_request(self, request_id: int, app_status: int = 0,
                    protocol_status: int = REQUEST_COMPLETE) -> bytes:
        """END_REQUEST, preceded by the records that still close STDOUT/STDERR; forgets the id."""
        request = self._open_request(request_id)
        del self._requests[request_id]
        self._params_held -= request.held
        app_status &= 0xFFFFFFFF
        prefix = b""
        if request.output & _STDERR_SENT:
            # A stream is its records followed by an empty one; STDERR is closed only if opened.
            prefix = RECORD_HEADER.pack(VERSION_1, STDERR, request_id, 0, 0)
        if request.output & _STDOUT_ENDED:
            return prefix + _END_RECORD.pack(VERSION_1, END_REQUEST, request_id, 8, 0,
                                             app_status, protocol_status)
        return prefix + _STDOUT_END_AND_END_RECORD.pack(
            VERSION_1, STDOUT, request_id, 0, 0,
            VERSION_1, END_REQUEST, request_id, 8, 0, app_status, protocol_status)

    # -- state ------------------------------------------------------------------------------

    def is_active(self, request_id: int) -> bool:
        """Whether `request_id` began and has not been ended by `end_request`."""
        return request_id in self._requests

    @property
    def requests_in_flight(self) -> int:
        """How many requests are active: the driver closes a non-keep-alive connection at 0."""
        return len(self._requests)

    @property
    def keep_conn(self) -> bool:
        """False once a request began without FCGI_KEEP_CONN: the application must then close
        the connection after answering it (also when the answer was a refusal)."""
        return self._keep_conn


def _stream_records(record_type: int, request_id: int, data: bytes) -> bytes:
    length = len(data)
    if length <= _OUTPUT_CHUNK:
        padding = -length & 7
        return b"".join((RECORD_HEADER.pack(VERSION_1, record_type, request_id, length, padding),
                         data, _PADDING[padding]))
    # Slices of a memoryview are not copied; the join below is the only copy of the data.
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    full_header = RECORD_HEADER.pack(VERSION_1, record_type, request_id, _OUTPUT_CHUNK, 0)
    for offset in range(0, length - _OUTPUT_CHUNK, _OUTPUT_CHUNK):
        parts.append(full_header)
        parts.append(view[offset:offset + _OUTPUT_CHUNK])
    offset = (length - 1) // _OUTPUT_CHUNK * _OUTPUT_CHUNK
    rest = length - offset
    padding = -rest & 7
    parts.append(RECORD_HEADER.pack(VERSION_1, record_type, request_id, rest, padding))
    parts.append(view[offset:])
    parts.append(_PADDING[padding])
    return b"".join(parts)

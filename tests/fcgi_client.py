"""A small blocking FastCGI client for tests, built on pyd's own codec (the web server's side).

Sends BEGIN/PARAMS/STDIN for one or several multiplexed requests and collects STDOUT, STDERR and
END_REQUEST per request id; also raw records, for the malformed-record corpus.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pyd.protocols.fastcgi import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    HEADER_LEN,
    KEEP_CONN,
    PARAMS,
    RECORD_HEADER,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    decode_params,
    encode_params,
    encode_record,
)

_END_BODY = struct.Struct("!IB3x")
# Web servers cut their streams into records of a few kilobytes; so do we, to exercise that.
STDIN_CHUNK = 16384

ParamsLike = Mapping[str | bytes, str | bytes] | Iterable[tuple[str | bytes, str | bytes]]


def _as_bytes(text: str | bytes) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else text


def begin_request(request_id: int, keep_conn: bool = False, role: int = RESPONDER) -> bytes:
    """A BEGIN_REQUEST record."""
    body = struct.pack("!HB5x", role, KEEP_CONN if keep_conn else 0)
    return encode_record(BEGIN_REQUEST, request_id, body)


def params_records(request_id: int, params: ParamsLike, chunk: int = 65535) -> bytes:
    """The PARAMS stream for `params`, cut every `chunk` bytes, and its empty record."""
    items = params.items() if isinstance(params, Mapping) else params
    stream = encode_params([(_as_bytes(k), _as_bytes(v)) for k, v in items])
    return stream_records(PARAMS, request_id, stream, chunk)


def stream_records(record_type: int, request_id: int, data: bytes, chunk: int = STDIN_CHUNK) -> bytes:
    """`data` as records of `record_type` of at most `chunk` bytes, then the empty record."""
    parts = [encode_record(record_type, request_id, data[i:i + chunk])
             for i in range(0, len(data), chunk)]
    parts.append(encode_record(record_type, request_id, b""))
    return b"".join(parts)


def request_bytes(request_id: int, params: ParamsLike, body: bytes = b"", keep_conn: bool = False,
                  params_chunk: int = 65535, stdin_chunk: int = STDIN_CHUNK) -> bytes:
    """Everything a web server sends for one responder request."""
    return (begin_request(request_id, keep_conn) + params_records(request_id, params, params_chunk)
            + stream_records(STDIN, request_id, body, stdin_chunk))


def parse_records(data: bytes | bytearray) -> tuple[list[tuple[int, int, bytes]], int]:
    """Complete records in `data` as (type, request_id, content), and the bytes they used."""
    records = []
    pos = 0
    while len(data) - pos >= HEADER_LEN:
        version, rtype, rid, clen, plen = RECORD_HEADER.unpack_from(data, pos)
        if version != 1:
            raise ValueError(f"bad FastCGI version {version} from the application")
        end = pos + HEADER_LEN + clen
        if end + plen > len(data):
            break
        records.append((rtype, rid, bytes(data[pos + HEADER_LEN:end])))
        pos = end + plen
    return records, pos


@dataclass
class Response:
    """What the application sent for one request."""

    stdout: bytes = b""
    stderr: bytes = b""
    app_status: int | None = None
    protocol_status: int | None = None
    stdout_records: int = 0
    stdout_closed: bool = False

    @property
    def complete(self) -> bool:
        return self.protocol_status is not None

    def cgi(self) -> tuple[str, dict[str, str], bytes]:
        """The CGI response split into status line ("200 OK" when absent), headers and body."""
        head, _, body = self.stdout.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = headers.pop("status", "200 OK")
        return status, headers, body


@dataclass
class Exchange:
    """Everything read from one connection: responses by request id, management answers."""

    responses: dict[int, Response] = field(default_factory=dict)
    management: list[tuple[int, bytes]] = field(default_factory=list)
    closed: bool = False


class FastCGIClient:
    """A blocking connection to a FastCGI application (TCP `(host, port)` or a unix path)."""

    def __init__(self, address: tuple[str, int] | str, timeout: float = 10.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self._buf = bytearray()
        self.exchange = Exchange()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> FastCGIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def abort(self, request_id: int) -> None:
        self.send(encode_record(ABORT_REQUEST, request_id, b""))

    def read_until(self, done: Callable[[Exchange], bool], max_bytes: int = 1 << 30) -> Exchange:
        """Read records until `done(exchange)` is true or the application closes."""
        ex = self.exchange
        while not done(ex):
            chunk = self.sock.recv(65536)
            if not chunk:
                ex.closed = True
                break
            self._buf += chunk
            if len(self._buf) > max_bytes:
                raise ValueError("the application sent more than expected")
            records, used = parse_records(self._buf)
            del self._buf[:used]
            for rtype, rid, content in records:
                self._collect(rtype, rid, content)
        return ex

    def _collect(self, rtype: int, rid: int, content: bytes) -> None:
        if rid == 0:
            self.exchange.management.append((rtype, content))
            return
        response = self.exchange.responses.setdefault(rid, Response())
        if rtype == STDOUT:
            response.stdout += content
            response.stdout_records += 1
            response.stdout_closed = not content
        elif rtype == STDERR:
            response.stderr += content
        elif rtype == END_REQUEST:
            response.app_status, response.protocol_status = _END_BODY.unpack(content)
        else:
            raise ValueError(f"unexpected record type {rtype} for request {rid}")

    def request(self, params: ParamsLike, body: bytes = b"", request_id: int = 1,
                keep_conn: bool = False) -> Response:
        """One request, sent whole; waits for its END_REQUEST (or the close)."""
        self.send(request_bytes(request_id, params, body, keep_conn))
        self.read_until(lambda ex: request_id in ex.responses and ex.responses[request_id].complete)
        return self.exchange.responses.pop(request_id, Response())

    def multiplexed(self, requests: Mapping[int, tuple[ParamsLike, bytes]],
                    interleave: int = 4096) -> dict[int, Response]:
        """Several requests on this connection with their records interleaved (KEEP_CONN set)."""
        streams = [bytearray(request_bytes(rid, params, body, keep_conn=True, stdin_chunk=interleave))
                   for rid, (params, body) in requests.items()]
        # Round-robin whole records from each request's stream, as a multiplexing server would.
        pending = [parse_records(s)[0] for s in streams]
        out = []
        while any(pending):
            for records in pending:
                if records:
                    rtype, rid, content = records.pop(0)
                    out.append(encode_record(rtype, rid, content))
        self.send(b"".join(out))
        ids = set(requests)
        self.read_until(lambda ex: all(i in ex.responses and ex.responses[i].complete for i in ids))
        return {i: self.exchange.responses.pop(i, Response()) for i in ids}

    def get_values(self, names: Iterable[bytes]) -> dict[bytes, bytes]:
        """Ask FCGI_GET_VALUES; the application's answer as a dict."""
        self.send(encode_record(GET_VALUES, 0, encode_params([(n, b"") for n in names])))
        self.read_until(lambda ex: any(t == GET_VALUES_RESULT for t, _ in ex.management))
        for i, (rtype, content) in enumerate(self.exchange.management):
            if rtype == GET_VALUES_RESULT:
                del self.exchange.management[i]
                return dict(decode_params(content))
        return {}

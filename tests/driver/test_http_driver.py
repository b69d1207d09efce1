"""The HTTP/1.1 driver in process: keep-alive, pipelining, parking, deadlines, sendfile, and the
exchange's observers (the access log, the pool's request_finished) fed a RequestRecord."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time

import pytest
from conftest import wait_for

from pyd.net import stream as net_stream
from pyd.pools.http import HTTPConnection, HTTPServerPool
from pyd.web.exchange import RequestRecord

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_response(s: socket.socket, buf: bytearray) -> bytes:
    """One response with a Content-Length (or chunked) from `buf` and the socket."""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = bytes(buf[:head_end]).lower()
            if b"transfer-encoding: chunked" in head:
                end = buf.find(b"\r\n0\r\n\r\n", head_end)
                if end >= 0:
                    size = end + 7
                    break
            else:
                length = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                size = head_end + 4 + length
                if len(buf) >= size:
                    break
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole response: {bytes(buf)!r}")
        buf += chunk
    out = bytes(buf[:size])
    del buf[:size]
    return out


def connections_of(served) -> list[HTTPConnection]:
    return [c for c in list(served.pool.connections.values()) if type(c) is HTTPConnection]


def test_keep_alive_serves_many_requests_on_one_connection(serve):
    served = serve("app driverapps:hello; access-log off;\n")
    with connect(served.port) as s:
        buf = bytearray()
        for _ in range(5):
            s.sendall(GET)
            response = read_response(s, buf)
            assert response.startswith(b"HTTP/1.1 200 OK\r\n")
            assert response.endswith(b"\r\n\r\nHello, World!")
            assert b"connection: close" not in response.lower()
        assert len(connections_of(served)) == 1


def test_pipelined_requests_are_answered_in_order(serve):
    served = serve("app driverapps:echo; access-log off;\n")
    with connect(served.port) as s:
        s.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"2\r\nxy\r\n0\r\n\r\n")
        buf = bytearray()
        bodies = [read_response(s, buf).split(b"\r\n\r\n", 1)[1] for _ in range(3)]
    assert bodies[0].endswith(b"got 3: abc\r\n0\r\n\r\n") or b"got 3: abc" in bodies[0]
    assert b"got 0: " in bodies[1]
    assert b"got 2: xy" in bodies[2]


def test_an_idle_connection_parks_without_a_greenlet_and_resumes(serve):
    served = serve("app driverapps:hello; access-log off; keepalive-timeout 30s;\n")
    with connect(served.port) as s:
        buf = bytearray()
        s.sendall(GET)
        assert read_response(s, buf).endswith(b"Hello, World!")
        (c,) = wait_for(lambda: [c for c in connections_of(served)
                                 if c.stream.parked is not None], timeout=5)
        # parked: the pool keeps the connection itself, no greenlet serves it
        assert served.pool.connections.get(c) is c
        assert not [g for g, v in list(served.pool.connections.items()) if v is c and g is not c]
        for _ in range(2):
            s.sendall(GET)
            assert read_response(s, buf).endswith(b"Hello, World!")
        assert c.stream.parked is None or served.pool.connections.get(c) is c
        assert connections_of(served) == [c]  # the same connection, resumed


def test_keepalive_timeout_closes_an_idle_connection(serve):
    served = serve("app driverapps:hello; access-log off; keepalive-timeout 1s;\n")
    with connect(served.port) as s:
        s.sendall(GET)
        read_response(s, bytearray())
        started = time.monotonic()
        assert s.recv(100) == b""
        assert 0.7 < time.monotonic() - started < 3.0
    wait_for(lambda: not connections_of(served))


def test_client_header_timeout_answers_408(serve):
    served = serve("app driverapps:hello; client-header-timeout 1s;\n")
    records: list[RequestRecord] = []
    served.pool.site.observe(records.append)
    with connect(served.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        started = time.monotonic()
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert 0.7 < time.monotonic() - started < 3.5
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in data
    (record,) = wait_for(lambda: records)
    assert record.status == "408" and record.code == 408 and record.method == ""
    assert record.client == "127.0.0.1"


def test_sendfile_serves_a_static_file(serve, site_dir, monkeypatch):
    calls = []
    real = os.sendfile

    def counting(out, fd, offset, count):
        calls.append(count)
        return real(out, fd, offset, count)

    monkeypatch.setattr(net_stream.os, "sendfile", counting)
    served = serve(f"app driverapps:hello; access-log off;\n"
                   f"location /static/ {{ alias {site_dir}/static/; }}\n")
    expected = (site_dir / "static" / "big.bin").read_bytes()
    with connect(served.port) as s:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(s, bytearray())
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and body == expected
    assert calls and sum(calls) >= len(expected) - 0  # the body went by sendfile(2)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reuses_the_connection_and_reads_a_streamed_body(serve):
    served = serve("app driverapps:stream; access-log off;\n")
    url = f"http://127.0.0.1:{served.port}/s"
    r = subprocess.run(["curl", "-sS", "-v", "--max-time", "10", url, url],
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"part 0\npart 1\npart 2\n" * 2
    assert b"Re-using existing connection" in r.stderr or b"Reusing existing" in r.stderr


def test_the_access_log_observer_gets_a_record_per_response(serve, caplog):
    caplog.set_level(logging.INFO, logger="pyd.http.access")
    served = serve("app driverapps:echo; access-log combined;\n"
                   "location /hello/ { app driverapps:hello; }\n")
    records: list[RequestRecord] = []
    served.pool.site.observe(records.append)
    with connect(served.port) as s:
        s.sendall(b"POST /hello/x?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: drv/1\r\n"
                  b"Referer: http://r/\r\nContent-Length: 5\r\n\r\nhello")
        read_response(s, bytearray())
        s.sendall(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s, bytearray())
    first, second = wait_for(lambda: records if len(records) >= 2 else None)
    assert first.pool == "HTTPServer" and first.location == "/hello/"
    assert first.method == "POST" and first.target == b"/hello/x?q=1" and first.path == "/hello/x"
    assert first.version == "1.1" and first.status == "200 OK" and first.code == 200
    assert first.bytes_in == 0  # hello never reads its body
    assert first.bytes_out == len(b"Hello, World!")
    assert first.client == "127.0.0.1" and first.user_agent == b"drv/1"
    assert first.referer == b"http://r/"
    assert 0 <= first.duration < 5 and abs(first.time - time.time()) < 10
    assert second.location == "/" and second.method == "GET" and second.user_agent is None
    with pytest.raises(AttributeError):
        first.status = "500"  # frozen
    lines = wait_for(lambda: [r.getMessage() for r in caplog.records
                              if r.name == "pyd.http.access"] or None)
    assert lines[0].startswith('127.0.0.1 - - [')
    assert '"POST /hello/x?q=1 HTTP/1.1" 200 13 "http://r/" "drv/1" ' in lines[0]


def test_request_finished_gets_the_record_with_the_body_read(serve):
    got: list[RequestRecord] = []

    class Counting(HTTPServerPool):
        def request_finished(self, token, record=None):
            got.append(record)
            super().request_finished(token, record)

    served = serve("app driverapps:echo; access-log off;\n", cls=Counting)
    with connect(served.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n1234567")
        body = read_response(s, bytearray()).split(b"\r\n\r\n", 1)[1]
    assert b"got 7: 1234567" in body
    (record,) = wait_for(lambda: got)
    assert record.bytes_in == 7 and record.status == "200 OK" and record.method == "POST"
    assert record.bytes_out == len(b"got 7: 1234567")


def test_a_graceful_shutdown_closes_parked_connections(serve):
    served = serve("app driverapps:hello; access-log off; keepalive-timeout 60s;\n")
    conns = [connect(served.port) for _ in range(5)]
    for s in conns:
        s.sendall(GET)
        read_response(s, bytearray())
    wait_for(lambda: len([c for c in connections_of(served) if c.stream.parked is not None])
             == 5)
    served.call(lambda: served.pool.shutdown(True))
    for s in conns:
        assert s.recv(100) == b""
        s.close()
    assert wait_for(lambda: served.call(lambda: served.pool.shutdown(True)))

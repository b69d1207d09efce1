"""Request bodies in the HTTP pool: request-buffering (memory, then a temporary file), limits
enforced before the app runs, and wsgi.input that never piles a body up by surprise."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest
from harness import free_port
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

APP = r'''
import hashlib, json, os

CALLS = os.path.join(os.path.dirname(__file__), "calls.log")

def info(environ, start_response):
    with open(CALLS, "a") as f:
        f.write("called\n")
    body = environ["wsgi.input"]
    if environ.get("QUERY_STRING") == "line":
        first = body.readline()
        out = {"line": len(first)}
    else:
        data = body.read()
        out = {"length": len(data), "sha1": hashlib.sha1(data).hexdigest(),
               "spooled_to_file": bool(getattr(body, "_rolled", False)),
               "kind": type(body).__name__}
    payload = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(payload)))])
    return [payload]
'''


def post(port: int, body: bytes, query: str = "") -> tuple[int, bytes]:
    head = (f"POST /{'?' + query if query else ''} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head)
        try:
            s.sendall(body)
        except OSError:
            pass  # refused early: the server closed while we were still sending
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.fixture
def server(pyd_factory, tmp_path):
    (tmp_path / "bodyapp.py").write_text(APP)

    def start(pool_extra: str):
        port = free_port()
        p = pyd_factory(f"user root;\nworkers 1;\ncwd {tmp_path};\n"
                        f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app bodyapp:info; "
                        f"access-log off; {pool_extra} }}\n")
        p.start()
        return port

    return start


def calls(tmp_path) -> int:
    try:
        return (tmp_path / "calls.log").read_text().count("called")
    except FileNotFoundError:
        return 0


def test_request_buffering_spools_large_bodies_to_a_file(server, tmp_path):
    port = server("request-buffering on; client-body-buffer-size 64K; "
                  "client-max-body-size 10M;")
    small = os.urandom(10_000)
    status, body = post(port, small)
    data = json.loads(body)
    assert status == 200 and data["length"] == len(small)
    assert data["sha1"] == hashlib.sha1(small).hexdigest()
    assert data["kind"] == "SpooledTemporaryFile" and not data["spooled_to_file"]
    large = os.urandom(3 << 20)
    status, body = post(port, large)
    data = json.loads(body)
    assert status == 200 and data["length"] == len(large) and data["spooled_to_file"]
    assert data["sha1"] == hashlib.sha1(large).hexdigest()


def test_request_buffering_refuses_a_large_body_before_the_app_runs(server, tmp_path):
    port = server("request-buffering on; client-max-body-size 100K;")
    before = calls(tmp_path)
    status, _ = post(port, os.urandom(300_000))
    assert status == 413
    assert calls(tmp_path) == before


def test_streaming_input_by_default_and_readline_is_bounded(server, tmp_path):
    port = server("client-max-body-size 10M;")
    status, body = post(port, os.urandom(100) + b"x" * 300_000, query="")
    assert status == 200 and json.loads(body)["kind"] == "BodyReader"
    status, body = post(port, b"y" * 300_000, query="line")  # no newline in 300 KB
    assert status == 200 and json.loads(body)["line"] == 65536


@pytest.mark.parametrize("chunks", [
    [b"y" * 65536, b"y" * 10],  # a chunk of exactly the limit, without a newline
    [b"y" * 65535, b"y", b"\n"],
    [b"y" * 70000],
    [b"y" * 1000] * 70,
])
def test_readline_returns_the_limit_however_the_body_is_split(chunks):
    from pyd.web.wsgi import MAX_LINE, BodyReader

    pieces = iter(chunks)
    reader = BodyReader(lambda: next(pieces, b""))
    lines = []
    while line := reader.readline():
        lines.append(line)
    assert b"".join(lines) == b"".join(chunks)
    assert len(lines[0]) == MAX_LINE
    assert all(len(x) <= MAX_LINE for x in lines)


def test_readline_sizes():
    from pyd.web.wsgi import BodyReader

    pieces = iter([b"ab\ncd", b"ef\n", b"g"])
    r = BodyReader(lambda: next(pieces, b""))
    assert [r.readline(2), r.readline(0), r.readline(), r.readline(None), r.readline()] == [
        b"ab", b"", b"\n", b"cdef\n", b"g"]
    assert r.readline() == b"" and r.bytes_read == 9


@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), max_size=10),
       st.lists(st.sampled_from(["read", "line", "read1"]).flatmap(
           lambda op: st.tuples(st.just(op), st.sampled_from([-1, 0, 1, 5, 64, 1000]))),
           max_size=30))
@settings(max_examples=300, deadline=None)
def test_body_reader_gives_the_body_whole_however_it_is_split_and_read(body, cuts, ops):
    from pyd.web.wsgi import BodyReader

    chunks, pos = [], 0
    for n in cuts:
        if pos < len(body):
            chunks.append(body[pos:pos + n])
            pos += n
    chunks.append(body[pos:])
    pieces = iter([c for c in chunks if c])
    reader = BodyReader(lambda: next(pieces, b""))
    out = []
    for op, size in ops:
        got = {"read": reader.read, "line": reader.readline, "read1": reader.read1}[op](size)
        assert size < 0 or len(got) <= size
        out.append(got)
    out.append(reader.read())
    assert b"".join(out) == body and reader.bytes_read == len(body)
    assert reader.read() == b"" and reader.readline() == b""

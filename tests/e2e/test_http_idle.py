"""Idle keep-alive connections in the HTTP pool: parked without a greenlet after a moment,
resumed by the next request, closed by keepalive-timeout and by a graceful stop."""

from __future__ import annotations

import socket
import time

import pytest
from harness import free_port

pytestmark = pytest.mark.e2e

HELLO = ("import os\n"
         "def app(environ, start_response):\n"
         "    body = b'pid %d' % os.getpid()\n"
         "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
         "    return [body]\n")

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def server(pyd_factory, tmp_path):
    (tmp_path / "hello.py").write_text(HELLO)

    def start(extra: str = ""):
        port = free_port()
        p = pyd_factory(f"user root;\nworkers 1;\ncwd {tmp_path};\n"
                        f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app hello:app; "
                        f"access-log off; {extra} }}\n")
        p.start()
        return p, port

    return start


def exchange(s: socket.socket) -> bytes:
    s.sendall(REQUEST)
    data = b""
    while not data.endswith(b"\r\n\r\n") and b"pid" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_parked_connection_serves_the_next_request(server):
    p, port = server()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        first = exchange(s)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(1.6)  # idle long enough to be parked
        for _ in range(3):
            again = exchange(s)
            assert again.startswith(b"HTTP/1.1 200"), again
            assert again.rsplit(b" ", 1)[-1] == first.rsplit(b" ", 1)[-1]  # same worker
            time.sleep(1.2)


def test_keepalive_timeout_closes_a_parked_connection(server):
    p, port = server("keepalive-timeout 2s;")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert exchange(s).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert s.recv(100) == b""  # the server closes it
        assert 1.5 < time.monotonic() - started < 4.0


def test_graceful_stop_closes_parked_connections_at_once(server):
    p, port = server("keepalive-timeout 60s;")
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    for s in conns:
        assert exchange(s).startswith(b"HTTP/1.1 200")
    time.sleep(1.6)
    started = time.monotonic()
    assert p.cli("graceful-stop").returncode == 0
    assert time.monotonic() - started < 5.0  # not the 60s keep-alive timeout
    for s in conns:
        assert s.recv(100) == b""
        s.close()

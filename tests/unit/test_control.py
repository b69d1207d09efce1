"""The master's control socket in-process (gevent, a unix socket under tmp_path): a client that
says nothing, or stops reading, holds a connection for a bounded time and never a command."""

from __future__ import annotations

import json

import gevent
import pytest
from gevent import socket

from pyd.ipc.control import ControlServer


@pytest.fixture
def server(tmp_path):
    finished = []

    def handler(cmd, args, progress):
        if cmd == "chatty":
            for i in range(2000):  # ~2 MB of progress: more than a unix socket buffers
                progress(f"{i} " + "x" * 1000)
        finished.append(cmd)
        return {"ok": True, "message": cmd}

    s = ControlServer(str(tmp_path / "pyd.sock"), handler, read_timeout=0.3, send_timeout=0.3)
    s.start()
    s.finished = finished
    yield s
    s.close()


def connect(server) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(server.path)
    return c


def ask(server, cmd: str) -> dict:
    c = connect(server)
    with c:
        c.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        f = c.makefile("rb")
        with gevent.Timeout(5):
            return json.loads(f.readline())


def test_a_client_that_says_nothing_is_closed_and_others_are_served(server):
    silent = connect(server)
    with silent:
        assert ask(server, "status") == {"ok": True, "message": "status"}
        with gevent.Timeout(3, AssertionError("a silent client was never closed")):
            assert silent.recv(100) == b""


def test_a_client_that_trickles_its_line_is_closed_at_the_deadline(server):
    slow = connect(server)
    with slow:
        with gevent.Timeout(3, AssertionError("a trickling client was never closed")):
            while not _closed(slow):  # a byte at a time, never the end of the line
                try:
                    slow.send(b" ")
                except OSError:
                    break
                gevent.sleep(0.05)
    assert server.finished == []


def _closed(sock) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_client_that_stops_reading_does_not_stop_its_command(server):
    deaf = connect(server)
    with deaf:
        deaf.sendall(b'{"cmd": "chatty"}\n')
        with gevent.Timeout(5, AssertionError("the command waited for its client to read")):
            while "chatty" not in server.finished:
                gevent.sleep(0.05)
    assert ask(server, "after") == {"ok": True, "message": "after"}

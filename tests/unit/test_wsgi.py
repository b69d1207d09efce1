"""The WSGI glue both pools share: what an app gives start_response is checked before any of it
goes out, so a status line or header cannot inject another header, whatever the pool."""

from __future__ import annotations

import logging

import pytest

from pyd.web import wsgi


class Recorder:
    """A Transport that records what the pool would have sent."""

    def __init__(self):
        self.headers_sent = False
        self.sent: list = []
        self.failed: BaseException | None = None

    def start(self, status, headers, content_length):
        self.headers_sent = True
        self.sent.append(("start", status, list(headers)))

    def write(self, data):
        self.sent.append(("write", data))

    def respond(self, status, headers, body):
        self.headers_sent = True
        self.sent.append(("respond", status, list(headers), body))

    def sendfile(self, file, offset, count):
        return False

    def finish(self):
        self.sent.append(("finish",))

    def fail(self, exc):
        self.failed = exc


def run(app) -> Recorder:
    t = Recorder()
    wsgi.run(app, {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, t,
             logging.getLogger("test.wsgi"))
    return t


BAD_HEADS = [
    ("200 OK\r\nSet-Cookie: session=stolen", []),
    ("200 OK\nX-Injected: 1", []),
    ("200 OK\rX", []),
    ("200 OK\0", []),
    ("200\tOK", []),
    ("20 OK", []),
    ("2000 OK", []),
    ("099 Nope", []),
    ("600 Nope", []),
    ("OK", []),
    ("", []),
    ("200 OK", [("X-A", "1\r\nSet-Cookie: session=stolen")]),
    ("200 OK", [("X-A", "1\nX: 2")]),
    ("200 OK", [("X-A", "a\0b")]),
    ("200 OK", [("X-A\r\nSet-Cookie", "x")]),
    ("200 OK", [("X A", "x")]),
    ("200 OK", [("X:A", "x")]),
    ("200 OK", [("", "x")]),
    ("200 OK", [("X-A", "snowman \u2603")]),  # not latin-1
    ("200 OK", [("X-A", 1)]),
    ("200 OK", [(b"X-A", "1")]),
    ("200 OK", [("X-A", "1", "2")]),
    ("200 OK", [["X-A", "1"]]),
]


@pytest.mark.parametrize("status,headers", BAD_HEADS)
@pytest.mark.parametrize("style", ["list", "iterable", "write"])
def test_an_invalid_status_or_header_never_goes_out(status, headers, style):
    def app(environ, start_response):
        write = start_response(status, headers)
        if style == "write":
            write(b"body")
            return []
        return [b"body"] if style == "list" else iter([b"body"])

    t = run(app)
    assert t.sent == [] and isinstance(t.failed, ValueError), (t.sent, t.failed)


def test_headers_changed_after_start_response_are_checked_too():
    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        start_response("200 OK", headers)
        headers.append(("X-Late", "1\r\nSet-Cookie: session=stolen"))
        return [b"body"]

    t = run(app)
    assert t.sent == [] and isinstance(t.failed, ValueError)


@pytest.mark.parametrize("status", ["200 OK", "200", "404 Not Found", "599 Odd\treason",
                                    "200 Caf\xe9", "204 "])
def test_valid_heads_go_out_unchanged(status):
    headers = [("Content-Type", "text/plain"), ("X-Odd_Name!", "v\tw \xe9"), ("X-Empty", "")]

    def app(environ, start_response):
        start_response(status, headers)
        return [b"body"]

    for _ in range(2):  # the second time from what was remembered
        t = run(app)
        assert t.failed is None and t.sent == [("respond", status, headers, b"body")]

"""Pool:HTTPServer end to end: a real pyd per test (the harness), talked to with curl, raw sockets,
the standard library's client and a real Flask app; responses checked with httplint."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from email.utils import formatdate
from pathlib import Path

import brotli
import pytest
import zstandard
from harness import free_port, http_get, raw_exchange
from unit.test_h1 import MALFORMED

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CURL = shutil.which("curl")

try:
    from httplint import HttpResponseLinter, levels
except ImportError:  # pragma: no cover - httplint is in the test extras
    HttpResponseLinter = None

# The test apps, written next to each test's config. Files they record go to records/.
APPS = r'''
import hashlib
import json
import os
import time
from wsgiref.validate import validator

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDS = os.path.join(HERE, "records")


def record(name, text="1"):
    with open(os.path.join(RECORDS, name), "a") as f:
        f.write(text + "\n")


def wait_for(name, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(RECORDS, name)):
            return True
        time.sleep(0.01)
    return False


def hello(environ, start_response):
    body = b"hello from %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def read_all(inp):
    parts = []
    while True:
        part = inp.read(65536)  # PEP 3333: read() takes a size
        if not part:
            return b"".join(parts)
        parts.append(part)


def echo(environ, start_response):
    data = read_all(environ["wsgi.input"])
    info = {k: v for k, v in environ.items() if isinstance(v, str)}
    info["body_length"] = len(data)
    info["body_sha256"] = hashlib.sha256(data).hexdigest()
    info["pid"] = os.getpid()
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def readlines(environ, start_response):
    inp = environ["wsgi.input"]
    lines = []
    while True:
        line = inp.readline(100)
        if not line:
            break
        lines.append(len(line))
    body = json.dumps(lines).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Streamed:
    """Yields one chunk, then waits until the client said it has it (a file) before the next."""

    def __init__(self, tag):
        self.tag = tag

    def __iter__(self):
        yield b"first chunk " * 10 + b"\n"
        got = wait_for(self.tag + ".got-first")
        yield b"second chunk, the client had the first: %s\n" % str(got).encode()

    def close(self):
        record(self.tag + ".closed")


def stream(environ, start_response):
    ctype = environ.get("QUERY_STRING").partition("&type=")[2] or "text/plain"
    start_response("200 OK", [("Content-Type", ctype)])
    return Streamed(environ["QUERY_STRING"].partition("&")[0])


class Endless:
    def __init__(self, tag, size):
        self.tag, self.size = tag, size

    def __iter__(self):
        chunk = b"x" * self.size
        for _ in range(100000):
            yield chunk

    def close(self):
        record(self.tag + ".closed")


def endless(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Endless(environ["QUERY_STRING"], 65536)


class Consumer:
    """Reads the whole request body while iterating; records close()."""

    def __init__(self, environ, tag):
        self.environ, self.tag = environ, tag

    def __iter__(self):
        n = len(read_all(self.environ["wsgi.input"]))
        yield b"read %d\n" % n

    def close(self):
        record(self.tag + ".closed")


def consume(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Consumer(environ, environ["QUERY_STRING"])


def boom(environ, start_response):
    raise RuntimeError("the test app fails on purpose")


def boom_late(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"a beginning"
    raise RuntimeError("the test app fails late on purpose")


def writer(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"by write() ")
    return [b"and returned\n"]


class RecordingFile:
    """A real file that records whether anyone read() it (sendfile does not)."""

    def __init__(self, path, tag):
        self.f = open(path, "rb")
        self.tag = tag

    def read(self, size=-1):
        record(self.tag + ".read")
        return self.f.read(size)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        record(self.tag + ".closed")


def filewrapper(environ, start_response):
    path = os.path.join(HERE, "big.bin")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(path)))])
    return environ["wsgi.file_wrapper"](RecordingFile(path, environ["QUERY_STRING"]), 8192)


def big_text(environ, start_response):
    body = b"".join(b"line %d of a long and repetitive text\n" % i for i in range(5000))
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body))), ("ETag", '"v1"')])
    return [body]


def no_transform(environ, start_response):
    body = b"no transform " * 500
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-transform")])
    return [body]


def encoded(environ, start_response):
    import gzip
    body = gzip.compress(b"already encoded " * 500)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")])
    return [body]


def small_text(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"tiny"]


def headers(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close"),
                              ("Keep-Alive", "timeout=1"), ("X-App", "yes")])
    return [b"headers"]


def no_content(environ, start_response):
    start_response("204 No Content", [])
    return []


def exc_info_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("replaced before anything was sent")
    except ValueError:
        import sys
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"replaced\n"]


def errors_app(environ, start_response):
    environ["wsgi.errors"].write("a line for wsgi.errors\n")
    environ["wsgi.errors"].flush()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged\n"]


import contextvars
import greenlet

SEEN = contextvars.ContextVar("seen", default="unset")


def context_app(environ, start_response):
    """What this connection's context held before, and which greenlet serves it."""
    before = SEEN.get()
    SEEN.set(environ["PATH_INFO"])
    body = ("%s %d\n" % (before, id(greenlet.getcurrent()))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


v_hello = validator(hello)
v_echo = validator(echo)
v_stream = validator(stream)
v_writer = validator(writer)
v_filewrapper = validator(filewrapper)
v_readlines = validator(readlines)
'''

FLASK_APP = r'''
import flask

app = flask.Flask(__name__)


@app.route("/form", methods=["GET", "POST"])
def form():
    if flask.request.method == "POST":
        return {"name": flask.request.form["name"], "tags": flask.request.form.getlist("tag")}
    return '<form method="post"><input name="name"></form>'


@app.route("/upload", methods=["POST"])
def upload():
    f = flask.request.files["file"]
    data = f.read()
    return {"filename": f.filename, "size": len(data), "note": flask.request.form.get("note")}


@app.route("/stream")
def stream():
    def generate():
        for i in range(5):
            yield f"row {i}\n"
    return flask.Response(flask.stream_with_context(generate()), mimetype="text/plain")


@app.route("/cookie/set")
def set_cookie():
    resp = flask.make_response("set")
    resp.set_cookie("session", "abc123", httponly=True)
    return resp


@app.route("/cookie/get")
def get_cookie():
    return {"session": flask.request.cookies.get("session"),
            "other": flask.request.cookies.get("other")}


@app.route("/where")
def where():
    return {"url": flask.request.url, "script_root": flask.request.script_root,
            "path": flask.request.path}
'''


# -- starting pyd --------------------------------------------------------------------------------


class Server:
    def __init__(self, pyd, port: int, directory: Path):
        self.pyd, self.port, self.dir = pyd, port, directory
        self.records = directory / "records"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pid(self) -> int:
        (pid,) = self.pyd.workers()
        return pid

    def recorded(self, name: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.records / name).exists():
                return True
            time.sleep(0.02)
        return False

    def access_lines(self) -> list[str]:
        return [line.split("pyd.http.access: ", 1)[1] for line in self.pyd.log().splitlines()
                if "pyd.http.access: " in line]

    def wait_access_lines(self, count: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.access_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} access log lines:\n{self.pyd.log()[-3000:]}")


@pytest.fixture
def serve(pyd_factory, tmp_path):
    """serve(pool_body, main="") -> Server: a pyd with one worker and the test apps."""

    def start(pool: str, main: str = "", flask_app: bool = False) -> Server:
        directory = tmp_path / "srv"
        (directory / "records").mkdir(parents=True, exist_ok=True)
        (directory / "apps.py").write_text(APPS)
        if flask_app:
            (directory / "flaskapp.py").write_text(FLASK_APP)
        port = free_port()
        config = textwrap.dedent(f"""\
            user root;
            workers 1;
            cwd {directory};
            graceful-timeout 5s;
            {main}
            Pool:HTTPServer {{
                listen 127.0.0.1:{port};
            """) + textwrap.indent(textwrap.dedent(pool), "    ") + "}\n"
        p = pyd_factory(config, directory=tmp_path / "pyd")
        p.start()
        server = Server(p, port, directory)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the worker has loaded its apps and serves
            try:
                if http_get(port, "/__ready__", timeout=2)[0]:
                    break
            except OSError:
                time.sleep(0.05)
        return server

    return start


# -- small clients -------------------------------------------------------------------------------


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", "--max-time", str(timeout), *args],
                          capture_output=True, timeout=timeout + 5)


def curl_response(*args: str) -> tuple[int, dict, bytes]:
    """curl -i: status, last response's headers (lowercase, lists), body."""
    r = curl("-i", *args)
    assert r.returncode == 0, r.stderr
    raw = r.stdout
    while True:
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status >= 200 or not body.startswith(b"HTTP/"):
            break
        raw = body  # skip 100 Continue
    return status, parse_headers(head), body


def parse_headers(head: bytes) -> dict:
    headers: dict = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return headers


def exchange(port: int, data: bytes, timeout: float = 5.0, half_close: bool = False) -> bytes:
    return raw_exchange(port, data, timeout, half_close=half_close)


def read_response(sock: socket.socket, buf: bytes = b"", head_only: bool = False):
    """One response from a socket: (status, headers, body, rest of the buffer)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed inside a response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = parse_headers(head)
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", rest
    if "content-length" in headers:
        need = int(headers["content-length"][0])
        while len(rest) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a body")
            rest += chunk
        return status, headers, rest[:need], rest[need:]
    if headers.get("transfer-encoding") == ["chunked"]:
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += _recv(sock)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += _recv(sock)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, headers, body, rest
    body = rest
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return status, headers, body, b""
        body += chunk


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed inside a chunked body")
    return chunk


def status_of(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    assert m, raw[:200]
    return int(m.group(1))


def lint(raw: bytes, method: str = "GET") -> list[str]:
    """httplint's BAD notes on one raw response (the body as sent, de-chunked). Left out: the
    STATUS_* notes, which only say what an error status means (414: "won't accept a URI this
    long"), and PARTIAL_WITHOUT_RANGE on multipart/byteranges, which httplint does not know
    carries its ranges in the parts (RFC 9110 14.6)."""
    if HttpResponseLinter is None:
        pytest.skip("httplint is not installed (pip install httplint)")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    version, code, phrase = (lines[0].split(b" ", 2) + [b""])[:3]
    fields = [tuple(x.strip() for x in line.split(b":", 1)) for line in lines[1:]]
    named = {k.lower(): v for k, v in fields}
    if named.get(b"transfer-encoding") == b"chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            out, rest = out + rest[:size], rest[size + 2:]
            if not size:
                break
        body = out
    linter = HttpResponseLinter()
    linter.is_head_response = method == "HEAD"
    linter.process_response_topline(version.split(b"/")[1], code, phrase)
    linter.process_headers(fields)
    if method != "HEAD":
        linter.feed_content(body)
    linter.finish_content(True)
    multipart = named.get(b"content-type", b"").startswith(b"multipart/byteranges")
    return [f"{n.__class__.__name__}: {n.summary}" for n in linter.notes
            if n.level == levels.BAD and not n.__class__.__name__.startswith("STATUS_")
            and not (multipart and n.__class__.__name__ == "PARTIAL_WITHOUT_RANGE")]


def raw_get(port: int, path: str, extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return exchange(port, method + b" " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra
                    + b"Connection: close\r\n\r\n")


# -- basic exchanges with curl -------------------------------------------------------------------

APP_POOL = """
app apps:hello;
location /api/ { app apps:v_echo; }
location /lines/ { app apps:v_readlines; }
location /stream/ { app apps:v_stream; }
location /endless/ { app apps:endless; }
location /consume/ { app apps:consume; }
location /boom/ { app apps:boom; }
location /boom-late/ { app apps:boom_late; }
location /write/ { app apps:v_writer; }
location /file/ { app apps:v_filewrapper; }
location /file-raw/ { app apps:filewrapper; }
location /headers/ { app apps:headers; }
location /nocontent/ { app apps:no_content; }
location /excinfo/ { app apps:exc_info_app; }
location /errors/ { app apps:errors_app; }
location /big/ { app apps:big_text; }
location /context/ { app apps:context_app; }
client-max-body-size 10M;
"""


def echo_json(body: bytes) -> dict:
    return json.loads(body)


def no_app_errors(server: Server) -> None:
    log = server.pyd.log()
    assert "AssertionError" not in log and "WSGIWarning" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_get_head_post_with_curl(serve, tmp_path):
    s = serve(APP_POOL)
    status, headers, body = curl_response(s.url("/"))
    assert status == 200 and body.startswith(b"hello from ")
    assert headers["server"][0].startswith("pyd/") and len(headers["date"]) == 1
    status, headers, body = curl_response("-I", s.url("/"))
    assert status == 200 and body == b"" and headers["content-length"] == [str(len(
        b"hello from %d\n" % s.worker_pid()))]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300000))
    status, _, body = curl_response("--data-binary", f"@{payload}", s.url("/api/x"))
    info = echo_json(body)
    assert status == 200 and info["REQUEST_METHOD"] == "POST"
    assert info["body_length"] == 300000 and info["CONTENT_LENGTH"] == "300000"
    import hashlib
    assert info["body_sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
    no_app_errors(s)


def test_chunked_upload_and_expect_100_continue(serve, tmp_path):
    s = serve(APP_POOL)
    payload = tmp_path / "payload.bin"
    data = os.urandom(200000)
    payload.write_bytes(data)
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    status, _, body = curl_response("-H", "Transfer-Encoding: chunked", "--data-binary",
                                    f"@{payload}", s.url("/api/chunked"))
    info = echo_json(body)
    assert status == 200 and info["body_length"] == 200000 and info["body_sha256"] == digest
    assert "CONTENT_LENGTH" not in info or info["CONTENT_LENGTH"] == ""
    r = curl("-v", "-H", "Expect: 100-continue", "--expect100-timeout", "10", "--data-binary",
             f"@{payload}", s.url("/api/expect"))
    assert r.returncode == 0
    assert b"HTTP/1.1 100 Continue" in r.stderr  # curl waited for it, and it came
    assert echo_json(r.stdout)["body_sha256"] == digest
    # readline over a chunked body, through wsgiref's validator
    lines = b"".join(b"%d\n" % i * (i % 7) for i in range(500))
    payload.write_bytes(lines)
    status, _, body = curl_response("-H", "Transfer-Encoding: chunked", "--data-binary",
                                    f"@{payload}", s.url("/lines/"))
    expected = []
    for line in lines.splitlines(keepends=True):
        while line:
            expected.append(len(line[:100]))
            line = line[100:]
    assert json.loads(body) == expected
    no_app_errors(s)


def test_http10_with_and_without_keep_alive(serve):
    s = serve(APP_POOL)
    r = curl("-0", "-i", s.url("/"))
    head = r.stdout.split(b"\r\n\r\n")[0]
    assert r.stdout.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body, rest = read_response(sock)
            assert status == 200 and headers["connection"] == ["keep-alive"]
        sock.sendall(b"GET /stream/?t10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        (s.records / "t10.got-first").touch()
        status, headers, body, rest = read_response(sock)  # close-delimited
        assert "transfer-encoding" not in headers and headers["connection"] == ["close"]
        assert body.startswith(b"first chunk") and b"second chunk" in body


def test_pipelining_answers_in_order(serve):
    s = serve(APP_POOL)
    requests = b"".join(b"GET /api/%d?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (i, i) for i in range(6))
    requests += b"POST /api/post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    requests += b"GET /api/last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(requests)
        rest = b""
        paths = []
        for _ in range(8):
            status, headers, body, rest = read_response(sock, rest)
            assert status == 200
            paths.append(echo_json(body)["PATH_INFO"])
        assert paths == [f"/{i}" for i in range(6)] + ["/post", "/last"]
        assert sock.recv(100) == b""


def test_head_204_and_hop_by_hop(serve):
    s = serve(APP_POOL)
    raw = raw_get(s.port, "/nocontent/")
    assert status_of(raw) == 204 and b"Content-Length" not in raw and raw.endswith(b"\r\n\r\n")
    assert lint(raw) == []
    raw = raw_get(s.port, "/headers/")
    head = raw.split(b"\r\n\r\n")[0]
    assert b"X-App: yes" in head and b"Keep-Alive" not in head and head.count(b"Connection") == 1
    raw = raw_get(s.port, "/big/", method=b"HEAD")
    assert raw.endswith(b"\r\n\r\n") and b"Content-Length: " in raw
    assert lint(raw, "HEAD") == []


# -- malformed input over the wire ---------------------------------------------------------------

WIRE = {"target-too-long", "header-too-large", "too-many-headers", "body-over-limit",
        "chunked-over-limit", "bare-lf-request-line", "obs-fold", "cl-and-te",
        "duplicate-cl-different", "chunk-size-invalid", "header-value-nul", "host-missing-11",
        "host-invalid", "target-fragment", "unknown-method", "connect", "te-gzip", "http-2.0",
        "http-0.9", "http-2-preface", "expect-unknown", "tls-client-hello", "nul-byte",
        "upgrade-with-body"}


def test_malformed_requests_over_the_wire(serve):
    s = serve("""
app apps:echo;
max-request-line 256;
max-header-size 1K;
max-headers 20;
client-max-body-size 100;
""")
    pid = s.worker_pid()
    cases = [(name, data, status) for name, data, status in MALFORMED if name in WIRE]
    assert len(cases) == len(WIRE)
    for name, data, status in cases:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n" + data)
            first, _, body, rest = read_response(sock)
            assert first == 200 and echo_json(body)["PATH_INFO"] == "/first", name
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        assert status_of(rest) == status, (name, rest[:300])
        assert b"Connection: close" in rest.split(b"\r\n\r\n")[0], name
        assert lint(rest) == [], name
        assert echo_json(http_get(s.port, "/")[2])["pid"] == pid, name  # the same worker
    assert s.worker_pid() == pid
    assert "Traceback" not in s.pyd.log()


def test_several_instances_each_with_its_listeners_apps_and_settings(serve, tmp_path):
    sock = tmp_path / "admin.sock"
    v6 = socket.has_ipv6 and _can_bind_v6()
    admin_port = free_port()
    listen = f"unix:{sock}" + (f", [::1]:{admin_port}" if v6 else "")
    s = serve(APP_POOL, main=f"Pool:HTTPServer:admin {{ listen {listen}; app apps:v_echo; "
                             "server-tokens off; access-log off; }")
    status, headers, body = curl_response(s.url("/"))
    assert status == 200 and body.startswith(b"hello from")
    assert headers["server"][0].startswith("pyd/")
    status, headers, body = curl_response("--unix-socket", str(sock), "http://admin/x?q=1")
    info = json.loads(body)
    assert status == 200 and info["PATH_INFO"] == "/x" and info["QUERY_STRING"] == "q=1"
    assert headers["server"] == ["pyd"]  # server-tokens off in this instance only
    if v6:
        status, _, body = curl_response(f"http://[::1]:{admin_port}/y")
        assert status == 200 and json.loads(body)["SERVER_NAME"] == "::1"
    assert s.pyd.title(s.worker_pid()).endswith("[HTTPServer:admin HTTPServer]")  # config order


def test_server_name_and_port_are_the_connections_local_address(serve):
    """One listener on one address: SERVER_NAME/SERVER_PORT are the pool's for every
    connection; on a wildcard address, each connection's own local address."""
    wild = free_port()
    s = serve(APP_POOL, main=f"Pool:HTTPServer:wild {{ listen 0.0.0.0:{wild}; app apps:v_echo; }}")
    info = echo_json(http_get(s.port, "/api/")[2])
    assert (info["SERVER_NAME"], info["SERVER_PORT"]) == ("127.0.0.1", str(s.port))
    for host in ("127.0.0.1", "127.0.0.2"):
        info = echo_json(http_get(wild, "/", host=host)[2])
        assert (info["SERVER_NAME"], info["SERVER_PORT"]) == (host, str(wild))


def _can_bind_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_slowloris_gets_408(serve):
    s = serve(APP_POOL + "client-header-timeout 1s;\n")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        raw = b""
        try:
            for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 40:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                raw += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    elapsed = time.monotonic() - started
    assert status_of(raw) == 408
    assert 0.9 <= elapsed < 4.5, elapsed
    assert http_get(s.port, "/")[0] == 200


def test_a_silent_new_connection_has_the_header_timeout(serve):
    s = serve(APP_POOL + "client-header-timeout 1s;\nkeepalive-timeout 30s;\n")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        assert sock.recv(100) == b""  # closed quietly, as nginx does: no request, no answer
    assert 0.9 <= time.monotonic() - started < 4.5


def test_idle_keep_alive_connection_is_not_408(serve):
    s = serve(APP_POOL + "client-header-timeout 500ms;\nkeepalive-timeout 1s;\n")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock)
        time.sleep(0.7)  # idle past the header timeout: still fine
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[0] == 200
        assert sock.recv(100) == b""  # then the keep-alive timeout closes it quietly


# -- the application's side ----------------------------------------------------------------------


def test_client_gone_mid_request_and_mid_response_closes_the_iterable(serve):
    s = serve(APP_POOL)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(b"POST /consume/?mid-request HTTP/1.1\r\nHost: t\r\nContent-Length: 100000"
                     b"\r\n\r\n" + b"x" * 1000)
        time.sleep(0.3)
    assert s.recorded("mid-request.closed")
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    sock.sendall(b"GET /endless/?mid-response HTTP/1.1\r\nHost: t\r\n\r\n")
    assert sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # a reset
    assert s.recorded("mid-response.closed", timeout=10)
    assert http_get(s.port, "/")[0] == 200
    log = s.pyd.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_app_exception_is_a_plain_500_and_the_worker_lives(serve):
    s = serve(APP_POOL)
    pid = s.worker_pid()
    raw = raw_get(s.port, "/boom/")
    assert status_of(raw) == 500
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain" in head and b"RuntimeError" not in raw
    assert body == b"500 Internal Server Error\n"
    s.pyd.wait_for_log(r"(?s)Traceback.*RuntimeError: the test app fails on purpose")
    raw = raw_get(s.port, "/boom-late/")  # after the head went out: cut off, not a 500
    assert status_of(raw) == 200 and raw.endswith(b"a beginning\r\n")
    s.pyd.wait_for_log("fails late on purpose")
    raw = raw_get(s.port, "/excinfo/")
    assert status_of(raw) == 503 and raw.endswith(b"replaced\n")
    assert http_get(s.port, "/")[2] == b"hello from %d\n" % pid
    assert s.worker_pid() == pid


def test_every_connection_starts_with_an_empty_context(serve):
    """Greenlets are reused between connections; a context variable an app set on one
    connection is not seen on the next, while the requests of one keep-alive connection share
    their greenlet's context, as before."""
    s = serve(APP_POOL)
    greenlets = set()
    for i in range(20):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            answers = []
            for n in range(2):
                sock.sendall(b"GET /context/%d-%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, n))
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(4096)
                head, _, body = head.partition(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                while len(body) < length:
                    body += sock.recv(4096)
                answers.append(body.split())
        assert answers[0][0] == b"unset", answers
        assert answers[1][0] == b"/%d-0" % i and answers[1][1] == answers[0][1], answers
        greenlets.add(answers[0][1])
    assert len(greenlets) < 20  # one after another, connections reuse their greenlets
    no_app_errors(s)


def test_wsgi_errors_go_to_the_log(serve):
    s = serve(APP_POOL)
    assert http_get(s.port, "/errors/")[0] == 200
    s.pyd.wait_for_log("a line for wsgi.errors")


def test_streaming_is_flushed_as_yielded(serve):
    s = serve(APP_POOL)
    with socket.create_connection(("127.0.0.1", s.port), timeout=8) as sock:
        sock.sendall(b"GET /stream/?s1 HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = b""
        while b"first chunk \n" not in buf:  # before the app yields the second chunk
            chunk = sock.recv(65536)
            assert chunk, buf
            buf += chunk
        assert b"second" not in buf
        (s.records / "s1.got-first").touch()
        status, headers, body, _ = read_response(sock, buf)
        assert headers["transfer-encoding"] == ["chunked"]
        assert body.endswith(b"the client had the first: True\n")
    assert s.recorded("s1.closed")
    no_app_errors(s)


def test_write_callable_and_file_wrapper_with_sendfile(serve):
    s = serve(APP_POOL)
    data = os.urandom(3 * 1024 * 1024 + 17)
    (s.dir / "big.bin").write_bytes(data)
    status, _, body = http_get(s.port, "/write/")
    assert body == b"written by write() and returned\n"
    status, headers, body = http_get(s.port, "/file-raw/?fw1")
    assert status == 200 and body == data and headers["content-length"] == str(len(data))
    assert s.recorded("fw1.closed")
    assert not (s.records / "fw1.read").exists()  # sendfile took the file, nobody read() it
    no_app_errors(s)


def test_script_name_path_info_and_percent_decoding(serve):
    s = serve(APP_POOL)
    info = echo_json(http_get(s.port, "/api/a%20b/caf%C3%A9/%2541?q=%20x&r=%C3%A9")[2])
    assert info["SCRIPT_NAME"] == "/api"
    assert info["PATH_INFO"] == "/a b/caf\u00c3\u00a9/%41"  # bytes as latin-1, PEP 3333
    assert info["QUERY_STRING"] == "q=%20x&r=%C3%A9"
    assert info["REQUEST_URI"] == "/api/a%20b/caf%C3%A9/%2541?q=%20x&r=%C3%A9"
    assert info["SERVER_PROTOCOL"] == "HTTP/1.1" and info["wsgi.url_scheme"] == "http"
    assert info["SERVER_PORT"] == str(s.port) and info["REMOTE_ADDR"] == "127.0.0.1"
    info = echo_json(http_get(s.port, "/api/")[2])
    assert info["SCRIPT_NAME"] == "/api" and info["PATH_INFO"] == "/"
    info = echo_json(http_get(s.port, "/api/x/../y/./z")[2])
    assert info["PATH_INFO"] == "/y/z"
    status, headers, _ = http_get(s.port, "/api?x=1")
    assert status == 301 and headers["location"] == "/api/?x=1"
    raw = raw_get(s.port, "/api")
    assert lint(raw) == []
    info = echo_json(http_get(s.port, "/api/h", headers={"X-Custom": "v", "X_Under": "no",
                                                           "Cookie": "a=1"})[2])
    assert info["HTTP_X_CUSTOM"] == "v" and "HTTP_X_UNDER" not in info
    assert info["HTTP_COOKIE"] == "a=1"
    no_app_errors(s)


def test_validator_finds_nothing_on_the_test_apps(serve, tmp_path):
    s = serve(APP_POOL)
    http_get(s.port, "/api/v")
    payload = tmp_path / "p"
    payload.write_bytes(b"x" * 5000)
    curl_response("--data-binary", f"@{payload}", s.url("/api/v"))
    curl_response("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{payload}",
                  s.url("/lines/"))
    http_get(s.port, "/write/")
    (s.dir / "big.bin").write_bytes(b"abc" * 1000)
    http_get(s.port, "/file/?v")
    (s.records / "v2.got-first").touch()
    http_get(s.port, "/stream/?v2")
    time.sleep(0.3)
    no_app_errors(s)


def test_flask_app(serve, tmp_path):
    pytest.importorskip("flask")
    s = serve("app flaskapp:app;\nlocation /sub/ { app flaskapp:app; }\n", flask_app=True)
    status, _, body = curl_response("-d", "name=Ada", "-d", "tag=a", "-d", "tag=b",
                                    s.url("/form"))
    assert status == 200 and json.loads(body) == {"name": "Ada", "tags": ["a", "b"]}
    status, _, body = curl_response("-H", "Transfer-Encoding: chunked", "-d", "name=Bob",
                                    "-d", "tag=c", s.url("/form"))  # no length: input_terminated
    assert status == 200 and json.loads(body) == {"name": "Bob", "tags": ["c"]}
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(500000))
    status, _, body = curl_response("-F", f"file=@{upload}", "-F", "note=hi", s.url("/upload"))
    assert json.loads(body) == {"filename": "upload.bin", "size": 500000, "note": "hi"}
    status, headers, body = curl_response(s.url("/stream"))
    assert body == b"".join(b"row %d\n" % i for i in range(5))
    assert headers["transfer-encoding"] == ["chunked"]
    jar = tmp_path / "jar"
    status, headers, _ = curl_response("-c", str(jar), s.url("/cookie/set"))
    assert any(c.startswith("session=abc123") and "HttpOnly" in c for c in headers["set-cookie"])
    status, _, body = curl_response("-b", str(jar), "-b", "other=2", s.url("/cookie/get"))
    assert json.loads(body) == {"session": "abc123", "other": "2"}
    status, _, body = curl_response(s.url("/sub/where"))
    assert json.loads(body) == {"url": f"http://127.0.0.1:{s.port}/sub/where",
                                "script_root": "/sub", "path": "/where"}
    for path in ("/form", "/stream", "/cookie/set"):
        r = curl("-i", "--raw", s.url(path))
        assert lint(r.stdout) == [], path
    assert "Traceback" not in s.pyd.log()


# -- static files --------------------------------------------------------------------------------


DATA = b"0123456789abcdef" * 640  # 10240 bytes of text


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    www = root / "www"
    (www / "sub").mkdir(parents=True)
    (www / "index.html").write_text("<h1>index</h1>\n")
    (www / "sub" / "index.html").write_text("<h1>sub index</h1>\n")
    (www / "data.txt").write_bytes(DATA)
    (www / "page.css").write_text("body { color: red }\n" * 200)
    (www / "page.css.gz").write_bytes(gzip.compress((www / "page.css").read_bytes()))
    (www / "page.css.br").write_bytes(brotli.compress((www / "page.css").read_bytes()))
    (root / "secret.txt").write_text("SECRET\n")
    os.symlink(root / "secret.txt", www / "leak.txt")
    os.symlink(www / "data.txt", www / "inside.txt")
    os.symlink(root / "rooted", www / "outside")  # a directory out of the root
    (root / "rooted" / "files").mkdir(parents=True)
    (root / "rooted" / "files" / "r.txt").write_text("rooted\n")
    return root


def static_pool(site: Path) -> str:
    return f"""
app apps:hello;
location /static/ {{ alias {site}/www/; }}
location /files/ {{ root {site}/rooted; }}
"""


def test_static_root_alias_index(serve, site):
    s = serve(static_pool(site))
    status, headers, body = http_get(s.port, "/static/")
    assert status == 200 and body == b"<h1>index</h1>\n"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert http_get(s.port, "/static/sub/")[2] == b"<h1>sub index</h1>\n"
    status, headers, _ = http_get(s.port, "/static/sub?a=1")
    assert status == 301 and headers["location"] == "/static/sub/?a=1"
    status, headers, body = http_get(s.port, "/static/data.txt")
    assert body == DATA and headers["accept-ranges"] == "bytes"
    assert http_get(s.port, "/static/inside.txt")[2] == DATA
    assert http_get(s.port, "/files/r.txt")[2] == b"rooted\n"
    assert http_get(s.port, "/static/missing")[0] == 404
    r = curl("-i", "-X", "POST", s.url("/static/data.txt"))
    assert r.stdout.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in r.stdout
    raw = raw_get(s.port, "/static/data.txt")
    assert lint(raw) == []
    raw = raw_get(s.port, "/static/data.txt", method=b"HEAD")
    assert raw.endswith(b"\r\n\r\n") and b"Content-Length: 10240" in raw


def test_static_conditional_requests(serve, site):
    s = serve(static_pool(site))
    _, headers, _ = http_get(s.port, "/static/data.txt")
    etag, modified = headers["etag"], headers["last-modified"]
    status, headers304, body = http_get(s.port, "/static/data.txt",
                                        headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and headers304["etag"] == etag
    assert http_get(s.port, "/static/data.txt", headers={"If-None-Match": f'"x", W/{etag}'}
                    )[0] == 304
    assert http_get(s.port, "/static/data.txt", headers={"If-None-Match": '"other"'})[0] == 200
    assert http_get(s.port, "/static/data.txt", headers={"If-Modified-Since": modified})[0] == 304
    old = formatdate(time.time() - 86400 * 400, usegmt=True)
    assert http_get(s.port, "/static/data.txt", headers={"If-Modified-Since": old})[0] == 200
    raw = raw_get(s.port, "/static/data.txt", b"If-None-Match: " + etag.encode() + b"\r\n")
    assert status_of(raw) == 304 and raw.endswith(b"\r\n\r\n") and b"Content-Length" not in raw
    assert lint(raw) == []


def test_static_ranges(serve, site):
    s = serve(static_pool(site))
    data = DATA
    status, headers, body = http_get(s.port, "/static/data.txt", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20]
    assert headers["content-range"] == "bytes 10-19/10240" and headers["content-length"] == "10"
    assert http_get(s.port, "/static/data.txt", headers={"Range": "bytes=-5"})[2] == data[-5:]
    assert http_get(s.port, "/static/data.txt", headers={"Range": "bytes=10230-"})[2] == data[-10:]
    status, headers, body = http_get(s.port, "/static/data.txt",
                                     headers={"Range": "bytes=0-1, 100-102"})
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges; boundary=")
    boundary = headers["content-type"].split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)
    assert len(parts) == 4 and parts[-1] == b"--\r\n"
    assert parts[1].endswith(b"\r\n\r\n" + data[0:2] + b"\r\n")
    assert b"Content-Range: bytes 100-102/10240" in parts[2]
    assert parts[2].endswith(b"\r\n\r\n" + data[100:103] + b"\r\n")
    assert len(body) == int(headers["content-length"])
    status, headers, body = http_get(s.port, "/static/data.txt", headers={"Range": "bytes=99999-"})
    assert status == 416 and headers["content-range"] == "bytes */10240"
    etag = http_get(s.port, "/static/data.txt")[1]["etag"]
    assert http_get(s.port, "/static/data.txt", headers={"Range": "bytes=0-0", "If-Range": etag}
                    )[0] == 206
    status, _, body = http_get(s.port, "/static/data.txt",
                               headers={"Range": "bytes=0-0", "If-Range": '"stale"'})
    assert status == 200 and body == data
    for extra in (b"Range: bytes=10-19\r\n", b"Range: bytes=0-1, 100-102\r\n",
                  b"Range: bytes=99999-\r\n"):
        assert lint(raw_get(s.port, "/static/data.txt", extra)) == [], extra


def test_static_precompressed_siblings(serve, site):
    s = serve(static_pool(site))
    css = (site / "www" / "page.css").read_bytes()
    status, headers, body = http_get(s.port, "/static/page.css",
                                     headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == css
    assert headers["vary"] == "Accept-Encoding"
    status, headers, body = http_get(s.port, "/static/page.css",
                                     headers={"Accept-Encoding": "gzip, br"})
    assert headers["content-encoding"] == "br" and brotli.decompress(body) == css
    status, headers, body = http_get(s.port, "/static/page.css",
                                     headers={"Accept-Encoding": "br;q=0.1, gzip"})
    assert headers["content-encoding"] == "gzip"
    status, headers, body = http_get(s.port, "/static/page.css")
    assert "content-encoding" not in headers and body == css
    r = curl("--compressed", s.url("/static/page.css"))
    assert r.stdout == css


@pytest.mark.parametrize("path", [
    "/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/%2E%2E/secret.txt",
    "/static/..%2fsecret.txt", "/static/sub/..%2f..%2fsecret.txt", "/static/%2e%2e%2fsecret.txt",
    "/static/leak.txt", "/static/data.txt%00.html", "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/..%5csecret.txt", "/files/../secret.txt", "/static/../../../../etc/passwd",
])
def test_static_traversal_is_refused(serve, site, path):
    s = serve(static_pool(site))
    raw = raw_get(s.port, path)
    assert b"SECRET" not in raw and b"root:" not in raw, raw[:300]
    assert status_of(raw) in (400, 403, 404) or (
        status_of(raw) == 200 and b"hello from" in raw)  # normalized out of /static/


def test_a_symlinked_directory_out_of_the_root_does_not_show(serve, site):
    s = serve(static_pool(site))
    for path in ("/static/outside", "/static/outside/", "/static/outside/files",
                 "/static/outside/files/r.txt", "/static/outside/missing"):
        status, headers, body = http_get(s.port, path)
        assert status == 404 and "location" not in headers and b"rooted" not in body, path


# -- proxies, logs, limits -----------------------------------------------------------------------


def test_real_ip_from_trusted_proxies_only(serve):
    s = serve(APP_POOL + "real-ip-from 127.0.0.0/8;\n")
    info = echo_json(http_get(s.port, "/api/", headers={"X-Forwarded-For": "1.2.3.4, 5.6.7.8",
                                                         "X-Forwarded-Proto": "https"})[2])
    assert info["REMOTE_ADDR"] == "5.6.7.8" and info["wsgi.url_scheme"] == "https"
    s2_headers = {"X-Forwarded-For": "9.9.9.9", "X-Forwarded-Proto": "javascript"}
    info = echo_json(http_get(s.port, "/api/", headers=s2_headers)[2])
    assert info["REMOTE_ADDR"] == "9.9.9.9" and info["wsgi.url_scheme"] == "http"


def test_forwarded_headers_are_ignored_from_untrusted_peers(serve):
    s = serve(APP_POOL + "real-ip-from 10.0.0.0/8;\n")
    info = echo_json(http_get(s.port, "/api/", headers={"X-Forwarded-For": "1.2.3.4",
                                                         "X-Forwarded-Proto": "https"})[2])
    assert info["REMOTE_ADDR"] == "127.0.0.1" and info["wsgi.url_scheme"] == "http"


COMBINED = re.compile(r'(?P<addr>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
                      r'(?P<status>\d{3}|-) (?P<bytes>\d+) "(?P<referer>(?:[^"\\]|\\.)*)" '
                      r'"(?P<agent>(?:[^"\\]|\\.)*)" (?P<duration>\d+\.\d{3})')
FORGERY = b'evil" 200 99999 "http://forged" "x\\" \xff\t end'


def test_access_log_combined_cannot_be_forged(serve):
    s = serve(APP_POOL)
    raw_get(s.port, '/a"b?c=1', b"User-Agent: " + FORGERY + b"\r\nReferer: r\"\\\r\n")
    http_get(s.port, "/api/", headers={"User-Agent": "plain"})
    lines = s.wait_access_lines(3)
    m = COMBINED.fullmatch(lines[-2])
    assert m, lines[-2]
    assert m["status"] == "200" and m["addr"] == "127.0.0.1"
    assert m["request"] == 'GET /a\\x22b?c=1 HTTP/1.1'
    assert m["agent"] == "evil\\x22 200 99999 \\x22http://forged\\x22 \\x22x\\x5C\\x22 \\xFF\\x09 end"
    assert m["referer"] == "r\\x22\\x5C"
    m = COMBINED.fullmatch(lines[-1])
    assert m and m["agent"] == "plain" and m["request"] == "GET /api/ HTTP/1.1"


def test_access_log_has_unreadable_requests_and_the_real_client(serve):
    s = serve(APP_POOL + "real-ip-from 127.0.0.0/8;\n")
    exchange(s.port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    raw_get(s.port, "/" + "x" * 9000)
    http_get(s.port, "/api/", headers={"X-Forwarded-For": "1.2.3.4, 5.6.7.8"})
    lines = s.wait_access_lines(3)
    bad, long, proxied = (COMBINED.fullmatch(x) for x in lines[-3:])
    assert bad and bad["request"] == "-" and bad["status"] == "400", lines[-3]
    assert long and long["status"] == "414" and long["addr"] == "127.0.0.1", lines[-2]
    assert proxied and proxied["addr"] == "5.6.7.8" and proxied["status"] == "200", lines[-1]


def test_access_log_json(serve):
    s = serve(APP_POOL + "access-log json;\n")
    raw_get(s.port, "/x?y=1", b"User-Agent: " + FORGERY + b"\r\n")
    raw_get(s.port, "/nope-not-routed", method=b"HEAD")
    lines = s.wait_access_lines(3)
    entry = json.loads(lines[-2])
    assert entry["user_agent"] == FORGERY.decode("latin-1")
    assert entry["uri"] == "/x?y=1" and entry["status"] == 200 and entry["method"] == "GET"
    assert entry["remote_addr"] == "127.0.0.1" and entry["protocol"] == "HTTP/1.1"
    assert entry["pool"] == "HTTPServer" and entry["body_bytes"] > 0
    assert json.loads(lines[-1])["method"] == "HEAD"


def test_access_log_off(serve):
    s = serve(APP_POOL + "access-log off;\n")
    http_get(s.port, "/")
    time.sleep(0.3)
    assert s.access_lines() == []


def test_max_connections_pauses_and_resumes_accepting(serve):
    s = serve(APP_POOL + "max-connections 2;\n")
    held = []
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(c)[0] == 200
        held.append(c)
    third = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    third.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    third.settimeout(0.7)
    with pytest.raises(TimeoutError):
        third.recv(100)  # not accepted: the worker is at its limit
    held.pop().close()
    third.settimeout(5)
    assert read_response(third)[0] == 200  # accepted once one closed
    for c in [*held, third]:
        c.close()


def test_server_tokens_off(serve):
    s = serve(APP_POOL + "server-tokens off;\n")
    assert http_get(s.port, "/")[1]["server"] == "pyd"
    assert b"\r\nServer: pyd\r\n" in raw_get(s.port, "/nope", b"", b"GET")
    raw = exchange(s.port, b"GET / HTTP/1.1\r\n\r\n")
    assert status_of(raw) == 400 and b"\r\nServer: pyd\r\n" in raw


# -- compression ---------------------------------------------------------------------------------

GZIP_POOL = APP_POOL.replace("client-max-body-size 10M;", "") + """
location /small/ { app apps:small_text; }
location /plain-stream/ { app apps:stream; }
location /no-transform/ { app apps:no_transform; }
location /encoded/ { app apps:encoded; }
gzip on;
"""


def big_body() -> bytes:
    return b"".join(b"line %d of a long and repetitive text\n" % i for i in range(5000))


def test_compression_with_curl_and_each_coding(serve):
    s = serve(GZIP_POOL)
    r = curl("--compressed", "-i", s.url("/big/"))
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert body == big_body()
    assert re.search(rb"(?i)\r\ncontent-encoding: (gzip|br|zstd)\r\n", head)
    decode = {"gzip": gzip.decompress, "br": brotli.decompress,
              "zstd": lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d)}
    for accept, coding in [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"),
                           ("gzip;q=0.5, br;q=0.9, zstd;q=0.1", "br"),
                           ("gzip, br, zstd", "zstd"), ("x-gzip", "gzip")]:
        status, headers, body = http_get(s.port, "/big/", headers={"Accept-Encoding": accept})
        assert headers["content-encoding"] == coding, accept
        assert headers["vary"] == "Accept-Encoding" and headers["etag"] == 'W/"v1"'
        assert int(headers["content-length"]) == len(body) < len(big_body()) // 4
        assert decode[coding](body) == big_body(), accept
        raw = raw_get(s.port, "/big/", b"Accept-Encoding: " + accept.encode() + b"\r\n")
        assert lint(raw) == [], accept
    status, headers, body = http_get(s.port, "/big/", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in headers and body == big_body()
    assert headers["vary"] == "Accept-Encoding"
    status, headers, body = http_get(s.port, "/small/", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in headers and body == b"tiny"  # below the minimum length
    raw = raw_get(s.port, "/big/", b"Accept-Encoding: gzip\r\n", method=b"HEAD")
    assert b"Content-Encoding" not in raw and raw.endswith(b"\r\n\r\n")


def test_compressed_streaming_is_flushed_per_chunk(serve):
    s = serve(GZIP_POOL)
    for coding in ("gzip", "br", "zstd"):
        tag = f"z{coding}"
        with socket.create_connection(("127.0.0.1", s.port), timeout=8) as sock:
            sock.sendall(f"GET /plain-stream/{tag}?{tag} HTTP/1.1\r\nHost: t\r\n"
                         f"Accept-Encoding: {coding}\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, _, rest = buf.partition(b"\r\n\r\n")
            assert f"Content-Encoding: {coding}".encode() in head
            if coding == "gzip":
                d = __import__("zlib").decompressobj(31)
                decode = d.decompress
            elif coding == "br":
                decode = brotli.Decompressor().process
            else:
                decode = zstandard.ZstdDecompressor().decompressobj().decompress
            plain = b""
            while b"first chunk \n" not in plain:  # decodable before the second is yielded
                while b"\r\n" not in rest:
                    rest += _recv(sock)
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    rest += _recv(sock)
                plain += decode(rest[:size])
                rest = rest[size + 2:]
            (s.records / f"{tag}.got-first").touch()
            _, _, body, _ = read_response(sock, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                                          b"\r\n\r\n" + rest)
            plain += decode(body)
            assert plain.endswith(b"the client had the first: True\n"), coding


def test_compression_never_for_ranges_encoded_or_no_transform(serve, site):
    s = serve(GZIP_POOL + f"location /static/ {{ alias {site}/www/; }}\n")
    css = (site / "www" / "page.css").read_bytes()
    status, headers, body = http_get(s.port, "/static/page.css",
                                     headers={"Accept-Encoding": "zstd", "Range": "bytes=0-9"})
    assert status == 206 and body == css[:10] and "content-encoding" not in headers
    status, headers, body = http_get(s.port, "/static/page.css",
                                     headers={"Accept-Encoding": "gzip"})  # the .gz sibling
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == css
    assert headers["vary"] == "Accept-Encoding"
    status, headers, body = http_get(s.port, "/static/data.txt",
                                     headers={"Accept-Encoding": "gzip"})  # on the fly
    assert headers["content-encoding"] == "gzip" and "accept-ranges" not in headers
    assert gzip.decompress(body) == DATA and headers["etag"].startswith('W/"')
    status, headers, body = http_get(s.port, "/static/index.html",
                                     headers={"Accept-Encoding": "zstd"})
    assert "content-encoding" not in headers  # shorter than the minimum
    status, headers, body = http_get(s.port, "/no-transform/", headers={"Accept-Encoding": "br"})
    assert "content-encoding" not in headers and body == b"no transform " * 500
    status, headers, body = http_get(s.port, "/encoded/", headers={"Accept-Encoding": "br"})
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == b"already encoded " * 500


def test_compression_is_off_by_default(serve):
    s = serve(APP_POOL)
    status, headers, body = http_get(s.port, "/big/", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in headers and "vary" not in headers and body == big_body()

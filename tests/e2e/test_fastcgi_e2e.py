"""Pool:FastCGI end to end: a real pyd behind a real nginx (`fastcgi_pass`), cgi-fcgi, and a
FastCGI client built on pyd's own codec for multiplexing and malformed records.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from fcgi_client import (
    FastCGIClient,
    begin_request,
    encode_record,
    params_records,
    request_bytes,
)
from harness import free_port, wait_port

from pyd.protocols.fastcgi import ABORT_REQUEST

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")]

APP = r'''
import hashlib, json, os, time

CLOSED = os.path.join(os.path.dirname(__file__), "closed.log")

def info(environ, start_response):
    body = environ["wsgi.input"].read()
    out = json.dumps({
        "method": environ["REQUEST_METHOD"], "script_name": environ["SCRIPT_NAME"],
        "path_info": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
        "length": len(body), "sha1": hashlib.sha1(body).hexdigest(),
        "content_length": environ.get("CONTENT_LENGTH", ""),
        "scheme": environ["wsgi.url_scheme"], "cookie_length": len(environ.get("HTTP_COOKIE", "")),
        "header": environ.get("HTTP_X_LONG", "")[:10], "pid": os.getpid(),
        "input_terminated": environ.get("wsgi.input_terminated", False),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]

def missing(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nothing here\n"]

def broken(environ, start_response):
    raise RuntimeError("the app broke")

class Stream:
    def __init__(self, delay):
        self.delay = delay
    def __iter__(self):
        for i in range(5):
            yield b"chunk %d\n" % i
            time.sleep(self.delay)
    def close(self):
        with open(CLOSED, "a") as f:
            f.write("closed\n")

def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Stream(float(environ.get("QUERY_STRING") or 0.3))
'''

SHOP = r'''
import pyd

class Shop(pyd.AppInstance):
    def __call__(self, environ, start_response):
        body = ("shop app %s" % self.name).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "fapp.py").write_text(APP)
    (tmp_path / "shop.py").write_text(SHOP)
    return tmp_path


def pyd_config(site: Path, port: int, sock: Path, extra: str = "") -> str:
    return f"""user root;
workers 1;
cwd {site};
App:shop {{ class shop:Shop; }}
Pool:FastCGI {{
    listen 127.0.0.1:{port}, unix:{sock};
    socket-mode 0660;
    app fapp:info;
    client-max-body-size 20M;
    location /missing/ {{ app fapp:missing; }}
    location /broken/ {{ app fapp:broken; }}
    location /stream/ {{ app fapp:stream; }}
    {extra}
}}
"""


class Nginx:
    """A real nginx on loopback, started and stopped by the test (by pid)."""

    def __init__(self, directory: Path, fcgi_port: int, fcgi_sock: Path):
        self.dir = directory
        self.port = free_port()
        conf = directory / "nginx.conf"
        params = "include /etc/nginx/fastcgi_params;"
        conf.write_text(f"""
daemon off;
user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_max_body_size 20m;
    client_body_temp_path {directory}/body;
    fastcgi_temp_path {directory}/fcgi_temp;
    proxy_temp_path {directory}/proxy_temp;
    uwsgi_temp_path {directory}/uwsgi_temp;
    scgi_temp_path {directory}/scgi_temp;
    upstream keep {{ server 127.0.0.1:{fcgi_port}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{self.port};
        large_client_header_buffers 4 16k;
        location / {{ {params} fastcgi_pass 127.0.0.1:{fcgi_port}; }}
        location /keep/ {{ {params} fastcgi_pass keep; fastcgi_keep_conn on; }}
        location /unix/ {{ {params} fastcgi_pass unix:{fcgi_sock}; }}
        location /unixkeep/ {{ {params} fastcgi_pass unix:{fcgi_sock}; fastcgi_keep_conn on; }}
        location /stream/ {{ {params} fastcgi_pass 127.0.0.1:{fcgi_port}; fastcgi_buffering off; }}
        location /tls/ {{ {params} fastcgi_param HTTPS on; fastcgi_pass 127.0.0.1:{fcgi_port}; }}
        location /shop/ {{ {params} fastcgi_param APPNAME shop; fastcgi_pass 127.0.0.1:{fcgi_port}; }}
        location ~ ^/py/.+\\.py(/|$) {{
            fastcgi_split_path_info ^(.+\\.py)(/.*)$;
            {params}
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_pass 127.0.0.1:{fcgi_port};
        }}
        location /split/ {{
            fastcgi_split_path_info ^(/split)(/.*)$;
            {params}
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_pass 127.0.0.1:{fcgi_port};
        }}
    }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-e",
                                      str(directory / "nginx-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def stack(pyd_factory, site):
    """pyd (FastCGI on TCP and a unix socket) behind nginx."""
    port = free_port()
    sock = site / "fcgi.sock"
    p = pyd_factory(pyd_config(site, port, sock))
    p.start()
    nginx = Nginx(site, port, sock)
    yield p, nginx, port, sock
    nginx.stop()


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True,
                          timeout=timeout + 5)


def get_json(url: str, *args: str) -> dict:
    import json

    proc = curl(*args, url)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("prefix", ["", "/keep", "/unix", "/unixkeep"])
def test_get_with_query_through_nginx(stack, prefix):
    _, nginx, _, _ = stack
    for i in range(3):  # several requests: reused connections where nginx keeps them
        data = get_json(nginx.url(f"{prefix}/a/b%20c?x={i}&y=%C3%A9"))
        assert data["method"] == "GET"
        assert data["script_name"] == ""
        assert data["path_info"] == f"{prefix}/a/b c"
        assert data["query"] == f"x={i}&y=%C3%A9"
        assert data["scheme"] == "http"


@pytest.mark.parametrize("size", [0, 1, 65535, 65536 * 3 + 7, 1 << 20, 10 << 20])
def test_post_bodies_are_checksummed(stack, tmp_path, size):
    _, nginx, _, _ = stack
    body = os.urandom(size)
    f = tmp_path / "upload.bin"
    f.write_bytes(body)
    for prefix in ("", "/keep"):
        data = get_json(nginx.url(f"{prefix}/upload"), "--data-binary", f"@{f}")
        assert data["method"] == "POST"
        assert data["length"] == size
        assert data["sha1"] == hashlib.sha1(body).hexdigest()


def test_chunked_upload(stack, tmp_path):
    _, nginx, _, _ = stack
    body = os.urandom(300_000)
    f = tmp_path / "upload.bin"
    f.write_bytes(body)
    data = get_json(nginx.url("/keep/chunked"), "-H", "Transfer-Encoding: chunked",
                    "--data-binary", f"@{f}")
    assert data["length"] == len(body)
    assert data["sha1"] == hashlib.sha1(body).hexdigest()


def test_streaming_response_is_flushed(stack):
    _, nginx, _, _ = stack
    proc = subprocess.Popen(["curl", "-sN", "--max-time", "20", nginx.url("/stream/x?1.0")],
                            stdout=subprocess.PIPE)
    started = time.monotonic()
    first = proc.stdout.readline()
    assert first == b"chunk 0\n"
    assert time.monotonic() - started < 0.9, "the first chunk waited for the rest"
    rest = proc.stdout.read()
    proc.wait(20)
    assert rest == b"".join(b"chunk %d\n" % i for i in range(1, 5))


def test_large_headers_and_cookies(stack):
    _, nginx, _, _ = stack
    cookie = "; ".join(f"c{i}={'v' * 90}" for i in range(60))  # ~5.6 KB
    data = get_json(nginx.url("/keep/h"), "-H", f"Cookie: {cookie}", "-H", "X-Long: " + "z" * 8000)
    assert data["cookie_length"] == len(cookie)
    assert data["header"] == "z" * 10


def test_app_errors_and_the_worker_lives_on(stack):
    p, nginx, _, _ = stack
    pid = get_json(nginx.url("/x"))["pid"]
    proc = curl("-i", nginx.url("/missing/thing"))
    assert b"404 Not Found" in proc.stdout.split(b"\r\n")[0] and b"nothing here" in proc.stdout
    proc = curl("-i", nginx.url("/broken/thing"))
    assert b" 500 " in proc.stdout.split(b"\r\n")[0]
    assert b"RuntimeError" not in proc.stdout  # no traceback to the client
    p.wait_for_log(r"RuntimeError: the app broke")
    assert get_json(nginx.url("/x"))["pid"] == pid


def test_client_abort_closes_the_app_iterable(stack, site):
    _, nginx, _, _ = stack
    s = socket.create_connection(("127.0.0.1", nginx.port))
    s.sendall(b"GET /stream/x?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"chunk 0" in s.recv(4096)
    s.close()
    deadline = time.monotonic() + 10
    closed = site / "closed.log"
    while time.monotonic() < deadline and not closed.exists():
        time.sleep(0.05)
    assert closed.read_text() == "closed\n"


def test_split_path_info_styles_and_mounts(stack):
    _, nginx, _, _ = stack
    data = get_json(nginx.url("/split/rest/of/it?q=1"))
    assert (data["script_name"], data["path_info"], data["query"]) == ("/split", "/rest/of/it",
                                                                       "q=1")


    data = get_json(nginx.url("/py/app.py/rest/of/it?q=2"))  # the PHP-like style
    assert (data["script_name"], data["path_info"], data["query"]) == ("/py/app.py",
                                                                       "/rest/of/it", "q=2")
    assert data["input_terminated"] is True  # a body without a length still ends (Werkzeug)


def test_abort_before_the_request_runs_still_ends_it(stack):
    """ABORT_REQUEST in the same read as the end of PARAMS: the request never starts, yet its
    END_REQUEST goes out and the connection serves the next request."""
    _, _, port, _ = stack
    with FastCGIClient(("127.0.0.1", port)) as c:
        c.send(begin_request(1, keep_conn=True) + params_records(1, {"REQUEST_METHOD": "GET"})
               + encode_record(ABORT_REQUEST, 1, b""))
        c.read_until(lambda ex: 1 in ex.responses and ex.responses[1].complete)
        aborted = c.exchange.responses.pop(1)
        assert aborted.app_status == 1 and b"Status: 200" not in aborted.stdout
        c.send(request_bytes(2, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/after"}, b"",
                             keep_conn=True))
        c.read_until(lambda ex: 2 in ex.responses and ex.responses[2].complete)
        assert c.exchange.responses[2].stdout.startswith(b"Status: 200")


def test_a_streamed_body_without_length_is_limited(pyd_factory, site):
    port = free_port()
    p = pyd_factory(pyd_config(site, port, site / "fcgi.sock").replace(
        "client-max-body-size 20M;", "client-max-body-size 64K;"))
    p.start()
    with FastCGIClient(("127.0.0.1", port)) as c:
        big = c.request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/"}, b"x" * 100_000,
                        keep_conn=True)
        assert big.stdout.startswith(b"Status: 413"), big.stdout[:100]
        small = c.request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/"}, b"x" * 1000,
                          request_id=2, keep_conn=True)
        assert small.stdout.startswith(b"Status: 200")


def test_https_param_and_appname_routing(stack):
    _, nginx, _, _ = stack
    assert get_json(nginx.url("/tls/x"))["scheme"] == "https"
    proc = curl(nginx.url("/shop/anything"))
    assert proc.stdout == b"shop app shop"


def test_location_mount_sets_script_name(pyd_factory, site):
    port = free_port()
    p = pyd_factory(pyd_config(site, port, site / "fcgi.sock",
                               "location /api/ { app fapp:info; }"))
    p.start()
    with FastCGIClient(("127.0.0.1", port)) as c:
        r = c.request({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/api/v1/items",
                       "REQUEST_URI": "/api/v1/items", "DOCUMENT_URI": "/api/v1/items",
                       "QUERY_STRING": ""})
    import json

    status, _, body = r.cgi()
    data = json.loads(body)
    assert status == "200 OK" and (data["script_name"], data["path_info"]) == ("/api", "/v1/items")


def test_cgi_fcgi_against_pyd(stack):
    if shutil.which("cgi-fcgi") is None:
        pytest.skip("cgi-fcgi (libfcgi-bin) is not installed")
    _, _, port, sock = stack
    env = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/cgi", "REQUEST_URI": "/cgi?z=9",
           "QUERY_STRING": "z=9", "CONTENT_LENGTH": "11", "SERVER_PROTOCOL": "HTTP/1.1",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for target in (f"127.0.0.1:{port}", str(sock)):
        proc = subprocess.run(["cgi-fcgi", "-bind", "-connect", target], input=b"hello world",
                              capture_output=True, env=env, timeout=15)
        assert proc.returncode == 0, proc.stderr
        head, _, body = proc.stdout.partition(b"\r\n\r\n")
        assert b"Status: 200 OK" in head
        assert b'"length": 11' in body and b'"query": "z=9"' in body


def test_multiplexed_requests_and_get_values(stack):
    _, _, port, _ = stack
    import json

    with FastCGIClient(("127.0.0.1", port)) as c:
        values = c.get_values([b"FCGI_MPXS_CONNS", b"FCGI_MAX_REQS"])
        assert values[b"FCGI_MPXS_CONNS"] == b"1"
        bodies = {rid: os.urandom(rid * 50_000) for rid in (1, 2, 3)}
        responses = c.multiplexed({rid: ({"REQUEST_METHOD": "POST", "SCRIPT_NAME": f"/m{rid}",
                                          "CONTENT_LENGTH": str(len(b))}, b)
                                   for rid, b in bodies.items()})
    for rid, body in bodies.items():
        data = json.loads(responses[rid].cgi()[2])
        assert data["path_info"] == f"/m{rid}"
        assert data["sha1"] == hashlib.sha1(body).hexdigest()
        assert responses[rid].protocol_status == 0


MALFORMED = [
    ("bad version", b"\x02\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x01" + b"\x00" * 5),
    ("stdin on id 0", encode_record(5, 0, b"xx")),
    ("begin twice", begin_request(1) + begin_request(1)),
    ("params garbage", begin_request(1) + encode_record(4, 1, b"\xff\xff\xff\xff\x00") +
     encode_record(4, 1, b"")),
    ("stdin before params end", begin_request(1) + encode_record(5, 1, b"body")),
    ("end_request from the server side", encode_record(3, 1, b"\x00" * 8)),
    ("truncated header then close", b"\x01\x01\x00"),
    ("oversized params", begin_request(1) + b"".join(
        params_records(1, {"X": "y" * 60000}) for _ in range(6))),
]


@pytest.mark.parametrize("name,data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_records_close_the_connection_and_the_worker_lives(stack, name, data):
    p, nginx, port, _ = stack
    pid = get_json(nginx.url("/x"))["pid"]
    rest = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:  # the server closes on the bad record: the rest of our bytes may meet a reset
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except OSError:  # a reset, a broken pipe, or not connected any more (ENOTCONN)
            pass
    assert b"Status: 200" not in rest
    assert get_json(nginx.url("/x"))["pid"] == pid


def test_allowed_clients_refuses_and_logs(pyd_factory, site):
    port = free_port()
    p = pyd_factory(pyd_config(site, port, site / "fcgi.sock", "allowed-clients 10.0.0.0/8;"))
    p.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(begin_request(1))
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass  # closed with our bytes unread: a reset is a close too
    p.wait_for_log(r"connection from 127\.0\.0\.1 refused \(not in allowed-clients\)")
    with FastCGIClient(str(site / "fcgi.sock")) as c:  # unix sockets are not filtered
        assert c.request({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/u"}).cgi()[0] == "200 OK"


def test_unix_socket_mode(stack):
    _, _, _, sock = stack
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660


def test_recycling_behind_nginx_loses_nothing(pyd_factory, site):
    """Workers retire every 50 requests while nginx reuses its cached upstream connections:
    no request may fail (a 502 would mean a connection closed under nginx's feet)."""
    from harness import Load

    port = free_port()
    sock = site / "fcgi.sock"
    p = pyd_factory(pyd_config(site, port, sock).replace(
        "workers 1;", "workers 2;\nmax-requests 50;\ngraceful-timeout 5s;"))
    p.start()
    nginx = Nginx(site, port, sock)
    try:
        loads = [Load(nginx.port, clients=8, keepalive=True, path=path).start(duration=60)
                 for path in ("/keep/x", "/unix/x")]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                p.log().count("retiring: served") < 10 or sum(x.total for x in loads) < 2000):
            time.sleep(0.2)
        for load in loads:
            load.stop()
    finally:
        nginx.stop()
    assert p.log().count("retiring: served") >= 10
    for load in loads:
        assert load.failed == 0 and load.resets == 0, load.report()
    assert "upstream prematurely closed" not in (site / "nginx-error.log").read_text()


def test_idle_and_stalled_connections_are_closed_at_their_deadlines(pyd_factory, site):
    port = free_port()
    p = pyd_factory(pyd_config(site, port, site / "fcgi.sock").replace(
        "    app fapp:info;", "    app fapp:info;\n    keepalive-timeout 1s;\n"
                             "    client-body-timeout 2s;"))
    p.start()

    def closed_after(data: bytes) -> float:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            assert s.recv(100) == b""
        return time.monotonic() - started

    assert 0.9 <= closed_after(b"") < 3.0  # nothing at all: keepalive-timeout
    stalled = begin_request(1) + params_records(1, {"REQUEST_METHOD": "POST"})  # no STDIN end
    assert 1.9 <= closed_after(stalled) < 4.0  # client-body-timeout
    with FastCGIClient(("127.0.0.1", port)) as c:  # and the worker serves on
        assert c.request({"REQUEST_METHOD": "GET"}).stdout.startswith(b"Status: 200")

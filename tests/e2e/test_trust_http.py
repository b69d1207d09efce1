"""The small protocol and static-file holes, tried as an attacker would against a real pyd (both
web pools) and, where nginx has an answer, the same bytes sent to a real nginx on loopback
serving the same files: header injection through a WSGI status line, Range numbers of
thousands of digits, protocol-relative redirects, absolute-form authorities, bad
percent-encodings and empty Hosts, HTTP/0.9, dotfiles, answers before 100 Continue, and a
silent client on the control socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from fcgi_client import FastCGIClient
from harness import Pyd, free_port, http_get, raw_exchange, wait_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APPS = r'''
import json


def echo(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


INJECTIONS = {
    "status": ("200 OK\r\nSet-Cookie: session=stolen", []),
    "status-lf": ("200 OK\nSet-Cookie: session=stolen", []),
    "status-nul": ("200 OK\0", []),
    "name": ("200 OK", [("X-A\r\nSet-Cookie", "session=stolen")]),
    "name-space": ("200 OK", [("Set-Cookie session", "stolen")]),
    "value": ("200 OK", [("X-A", "1\r\nSet-Cookie: session=stolen")]),
    "value-nul": ("200 OK", [("X-A", "stolen\0")]),
}


def inject(environ, start_response):
    status, headers = INJECTIONS[environ["QUERY_STRING"]]
    start_response(status, headers)
    return [b"the body"]
'''


class Nginx:
    """A real nginx serving `root` on loopback, started and stopped by the test (by pid)."""

    def __init__(self, directory: Path, root: Path):
        self.port = free_port()
        conf = directory / "nginx.conf"
        conf.write_text(f"""
daemon off;
user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy_temp;
    fastcgi_temp_path {directory}/fcgi_temp;
    uwsgi_temp_path {directory}/uwsgi_temp;
    scgi_temp_path {directory}/scgi_temp;
    server {{ listen 127.0.0.1:{self.port}; root {root}; }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-e",
                                      str(directory / "nginx-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    def __init__(self, pyd: Pyd, http: int, fcgi: int, www: Path, control: Path):
        self.pyd, self.http, self.fcgi, self.www, self.control = pyd, http, fcgi, www, control
        self.nginx: Nginx | None = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One pyd (an HTTP pool and a FastCGI pool) for the module, and an nginx on the same files."""
    base = tmp_path_factory.mktemp("trust-http")
    site = base / "site"
    www = site / "www"
    (www / "evil.example.com").mkdir(parents=True)
    (www / "sub").mkdir()
    (www / "data.txt").write_bytes(b"0123456789")
    (www / ".env").write_text("SECRET=1\n")
    (www / ".git").mkdir()
    (www / ".git" / "config").write_text("[core] SECRET\n")
    (www / ".well-known" / "acme-challenge").mkdir(parents=True)
    (www / ".well-known" / "acme-challenge" / "token").write_text("token\n")
    (site / "apps.py").write_text(APPS)
    http, fcgi = free_port(), free_port()
    control = base / "pyd" / "run" / "pyd.sock"
    config = textwrap.dedent(f"""\
        user root;
        workers 1;
        cwd {site};
        graceful-timeout 5s;
        control-socket {control};
        Pool:HTTPServer {{
            listen 127.0.0.1:{http};
            client-header-timeout 30s;
            location / {{ root {www}; }}
            location /echo/ {{ app apps:echo; }}
            location /inject/ {{ app apps:inject; }}
            location /open/ {{ alias {www}/; allow-dotfiles on; }}
        }}
        Pool:FastCGI {{
            listen 127.0.0.1:{fcgi};
            app apps:echo;
            location /inject/ {{ app apps:inject; }}
        }}
        """)
    p = Pyd(base / "pyd", config)
    try:
        p.start()
        wait_until(lambda: _answers(http), 15, "the HTTP pool serving")
        s = Stack(p, http, fcgi, www, control)
        if shutil.which("nginx"):
            s.nginx = Nginx(base, www)
        yield s
    finally:
        if "s" in locals() and s.nginx is not None:
            s.nginx.stop()
        p.cleanup()


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/echo/", timeout=2)[0] == 200
    except OSError:
        return False


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def head_of(response: bytes) -> dict:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    return raw_exchange(port, data, timeout=timeout)


def close(data: bytes) -> bytes:
    """A request head that ends with Connection: close (the server closes after it)."""
    return data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


# -- the WSGI status line and headers, in both pools ---------------------------------------------

KINDS = ["status", "status-lf", "status-nul", "name", "name-space", "value", "value-nul"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_app_cannot_inject_headers_through_the_http_pool(stack, kind):
    raw = request(stack.http, close(b"GET /inject/?%s HTTP/1.1\r\nHost: t\r\n\r\n" % kind.encode()))
    assert status_of(raw) == 500, raw[:300]
    assert b"stolen" not in raw and b"the body" not in raw


@pytest.mark.parametrize("kind", KINDS)
def test_an_app_cannot_inject_headers_through_the_fastcgi_pool(stack, kind):
    with FastCGIClient(("127.0.0.1", stack.fcgi)) as c:
        r = c.request({"REQUEST_METHOD": "GET", "REQUEST_URI": f"/inject/?{kind}",
                       "DOCUMENT_URI": "/inject/", "QUERY_STRING": kind,
                       "SERVER_PROTOCOL": "HTTP/1.1"})
    status, headers, body = r.cgi()
    assert status.startswith("500"), r.stdout[:300]
    assert b"stolen" not in r.stdout and body != b"the body"


@pytest.mark.skipif(shutil.which("cgi-fcgi") is None, reason="cgi-fcgi is not installed")
def test_cgi_fcgi_sees_no_injected_header(stack):
    env = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/inject/?status", "DOCUMENT_URI": "/inject/",
           "QUERY_STRING": "status", "SERVER_PROTOCOL": "HTTP/1.1",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"127.0.0.1:{stack.fcgi}"],
                          capture_output=True, env=env, timeout=15)
    assert proc.stdout, proc.stderr  # its exit status is the app's: 1, the app failed
    head = proc.stdout.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"Status: 500") and b"stolen" not in proc.stdout, proc.stdout[:300]


# -- what nginx refuses, pyd refuses the same way ------------------------------------------------

H = b"Host: t\r\n"
NGINX_ANSWERS = [
    ("range-5000-digit-start", close(b"GET /data.txt HTTP/1.1\r\n" + H + b"Range: bytes="
                                     + b"9" * 5000 + b"-\r\n\r\n"), 416),
    ("range-5000-digit-end", close(b"GET /data.txt HTTP/1.1\r\n" + H + b"Range: bytes=0-"
                                   + b"9" * 5000 + b"\r\n\r\n"), 416),
    ("range-5000-digit-suffix", close(b"GET /data.txt HTTP/1.1\r\n" + H + b"Range: bytes=-"
                                      + b"9" * 5000 + b"\r\n\r\n"), 416),
    ("range-past-off-t", close(b"GET /data.txt HTTP/1.1\r\n" + H
                               + b"Range: bytes=0-9223372036854775808\r\n\r\n"), 416),
    ("range-largest-off-t", close(b"GET /data.txt HTTP/1.1\r\n" + H
                                  + b"Range: bytes=2-9223372036854775807\r\n\r\n"), 206),
    ("percent-not-hex", close(b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n"), 400),
    ("percent-short", close(b"GET /data.txt%4 HTTP/1.1\r\n" + H + b"\r\n"), 400),
    ("percent-in-query-is-fine", close(b"GET /data.txt?q=%zz HTTP/1.1\r\n" + H + b"\r\n"), 200),
    ("host-empty-11", close(b"GET /data.txt HTTP/1.1\r\nHost:\r\n\r\n"), 400),
    ("host-empty-10", close(b"GET /data.txt HTTP/1.0\r\nHost: \r\n\r\n"), 400),
    ("absolute-userinfo", close(b"GET http://user@t/data.txt HTTP/1.1\r\n" + H + b"\r\n"), 400),
    ("absolute-empty-host", close(b"GET http:///data.txt HTTP/1.1\r\n" + H + b"\r\n"), 400),
    ("absolute-with-port", close(b"GET http://t:80/data.txt HTTP/1.1\r\n" + H + b"\r\n"), 200),
    ("absolute-http10-no-host", b"GET http://t/data.txt HTTP/1.0\r\n\r\n", 200),
]


@pytest.mark.parametrize("data,status", [(d, s) for _, d, s in NGINX_ANSWERS],
                         ids=[name for name, _, _ in NGINX_ANSWERS])
def test_pyd_answers_as_nginx_does(stack, data, status):
    raw = request(stack.http, data)
    assert status_of(raw) == status, raw[:300]
    assert b"Traceback" not in raw
    if stack.nginx is not None:
        assert status_of(request(stack.nginx.port, data)) == status, "nginx changed its mind"


def test_a_request_line_without_a_version_is_answered_at_once(stack):
    """HTTP/0.9: nginx answers at once; pyd did not answer before client-header-timeout (30 s
    here). Now: 505 and the connection closes, with the read that ended the line."""
    for port in [stack.http] + ([stack.nginx.port] if stack.nginx else []):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /data.txt\r\n")
            started = time.monotonic()
            s.settimeout(5)
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
            assert time.monotonic() - started < 3, port
            assert answer, port
    raw = request(stack.http, b"GET /data.txt\r\n")
    assert status_of(raw) == 505 and head_of(raw)["connection"] == "close"


# -- absolute-form: the authority is the host ----------------------------------------------------

def test_the_authority_of_an_absolute_form_target_is_the_host(stack):
    raw = request(stack.http, close(b"GET http://good.example:8080/echo/x?q=1 HTTP/1.1\r\n"
                                    b"Host: evil.example\r\n\r\n"))
    assert status_of(raw) == 200, raw[:300]
    env = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert env["HTTP_HOST"] == "good.example:8080"
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/x", "q=1")
    raw = request(stack.http, b"GET http://good.example/echo/?q=2 HTTP/1.0\r\n\r\n")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["HTTP_HOST"] == "good.example"


# -- redirects are never protocol-relative ------------------------------------------------------

@pytest.mark.parametrize("target,location", [
    (b"//evil.example.com", "/evil.example.com/"),
    (b"//evil.example.com?x=1", "/evil.example.com/?x=1"),
    (b"///evil.example.com", "/evil.example.com/"),
    (b"//sub", "/sub/"),
])
def test_a_directory_redirect_never_leaves_the_site(stack, target, location):
    raw = request(stack.http, close(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n"))
    assert status_of(raw) == 301, raw[:300]
    assert head_of(raw)["location"] == location


# -- dotfiles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/.env", "/.git/config", "/.git", "/.git/", "/sub/../.env",
                                  "/%2e%65nv", "/.well-known/../.env"])
def test_dotfiles_are_not_served_by_default(stack, path):
    status, _, body = http_get(stack.http, path)
    assert status == 404, (path, status)
    assert b"SECRET" not in body


def test_dotfiles_are_served_where_the_location_allows_and_well_known_always(stack):
    status, _, body = http_get(stack.http, "/open/.env")
    assert (status, body) == (200, b"SECRET=1\n")
    assert http_get(stack.http, "/.well-known/acme-challenge/token")[2] == b"token\n"


# -- Expect: 100-continue -------------------------------------------------------------------------

def test_an_answer_before_100_continue_closes_the_connection(stack):
    """An answer from an app that did not read the body: the client may still send its body,
    or may be waiting for 100 Continue; either way the connection cannot go on."""
    with socket.create_connection(("127.0.0.1", stack.http), timeout=5) as s:
        s.sendall(b"POST /echo/ HTTP/1.1\r\n" + H
                  + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            assert chunk, answer
            answer += chunk
        assert status_of(answer) == 200 and head_of(answer)["connection"] == "close"
        s.settimeout(5)
        while s.recv(65536):  # and it closes: nothing waits for a body that may never come
            pass


# -- the control socket ---------------------------------------------------------------------------

def test_a_silent_control_client_is_closed_and_commands_still_work(stack):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with silent:
        silent.connect(str(stack.control))
        started = time.monotonic()
        assert "worker" in stack.pyd.fullstatus()  # the master still answers the CLI
        silent.settimeout(15)
        assert silent.recv(100) == b""  # closed by the master, at its read timeout
        assert time.monotonic() - started < 12

"""The FastCGI driver in process: requests through the shared exchange (routing, environ,
records), kept connections, multiplexing, deadlines, and cgi-fcgi as a real peer."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from conftest import wait_for
from fcgi_client import FastCGIClient

from pyd.pools.fastcgi import FastCGIPool, FastCGIServerConnection
from pyd.web.exchange import RequestRecord


def params(uri: str = "/", method: str = "GET", **extra: str) -> dict:
    path, _, query = uri.partition("?")
    out = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "SCRIPT_NAME": path,
           "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.1.2.3",
           "SERVER_NAME": "x", "SERVER_PORT": "80"}
    out.update(extra)
    return out


def connections_of(served) -> list[FastCGIServerConnection]:
    return [c for c in list(served.pool.connections.values())
            if type(c) is FastCGIServerConnection]


def test_a_request_is_routed_and_recorded(serve):
    got: list[RequestRecord] = []

    class Counting(FastCGIPool):
        def request_finished(self, token, record=None):
            got.append(record)
            super().request_finished(token, record)

    served = serve("app driverapps:echo;\nlocation /hello/ { app driverapps:hello; }\n",
                   kind="FastCGI", cls=Counting)
    with FastCGIClient(("127.0.0.1", served.port)) as c:
        r = c.request(params("/hello/there?x=1", HTTP_USER_AGENT="nginx-ish"))
    status, headers, body = r.cgi()
    assert status == "200 OK" and body == b"Hello, World!" and r.app_status == 0
    (record,) = wait_for(lambda: got)
    assert record.pool == "FastCGI" and record.location == "/hello/"
    assert record.method == "GET" and record.target == b"/hello/there?x=1"
    assert record.path == "/there" and record.version == "1.1"
    assert record.status == "200 OK" and record.bytes_out == 13 and record.bytes_in == 0
    assert record.client == "10.1.2.3" and record.user_agent == b"nginx-ish"


def test_a_kept_connection_serves_requests_one_after_another(serve):
    served = serve("app driverapps:echo;\n", kind="FastCGI")
    with FastCGIClient(("127.0.0.1", served.port)) as c:
        for i in range(3):
            body = b"x" * (i * 1000)
            r = c.request(params("/e", "POST", CONTENT_LENGTH=str(len(body))), body,
                          request_id=i + 1, keep_conn=True)
            assert r.cgi()[2].startswith(b"got %d: " % len(body))
        assert len(connections_of(served)) == 1


def test_multiplexed_requests_all_complete(serve):
    served = serve("app driverapps:echo;\n", kind="FastCGI")
    with FastCGIClient(("127.0.0.1", served.port)) as c:
        out = c.multiplexed({rid: (params("/m", "POST", CONTENT_LENGTH="20000"),
                                   bytes([rid]) * 20000) for rid in (1, 2, 3)})
    for rid in (1, 2, 3):
        assert out[rid].cgi()[2].startswith(b"got 20000: " + bytes([rid]) * 8)


def test_an_unknown_location_is_404_and_a_large_body_413(serve):
    served = serve("client-max-body-size 10;\nlocation /only/ { app driverapps:hello; }\n",
                   kind="FastCGI")
    with FastCGIClient(("127.0.0.1", served.port)) as c:
        r = c.request(params("/elsewhere"), keep_conn=True)
        assert r.cgi()[0] == "404 Not Found"
        r = c.request(params("/only/", "POST", CONTENT_LENGTH="11"), b"x" * 11, request_id=2)
        assert r.cgi()[0].startswith("413")


def test_keepalive_timeout_closes_a_connection_without_requests(serve):
    served = serve("app driverapps:hello;\nkeepalive-timeout 1s;\n", kind="FastCGI")
    with FastCGIClient(("127.0.0.1", served.port)) as c:
        started = time.monotonic()
        assert c.sock.recv(100) == b""
        assert 0.7 < time.monotonic() - started < 3.0
    wait_for(lambda: not connections_of(served))


def test_a_kept_connection_after_its_request_waits_with_client_body_timeout(serve):
    """Its reader began to wait while the request was in flight (as it does for every request
    nginx sends in one piece): that wait keeps client-body-timeout, not keepalive-timeout."""
    served = serve("app driverapps:hello;\nkeepalive-timeout 1s;\nclient-body-timeout 2s;\n",
                   kind="FastCGI")
    with FastCGIClient(("127.0.0.1", served.port)) as c:
        c.request(params("/"), keep_conn=True)
        started = time.monotonic()
        assert c.sock.recv(100) == b""
        assert 1.5 < time.monotonic() - started < 4.0
    wait_for(lambda: not connections_of(served))


def test_client_body_timeout_closes_a_stalled_body(serve):
    served = serve("app driverapps:echo;\nclient-body-timeout 1s;\n", kind="FastCGI")
    from fcgi_client import begin_request, params_records

    with FastCGIClient(("127.0.0.1", served.port)) as c:
        c.send(begin_request(1, keep_conn=True)
               + params_records(1, params("/", "POST", CONTENT_LENGTH="100")))
        started = time.monotonic()  # STDIN never comes
        ex = c.read_until(lambda ex: False)
        assert ex.closed and 0.7 < time.monotonic() - started < 3.5


@pytest.mark.skipif(shutil.which("cgi-fcgi") is None, reason="cgi-fcgi is not installed")
def test_cgi_fcgi_gets_an_answer(serve):
    served = serve("app driverapps:hello;\n", kind="FastCGI")
    env = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/", "SCRIPT_NAME": "/",
           "SERVER_PROTOCOL": "HTTP/1.1", "QUERY_STRING": "", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"127.0.0.1:{served.port}"],
                       env=env, capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"Status: 200 OK\r\n") and r.stdout.endswith(b"Hello, World!")

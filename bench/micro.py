#!/usr/bin/env python3
"""bench/micro.py: in-process micro-benchmarks of pyd's cores, where a regression shows first.

The sans-IO HTTP/1.1 core (a browser's GET answered on a kept-alive connection; a chunked POST),
the FastCGI codec (nginx's request: BEGIN, 20 params, an empty STDIN; the answer), and the
access-log line (combined and JSON, from a request record). No sockets, no processes.

Two measures:
- time (default): the best of `--repeat` rounds of `--number` operations, in microseconds per
  operation. Quick, but the machine's noise is in it.
- `--instructions`: instructions per operation, counted by valgrind's callgrind. Each case runs
  twice in a child (n and 2n operations) and the difference is divided by n, so start-up and
  imports cancel out. The count is the same from run to run on the same interpreter and code,
  whatever else the machine is doing: compare two revisions with `--pyd-rev REV` and the
  working tree, run one after the other.

    python3 bench/micro.py                     # time per operation
    python3 bench/micro.py --instructions      # instructions per operation (about a minute)
    python3 bench/micro.py --instructions --pyd-rev 390f4ab
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GET = (b"GET /articles/2024/05/hello-world?ref=home&page=2 HTTP/1.1\r\n"
       b"Host: www.example.com\r\n"
       b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n"
       b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
       b"Accept-Language: en-GB,en;q=0.5\r\n"
       b"Accept-Encoding: gzip, deflate, br\r\n"
       b"Referer: https://www.example.com/\r\n"
       b"Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n"
       b"Connection: keep-alive\r\n\r\n")
POST = (b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"10\r\n{\"name\": \"thing\"\r\n8\r\n, \"n\": 1\r\n1\r\n}\r\n0\r\n\r\n")
HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache")]
BODY = b"<!doctype html><title>hello</title><p>Hello, world!</p>\n"

NGINX_PARAMS = [
    (b"QUERY_STRING", b"ref=home&page=2"), (b"REQUEST_METHOD", b"GET"),
    (b"CONTENT_TYPE", b""), (b"CONTENT_LENGTH", b""),
    (b"SCRIPT_NAME", b"/articles/2024/05/hello-world"),
    (b"REQUEST_URI", b"/articles/2024/05/hello-world?ref=home&page=2"),
    (b"DOCUMENT_URI", b"/articles/2024/05/hello-world"), (b"DOCUMENT_ROOT", b"/srv/www"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"http"),
    (b"GATEWAY_INTERFACE", b"CGI/1.1"), (b"SERVER_SOFTWARE", b"nginx/1.22.1"),
    (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"51234"),
    (b"SERVER_ADDR", b"127.0.0.1"), (b"SERVER_PORT", b"80"),
    (b"SERVER_NAME", b"www.example.com"), (b"HTTP_HOST", b"www.example.com"),
    (b"HTTP_USER_AGENT", b"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101"),
    (b"HTTP_ACCEPT", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
]


def h1_cases() -> dict[str, Callable[[int], None]]:
    from pyd.protocols.h1 import END, NEED_DATA, PAUSED, H1Connection, Limits, Request

    def exchange(c, data: bytes) -> None:
        c.receive_data(data)
        while True:
            ev = c.next_event()
            if ev is NEED_DATA:
                return
            if ev is END or ev is PAUSED:
                c.respond("200 OK", HEADERS, BODY)
                return
            # a Request or a piece of its body: read on

    def keepalive_get(n: int) -> None:
        c = H1Connection(Limits())
        for _ in range(n):
            exchange(c, GET)

    def chunked_post(n: int) -> None:
        c = H1Connection(Limits())
        for _ in range(n):
            exchange(c, POST)

    assert Request  # the events read on are these
    return {"h1 GET, kept alive, 200 answered": keepalive_get,
            "h1 chunked POST, 200 answered": chunked_post}


def fastcgi_cases() -> dict[str, Callable[[int], None]]:
    from pyd.protocols import fastcgi as p

    def request(rid: int) -> bytes:
        params = p.encode_params(NGINX_PARAMS)
        return (p.encode_record(p.BEGIN_REQUEST, rid, bytes([0, p.RESPONDER, p.KEEP_CONN, 0, 0,
                                                              0, 0, 0]))
                + p.encode_record(p.PARAMS, rid, params) + p.encode_record(p.PARAMS, rid)
                + p.encode_record(p.STDIN, rid))

    wire = request(1)
    head = b"Status: 200 OK\r\nContent-Type: text/html\r\n\r\n"

    def nginx_request(n: int) -> None:
        c = p.FastCGIConnection(text_params=True)
        for _ in range(n):
            c.receive_data(wire)
            while True:
                ev = c.next_event()
                if type(ev) is p.StdinEnd:
                    c.stdout(1, head + BODY)
                    c.end_request(1)
                    c.data_to_send()
                    break

    return {"FastCGI nginx request, answered": nginx_request}


def access_log_cases() -> dict[str, Callable[[int], None]]:
    """The access-log line from a request record, as the observer builds it."""
    try:
        from pyd.web import accesslog
        from pyd.web.exchange import RequestRecord
    except ImportError as e:  # a revision before the request seam
        return {"access log": _unavailable(f"no request record here ({e})")}
    fields = RequestRecord._fields
    values = {"pool": "HTTPServer", "location": "/articles/", "method": "GET",
              "target": b"/articles/2024/05/hello-world?ref=home&page=2",
              "path": "/articles/2024/05/hello-world", "version": "1.1",
              "status": "200 OK", "bytes_in": 0, "bytes_out": len(BODY), "duration": 0.000734,
              "time": 1714564800.123, "client": "203.0.113.7",
              "headers": [(b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:125.0)"),
                          (b"referer", b"https://www.example.com/")]}
    try:
        record = RequestRecord(**{f: values.get(f) for f in fields})
    except TypeError as e:
        return {"access log": _unavailable(f"record fields changed ({e})")}
    cases = {}
    for fmt in ("combined", "json"):
        log = accesslog.AccessLog(fmt, "HTTPServer")

        def run(n: int, line=log.line) -> None:
            for _ in range(n):
                line(record)

        cases[f"access-log line, {fmt}"] = run
    return cases


SITE_CONF = """user root;
Pool:HTTPServer {
    listen 127.0.0.1:8080;
    app benchapps:app;
    access-log off;
}
"""
SITE_APPS = '''
HELLO = b"Hello, World!"
BIG = b"x" * 65536

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]

def big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(BIG)))])
    return [BIG]

def app(environ, start_response):
    return (big if environ["PATH_INFO"] == "/big" else hello)(environ, start_response)
'''


class _Worker:
    """What a pool asks of its worker on every request, and no more (the same in every
    revision): a token in, the token (and the request record where there is one) out."""

    def __init__(self):
        self.next = 0
        self.inflight = {}
        self.requests = 0

    def request_started(self, description):
        self.next += 1
        self.inflight[self.next] = description
        return self.next

    def request_finished(self, token, record=None):
        self.inflight.pop(token, None)
        self.requests += 1


def http_pool_cases() -> dict[str, Callable[[int], None]]:
    """A whole HTTPServer pool in this process, on gevent socketpairs: the path of a request
    from the pool's spawn_connection to the last byte read back (driver, stream, exchange,
    WSGI, the worker's bookkeeping), written against what every revision has. The access log
    is off, as in bench/run; the client's side (a gevent socket) is in the count too."""
    try:
        import gevent
        from gevent import socket as gsocket

        from pyd.config import load
        from pyd.net.listeners import Listener
        from pyd.pools.http import HTTPServerPool
    except ImportError as e:
        return {"pool": _unavailable(f"no HTTPServer pool here ({e})")}
    tmp = tempfile.mkdtemp(prefix="pyd-micro-site-")
    with open(os.path.join(tmp, "benchapps.py"), "w") as f:
        f.write(SITE_APPS)
    conf = os.path.join(tmp, "pyd.conf")
    with open(conf, "w") as f:
        f.write(SITE_CONF.replace("user root;", f"user root;\ncwd {tmp};"))
    sys.path.insert(0, tmp)
    import benchapps  # noqa: F401  (the pool imports it by name)
    (section,) = load(conf, env={}).pools
    listener_sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    listener_sock.bind(("127.0.0.1", 0))
    pool = HTTPServerPool(section, [Listener(section.settings["listen"][0], listener_sock)],
                          _Worker())
    pool.load({})
    pool.accepting = True
    address = ("127.0.0.1", 40000)
    hello = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    close = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    big = b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n"

    def read_response(client, want: int) -> None:
        got = 0
        while got < want:
            data = client.recv(262144)
            if not data:
                raise RuntimeError("the connection closed early")
            got += len(data)

    def measure_once(request: bytes) -> int:
        client, server = gsocket.socketpair()
        pool.spawn_connection(server, address)
        client.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        total = 0
        while True:
            data = client.recv(262144)
            if not data:
                break
            total += len(data)
        client.close()
        gevent.sleep(0)
        return total

    sizes = {r: measure_once(r) - len(b"Connection: close\r\n") for r in (hello, big)}

    def kept_alive(request: bytes) -> Callable[[int], None]:
        want = sizes[request]

        def run(n: int) -> None:
            client, server = gsocket.socketpair()
            pool.spawn_connection(server, address)
            for _ in range(n):
                client.sendall(request)
                read_response(client, want)
            client.close()
            gevent.sleep(0)
            gevent.sleep(0)

        return run

    def connection_close(n: int) -> None:
        for _ in range(n):
            client, server = gsocket.socketpair()
            pool.spawn_connection(server, address)
            client.sendall(close)
            while client.recv(262144):
                pass
            client.close()
            gevent.sleep(0)

    return {"pool: hello, kept alive": kept_alive(hello),
            "pool: hello, Connection: close": connection_close,
            "pool: 64 KB, kept alive": kept_alive(big)}


def _unavailable(why: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        raise LookupError(why)

    return run


def all_cases() -> dict[str, Callable[[int], None]]:
    return {**h1_cases(), **fastcgi_cases(), **access_log_cases(), **http_pool_cases()}


# -- measuring -----------------------------------------------------------------------------------

def time_per_op(fn: Callable[[int], None], number: int, repeat: int) -> float:
    fn(min(number, 100))  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(number)
        best = min(best, time.perf_counter() - t0)
    return best / number * 1e6


def child(name: str, n: int) -> None:
    """Under callgrind: run one case n times, with instrumentation only around it."""
    fn = all_cases()[name]
    fn(10)  # first-call costs (imports inside the case, caches) out of the count
    fn(n)


def instructions(name: str, n: int, pythonpath: str) -> float:
    counts = []
    with tempfile.TemporaryDirectory(prefix="pyd-micro-") as tmp:
        for k in (n, 2 * n):
            out = os.path.join(tmp, f"cg.{k}")
            env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONHASHSEED": "0"}
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, str(Path(__file__).resolve()), "--child", name,
                            str(k)], env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=600)
            counts.append(_total(out))
    return (counts[1] - counts[0]) / n


def _total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def export(rev: str, into: str) -> str:
    archive = os.path.join(into, "pyd.tar")
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", archive, rev, "pyd"], check=True)
    with tarfile.open(archive) as t:
        t.extractall(into, filter="data")
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/micro.py", description=__doc__.splitlines()[0])
    p.add_argument("--instructions", action="store_true", help="count instructions (callgrind)")
    p.add_argument("--number", type=int, default=20000, help="operations per round (time)")
    p.add_argument("--repeat", type=int, default=7, help="rounds; the best is kept (time)")
    p.add_argument("--calls", type=int, default=2000, help="operations per count (instructions)")
    p.add_argument("--pyd-rev", metavar="REV", help="measure this commit instead of the tree")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--only", metavar="TEXT", help="only the cases whose name contains TEXT")
    p.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    tmp = tempfile.mkdtemp(prefix="pyd-micro-src-")
    try:
        source = export(args.pyd_rev, tmp) if args.pyd_rev else str(REPO)
        if args.instructions and not shutil.which("valgrind"):
            print("bench/micro.py: --instructions needs valgrind (apt-get install valgrind)",
                  file=sys.stderr)
            return 1
        sys.path.insert(0, source)
        for name in [m for m in sys.modules if m == "pyd" or m.startswith("pyd.")]:
            del sys.modules[name]
        results: dict[str, float | str] = {}
        unit = "instructions/op" if args.instructions else "us/op"
        for name, fn in all_cases().items():
            if args.only and args.only not in name:
                continue
            try:
                if args.instructions:
                    fn(1)  # fails here, not under valgrind, when the case is unavailable
                    results[name] = round(instructions(name, args.calls, source))
                else:
                    results[name] = round(time_per_op(fn, args.number, args.repeat), 3)
            except LookupError as e:
                results[name] = f"n/a: {e}"
        if args.json:
            print(json.dumps({"rev": args.pyd_rev or "working tree", "unit": unit,
                              "results": results}, indent=2))
        else:
            print(f"pyd {args.pyd_rev or 'working tree'}, {unit}")
            for name, value in results.items():
                print(f"  {name:<40} {value:>12}" if not isinstance(value, str)
                      else f"  {name:<40} {value}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

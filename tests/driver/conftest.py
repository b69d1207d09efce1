"""Driver tests: one pool in this process, on 127.0.0.1:0, no master, no fork.

The pool runs on a gevent hub of its own in a thread of the test process, with gevent's own
sockets (nothing is monkey-patched), so the tests talk to it with plain blocking sockets, curl
and cgi-fcgi, and can look at its state (parked connections, records) directly.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from pyd.config import load

APPS = '''\
import time

def hello(environ, start_response):
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [b"got %d: " % len(body), body[:32]]

def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(3):
        yield b"part %d\\n" % i

def slow(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or 0.2))
    start_response("200 OK", [("Content-Length", "4")])
    return [b"slow"]
'''


class Served:
    """A pool serving in a thread's gevent hub; `stop()` closes it and joins the thread."""

    def __init__(self, pool_factory, section, apps: dict):
        self.error: BaseException | None = None
        self.pool = None
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(pool_factory, section, apps),
                                        name="driver-hub", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the pool did not start")
        if self.error is not None:
            raise self.error

    def _serve(self, pool_factory, section, apps) -> None:
        import gevent
        import gevent.event
        from gevent import socket

        from pyd.net.listeners import Listener

        try:
            self.hub = gevent.get_hub()
            # created here: a gevent socket belongs to the hub of the thread that makes it
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            address = section.settings["listen"][0]
            self.pool = pool_factory(section, [Listener(address, sock)])
            self.pool.load(apps)
            self.pool.start()
            self._stop = gevent.event.Event()
        except BaseException as e:  # reported to the test thread
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        self._stop.wait()
        self.pool.stop_accepting()
        self.pool.close_all()
        gevent.sleep(0.05)

    def call(self, fn, timeout: float = 5.0):
        """Run fn() in the pool's hub and return what it returns."""
        done = threading.Event()
        out: list = []

        def run() -> None:
            try:
                out.append(fn())
            except BaseException as e:  # handed back
                out.append(e)
            done.set()

        self.hub.loop.run_callback_threadsafe(run)
        assert done.wait(timeout), "the hub did not run the call"
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def stop(self) -> None:
        if self.pool is not None and self._thread.is_alive():
            self.hub.loop.run_callback_threadsafe(self._stop.set)
            self._thread.join(10)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {predicate}")


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    (tmp_path / "driverapps.py").write_text(APPS)
    static = tmp_path / "static"
    static.mkdir()
    (static / "big.bin").write_bytes(bytes(range(256)) * 4096 * 2)  # 2 MB
    return tmp_path


@pytest.fixture
def serve(site_dir, monkeypatch):
    """serve(pool_text, kind="HTTPServer", cls=None) -> Served: the section body is pool_text,
    the app module driverapps in site_dir; stopped at the end."""
    monkeypatch.syspath_prepend(str(site_dir))
    started: list[Served] = []

    def start(body: str, kind: str = "HTTPServer", cls=None) -> Served:
        conf = site_dir / f"pyd{len(started)}.conf"
        conf.write_text(f"user root;\ncwd {site_dir};\nPool:{kind} {{\n    listen 127.0.0.1:1;\n"
                        + textwrap.indent(textwrap.dedent(body), "    ") + "}\n")
        config = load(str(conf), env={})
        (section,) = config.pools
        if cls is None:
            from pyd.apps import import_ref
            from pyd.pools import POOL_TYPES

            cls = import_ref(POOL_TYPES[kind])
        served = Served(cls, section, {})
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()

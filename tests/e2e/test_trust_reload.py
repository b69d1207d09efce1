"""Applying a config is a transaction: HUP or `pyd update` with a config that cannot be applied
(a privileged App: that fails to import, a socket-owner this system does not know) changes
nothing, under light load: the master stays, no request fails, the old config keeps serving,
workers spawned afterwards use it, and a later good update works.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from harness import Load, free_port, http_get, wait_port, wait_until

pytestmark = pytest.mark.e2e

HELLO = '''
import os

def app(environ, start_response):
    body = b"hello from %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

BROKEN = '''
raise RuntimeError("broken at import")
'''

GOOD = '''
import os

import pyd


class Good(pyd.AppInstance):
    def init(self):
        self.made_in = os.getpid()

    def __call__(self, environ, start_response):
        body = b"good, made in %d, served by %d" % (self.made_in, os.getpid())
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
'''


def head(site: Path) -> str:
    return f"user root;\nworkers 2;\ncwd {site};\ngraceful-timeout 5s;\n"


def good(site: Path, port: int) -> str:
    return head(site) + (f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app hello:app; "
                         "access-log off; }\n")


def broken_app(site: Path, a: int, b: int) -> str:
    """Moves the pool to port b and adds a privileged app that cannot be imported."""
    return head(site) + ("App:bad { class broken:Bad; privileged; }\n"
                         f"Pool:HTTPServer {{ listen 127.0.0.1:{b}; app hello:app; "
                         "access-log off; }\n")


def unknown_owner(site: Path, a: int, b: int) -> str:
    """A new FastCGI pool on port b, then the HTTP pool with a socket-owner nobody knows."""
    return head(site) + (f"Pool:FastCGI {{ listen 127.0.0.1:{b}; app hello:app; }}\n"
                         f"Pool:HTTPServer {{ listen 127.0.0.1:{a}; app hello:app; "
                         "access-log off; socket-owner pyd-no-such-user; }\n")


BROKEN_CONFIGS = {"broken-app": (broken_app, "broken at import"),
                  "unknown-owner": (unknown_owner, "pyd-no-such-user")}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(HELLO)
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "good.py").write_text(GOOD)
    return tmp_path


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("how", ["update", "hup"])
@pytest.mark.parametrize("kind", sorted(BROKEN_CONFIGS))
def test_a_config_that_cannot_be_applied_changes_nothing(pyd_factory, site, kind, how):
    make, why = BROKEN_CONFIGS[kind]
    a, b = free_port(), free_port()
    p = pyd_factory(good(site, a))
    p.start()
    text = make(site, a, b)
    p.conf.write_text(p.conf.read_text().split("user root;")[0] + text)
    configtest = p.cli("configtest", "-q")
    assert configtest.returncode == 1 and why in configtest.stderr, configtest.stderr
    load = Load(a, clients=4, keepalive=True).start(max_requests=100_000, duration=60)
    try:
        wait_until(lambda: load.total > 50, 10, "the load running")
        workers = p.workers()
        if how == "update":
            proc = p.cli("update")
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "not applied" in proc.stderr and why in proc.stderr, proc.stderr
        else:
            os.kill(p.master_pid, signal.SIGHUP)
        m = p.wait_for_log(r"update: the new configuration cannot be applied; still serving "
                           r"the old one:\n([^\n]+)", timeout=20)
        assert why in m.group(1) and f"{p.conf}:" in m.group(1), m.group(1)
        assert p.alive(p.master_pid)
        assert refused(b), "what the failed update bound must be closed again"
        assert p.workers() == workers
        # Workers spawned now still use the config that works.
        assert p.cli("reload").returncode == 0, p.log()[-3000:]
        assert not set(workers) & set(p.workers())
        served = load.total
        wait_until(lambda: load.total > served + 50, 10, "the old config serving")
    finally:
        load.stop()
    assert load.failed == 0 and load.resets == 0, load.report()
    victim = p.workers()[0]
    os.kill(victim, signal.SIGKILL)  # without load: its connections would be reset
    wait_until(lambda: victim not in p.workers() and len(p.workers()) == 2, 15,
               "the killed worker replaced")
    assert http_get(a)[0] == 200
    assert "Traceback" not in p.log(), p.log()[-3000:]
    # A good update afterwards is applied: the new port, and a privileged app made by the
    # master and served by the new workers.
    p.conf.write_text(p.conf.read_text().split("user root;")[0] + head(site)
                      + "App:good { class good:Good; privileged; }\n"
                      f"Pool:HTTPServer {{ listen 127.0.0.1:{b}; app good; access-log off; }}\n")
    proc = p.cli("update")
    assert proc.returncode == 0, proc.stdout + proc.stderr + p.log()[-3000:]
    wait_port(b)
    status, _, body = http_get(b)
    assert status == 200 and body.startswith(b"good, made in %d" % p.master_pid), body
    assert int(body.split()[-1]) in p.workers()
    wait_until(lambda: refused(a), 10, "the old listener closed")


def test_a_broken_privileged_app_at_start_is_one_clear_error(pyd_factory, site):
    a, b = free_port(), free_port()
    p = pyd_factory(broken_app(site, a, b))
    proc = p.start(check=False)
    assert proc.returncode == 1 and "broken at import" in proc.stderr, proc.stderr
    assert refused(b)


def test_an_unknown_socket_owner_at_start_is_one_clear_error(pyd_factory, site):
    a, b = free_port(), free_port()
    p = pyd_factory(unknown_owner(site, a, b))
    proc = p.start(check=False)
    assert proc.returncode == 1 and "pyd-no-such-user" in proc.stderr, proc.stderr
    assert "socket-owner" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert refused(a) and refused(b)

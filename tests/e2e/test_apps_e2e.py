"""App: sections and pyd.AppInstance, end to end: where each hook runs, as whom, and typed
settings; plus worker-count scaling by signal."""

from __future__ import annotations

import json
import os
import pwd
import signal
import time
from pathlib import Path

import pytest
from harness import free_port, http_get, world_readable_dir

pytestmark = pytest.mark.e2e

SHOP = '''
import json, os, time
import pyd
from pyd.config.values import Duration, Integer, String

LOG = os.path.join(os.path.dirname(__file__), "events.log")


def record(event, **kw):
    with open(LOG, "a") as f:
        f.write(json.dumps(dict(event=event, pid=os.getpid(), uid=os.geteuid(), **kw)) + "\\n")


class Shop(pyd.AppInstance):
    directives = {"greeting": (String(), "hello"), "items": (Integer(min=1), 3),
                  "pause": (Duration(), 0.0)}

    def init(self):
        self.asked = 0
        record("init", greeting=self.settings.greeting, items=self.settings.items,
               pause=self.settings.pause)

    def on_ready(self):
        record("ready")

    def on_shutdown(self, graceful):
        self.asked += 1
        record("shutdown", graceful=graceful, asked=self.asked)
        return self.asked >= 3

    def __call__(self, environ, start_response):
        body = ("%s x%d" % (self.settings.greeting, self.settings.items)).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
'''


def events(site: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (site / "events.log").read_text().splitlines()]
    except FileNotFoundError:
        return []


def test_privileged_app_inits_as_root_and_serves_from_workers(pyd_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    site = world_readable_dir()
    (site / "shop.py").write_text(SHOP)
    (site / "events.log").write_text("")
    for f in site.iterdir():
        f.chmod(0o666 if f.name == "events.log" else 0o644)
    nobody = pwd.getpwnam("nobody").pw_uid
    port = free_port()
    p = pyd_factory(f"""user nobody;
workers 2;
cwd {site};
graceful-timeout 10s;
App:shop {{ class shop:Shop; privileged; greeting "good day"; items 7; pause 1500ms; }}
Pool:HTTPServer {{ listen 127.0.0.1:{port}; app shop; }}
""", directory=site / "p")
    p.start()
    assert http_get(port)[2] == b"good day x7"
    ev = events(site)
    inits = [e for e in ev if e["event"] == "init"]
    assert len(inits) == 1 and inits[0]["uid"] == 0 and inits[0]["pid"] == p.master_pid
    assert (inits[0]["greeting"], inits[0]["items"], inits[0]["pause"]) == ("good day", 7, 1.5)
    ready = [e for e in ev if e["event"] == "ready"]
    assert sorted(e["pid"] for e in ready) == p.workers()
    assert all(e["uid"] == nobody for e in ready)
    p.stop("graceful-stop")
    shutdowns = [e for e in events(site) if e["event"] == "shutdown"]
    for pid in {e["pid"] for e in ready}:
        asked = [e["asked"] for e in shutdowns if e["pid"] == pid]
        assert asked == [1, 2, 3], f"on_shutdown must be asked until it returns True: {asked}"
        assert all(e["graceful"] for e in shutdowns if e["pid"] == pid)


def test_unknown_app_setting_stops_start_with_its_position(pyd_factory, tmp_path):
    (tmp_path / "shop.py").write_text(SHOP)
    port = free_port()
    p = pyd_factory(f"""user root;
workers 1;
cwd {tmp_path};
App:shop {{ class shop:Shop; greting hi; }}
Pool:HTTPServer {{ listen 127.0.0.1:{port}; app shop; }}
""")
    proc = p.start(check=False)
    assert proc.returncode == 1
    lines = p.conf.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "greting" in text)
    col = lines[line - 1].index("greting") + 1
    assert f'{p.conf}:{line}:{col}: error: unknown directive "greting" for Shop (did you mean ' \
           '"greeting"?)' in proc.stderr


def test_ttin_and_ttou_change_the_worker_count(pyd_factory, tmp_path):
    (tmp_path / "hello.py").write_text(
        "def app(e, s):\n    s('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n")
    port = free_port()
    p = pyd_factory(f"""user root;
workers 2;
min-workers 1;
max-workers 3;
cwd {tmp_path};
Pool:HTTPServer {{ listen 127.0.0.1:{port}; app hello:app; }}
""")
    p.start()

    def wait_count(n: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(p.workers()) != n:
            time.sleep(0.05)
        assert len(p.workers()) == n

    os.kill(p.master_pid, signal.SIGTTIN)
    wait_count(3)
    os.kill(p.master_pid, signal.SIGTTIN)  # max-workers 3: no fourth
    time.sleep(0.5)
    wait_count(3)
    for _ in range(3):
        os.kill(p.master_pid, signal.SIGTTOU)
        time.sleep(0.3)
    wait_count(1)  # min-workers 1
    assert http_get(port)[0] == 200
    assert "scale-down" in p.fullstatus()

"""Logging end to end with a real pyd: rotation under four writing workers, reopenlog after an
external rename, `pyd log`, degraded targets, routing changes by `pyd update`, verbose-tty."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import PYTHON, ROOT, free_port, http_get, run_pyd, world_readable_dir

pytestmark = pytest.mark.e2e

APP = '''
import logging
log = logging.getLogger("app.web")

def app(environ, start_response):
    path, q = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/warn":
        log.warning("warned %s", q)
    elif path == "/fail":
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed %s", q)
    else:
        log.info("hit %s", q)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''

BURST = '''
import logging, os
import gevent
from pyd import AppInstance

PAD = "p" * 37

class Burst(AppInstance):
    """Each worker writes 10,000 numbered lines, a few at a time, then says it is done."""

    def on_ready(self):
        gevent.spawn(self.write)

    def write(self):
        gevent.sleep(0.3)
        pid = os.getpid()
        for i in range(10000):
            self.log.info("burst %d %05d %s", pid, i, PAD)
            if i % 40 == 39:
                gevent.sleep(0.002)
        self.log.info("burst %d done", pid)
'''

HEADER = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


def site(tmp_path: Path, user: str = "root") -> Path:
    d = world_readable_dir() if user == "nobody" else tmp_path
    (d / "web.py").write_text(APP)
    (d / "burst.py").write_text(BURST)
    for f in ("web.py", "burst.py"):
        (d / f).chmod(0o644)
    return d


def web(port: int, d: Path, extra: str = "", user: str = "root", workers: int = 1) -> str:
    return (f"user {user};\nworkers {workers};\ncwd {d};\n{extra}\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app web:app; }}\n")


def every_line(directory: Path, name: str) -> list[str]:
    """Lines of a log and of its rotated copies, compressed or not."""
    lines = []
    for p in sorted(directory.iterdir()):
        if not p.name.startswith(name) or p.name.endswith(".tmp"):
            continue
        try:
            data = p.read_bytes()
        except FileNotFoundError:  # compressed (and removed) since the listing: the next poll reads the .gz
            continue
        data = gzip.decompress(data) if p.name.endswith(".gz") else data
        lines += data.decode().splitlines()
    return lines


# -- rotation under load -------------------------------------------------------------------------

def test_four_workers_rotating_lose_duplicate_and_cut_nothing(pyd_factory, tmp_path):
    user = "nobody" if os.geteuid() == 0 else "root"
    d = site(tmp_path, user)
    logs = tmp_path / "logs"
    p = pyd_factory(f"user {user};\nworkers 4;\ncwd {d};\nApp:burst {{ class burst:Burst; }}\n"
                    f"Log:burst {{ channels app.burst; file {logs}/burst.log; rotate-size 256K; "
                    "rotate-keep 0; compress gzip; propagate off; }\n", directory=tmp_path / "p")
    p.start()
    workers = set(p.workers())
    assert len(workers) == 4
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(1 for line in every_line(logs, "burst.log") if line.endswith(" done")) == 4:
            break
        time.sleep(0.3)
    p.stop()
    lines = every_line(logs, "burst.log")
    rotated = [x for x in logs.iterdir() if x.name != "burst.log"]
    assert len(rotated) >= 5, sorted(x.name for x in rotated)
    assert any(x.name.endswith(".gz") for x in rotated)
    whole = re.compile(HEADER + r"INFO    \[(\d+)\] app\.burst: burst (\d+) (\d{5}) p{37}")
    seen: Counter = Counter()
    for line in lines:
        if line.endswith(" done"):
            continue
        m = whole.fullmatch(line)
        assert m, f"a line cut or mangled: {line!r}"
        assert m.group(1) == m.group(2)
        seen[int(m.group(1)), int(m.group(3))] += 1
    assert {pid for pid, _ in seen} == workers
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1][:5]
    assert len(seen) == 40000, f"{40000 - len(seen)} lines lost"
    assert "app.burst" not in p.log()  # propagate off: not in the main log


# -- reopenlog, pyd log --------------------------------------------------------------------------

def test_reopenlog_after_an_external_rename(pyd_factory, tmp_path):
    port = free_port()
    p = pyd_factory(web(port, site(tmp_path), workers=2))
    p.start()
    for i in range(150):
        if i == 100:
            os.rename(p.logfile, str(p.logfile) + ".1")  # what logrotate does first
        assert http_get(port, f"/hit?{i}")[0] == 200
    assert p.cli("reopenlog", check=True).stdout.strip() == "pyd: log files reopened"
    for i in range(150, 200):
        assert http_get(port, f"/hit?{i}")[0] == 200
    p.stop()
    old = Path(str(p.logfile) + ".1").read_text()
    new = p.logfile.read_text()
    hits = lambda text: [int(x) for x in re.findall(r"app\.web: hit (\d+)", text)]  # noqa: E731
    assert sorted(hits(old) + hits(new)) == list(range(200))  # each exactly once
    assert min(hits(new)) <= 150 and all(h < 150 for h in hits(old))
    assert "pyd master" in new and "exits" in new  # the master's last words reach the new file
    # and so do the workers': what they log while exiting is sent before they go
    assert len(re.findall(r"pyd\.worker: worker \d \(pid \d+\) stopping", new)) == 2


def test_pyd_log_shows_filters_and_follows_across_rotation(pyd_factory, tmp_path):
    port = free_port()
    p = pyd_factory(web(port, site(tmp_path)))
    p.start()
    for path in ("/warn?1", "/hit?2", "/fail?3", "/hit?4"):
        assert http_get(port, path)[0] == 200
        # Access lines are written in batches, at the worker's next log flush: wait for each,
        # so the app's line and the access line of one request end up side by side.
        p.wait_for_log(re.escape(f"GET {path} "))

    last = p.cli("log", "-n", "2", check=True).stdout.splitlines()
    assert len(last) == 2 and last[0].endswith("app.web: hit 4") and "GET /hit?4 " in last[1]
    errors = p.cli("log", "-n", "5", "--level", "warning", check=True).stdout
    assert re.findall(r"(WARNING|ERROR)\s+\[\d+\] app\.web: (\w+ \d)", errors) == [
        ("WARNING", "warned 1"), ("ERROR", "failed 3")]
    assert "ZeroDivisionError" in errors  # the traceback comes with its record
    assert "pyd.master" not in errors and "hit" not in errors
    master = p.cli("log", "-n", "50", "--channel", "pyd.*", check=True).stdout
    assert "pyd.master" in master and "app.web" not in master

    follow = subprocess.Popen([PYTHON, "-m", "pyd", "-c", str(p.conf), "log", "-n", "1", "-f",
                               "--channel", "app.*"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert _read_until(follow, b"app.web: hit 4\n")  # the last one, then it follows
        assert http_get(port, "/hit?10")[0] == 200
        assert _read_until(follow, b"app.web: hit 10")
        os.rename(p.logfile, str(p.logfile) + ".1")
        assert http_get(port, "/hit?11")[0] == 200  # into the renamed file
        p.cli("reopenlog", check=True)
        assert http_get(port, "/hit?12")[0] == 200  # into the new one
        out = _read_until(follow, b"app.web: hit 12")
        assert b"hit 11" in out
        assert b"pyd.master" not in out and b"pyd.http.access" not in out
    finally:
        follow.kill()
        follow.wait(5)


def _read_until(proc: subprocess.Popen, needle: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    assert needle in out, out[-2000:]
    return out


def test_pyd_log_without_a_log_file(tmp_path):
    conf = tmp_path / "pyd.conf"
    conf.write_text(f"log-file {tmp_path}/none/pyd.log;\n")
    proc = run_pyd("-c", str(conf), "log")
    assert proc.returncode == 1
    assert f"the log file {tmp_path}/none/pyd.log does not exist" in proc.stderr
    bad = run_pyd("-c", str(conf), "log", "--level", "loud")
    assert bad.returncode == 2 and "unknown level 'loud'" in bad.stderr


# -- degraded targets ----------------------------------------------------------------------------

def test_a_full_disk_and_a_deleted_log_directory(pyd_factory, tmp_path):
    port = free_port()
    p = pyd_factory(web(port, site(tmp_path), "Log:full { channels app.*; file /dev/full; }"))
    p.start()
    for i in range(20):
        assert http_get(port, f"/hit?{i}")[0] == 200
    p.wait_for_log(r"pyd\.log: logging degraded: [^\n]*/dev/full: \d+ lost \(No space left "
                   r"on device\)")
    shutil.rmtree(p.logfile.parent)
    assert http_get(port, "/hit?after")[0] == 200
    p.wait_for_log(r"app\.web: hit after")  # the directory and the file came back
    assert http_get(port, "/hit?more")[0] == 200


# -- routes change with the config ---------------------------------------------------------------

def test_update_routes_the_access_log_to_its_own_file(pyd_factory, tmp_path):
    port = free_port()
    d = site(tmp_path)
    p = pyd_factory(web(port, d, workers=2))
    p.start()
    assert http_get(port, "/hit?before")[0] == 200
    p.wait_for_log(r'pyd\.http\.access: 127\.0\.0\.1 - - \[[^]]+\] "GET /hit\?before')
    access = tmp_path / "access.log"
    text = p.conf.read_text().replace(
        "Pool:HTTPServer {", f"Log:access {{ channels pyd.http.access; file {access}; "
                             "format message; propagate off; }\nPool:HTTPServer {")
    p.conf.write_text(text)
    p.cli("update", check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert http_get(port, "/hit?after")[0] == 200
        if access.exists() and "/hit?after" in access.read_text():
            break
        time.sleep(0.2)
    line = access.read_text().splitlines()[-1]
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /hit\?after HTTP/1\.1" 200 2 "-" '
                        r'"[^"]*" \d+\.\d{3}', line), line
    while len(p.workers()) != 2 and time.monotonic() < deadline:  # the old ones are gone
        time.sleep(0.1)
    for i in range(10):
        assert http_get(port, f"/hit?final{i}")[0] == 200
    p.wait_for_log(r"app\.web: hit final9")
    time.sleep(0.2)
    assert access.read_text().count("GET /hit?final") == 10
    assert "GET /hit?final" not in p.log()  # propagate off


def test_access_log_target_gives_one_pool_its_own_file(pyd_factory, tmp_path):
    main_port, admin_port = free_port(), free_port()
    d = site(tmp_path)
    access = tmp_path / "admin-access.log"
    p = pyd_factory(f"user root;\nworkers 1;\ncwd {d};\n"
                    f"Log:access {{ file {access}; }}\n"
                    f"Pool:HTTPServer {{ listen 127.0.0.1:{main_port}; app web:app; }}\n"
                    f"Pool:HTTPServer:admin {{ listen 127.0.0.1:{admin_port}; app web:app; "
                    "access-log json; access-log-target Log:access; }\n")
    p.start()
    assert http_get(admin_port, "/hit?admin")[0] == 200
    assert http_get(main_port, "/hit?main")[0] == 200
    p.wait_for_log(r'pyd\.http\.access: 127\.0\.0\.1 - - \[[^]]+\] "GET /hit\?main')
    deadline = time.monotonic() + 10
    while not (access.exists() and access.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = access.read_text().splitlines()
    assert len(lines) == 1, lines  # the bare line (format message), nothing else of the log
    entry = json.loads(lines[0])
    assert entry["uri"] == "/hit?admin" and entry["pool"] == "HTTPServer:admin"
    assert "/hit?admin" not in p.log() and "app.web: hit admin" in p.log()


# -- the terminal --------------------------------------------------------------------------------

def test_verbose_tty_shows_the_log_in_colour(tmp_path):
    port = free_port()
    d = site(tmp_path)
    conf = tmp_path / "pyd.conf"
    conf.write_text(f"pidfile {tmp_path}/pyd.pid;\nlog-file {tmp_path}/pyd.log;\n" + web(port, d))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([PYTHON, "-m", "pyd", "-c", str(conf), "start",
                             "--verbose-tty=1"], stdin=subprocess.DEVNULL, stdout=terminal,
                            stderr=terminal, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                      TERM="xterm"))
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"serving with 1 workers" not in seen and time.monotonic() < deadline:
            seen += _pty_read(controller)
        assert http_get(port, "/warn?tty")[0] == 200
        deadline = time.monotonic() + 10
        while b"warned tty" not in seen and time.monotonic() < deadline:
            seen += _pty_read(controller)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(controller)
    assert b"\x1b[32mINFO   \x1b[0m" in seen and b"pyd.master: " in seen
    assert re.search(rb"\x1b\[33mWARNING\x1b\[0m \[\d+\] app\.web: warned tty", seen), seen[-500:]
    assert "warned tty" in (tmp_path / "pyd.log").read_text()  # the file has it too
    assert "\x1b" not in (tmp_path / "pyd.log").read_text()


def _pty_read(fd: int) -> bytes:
    ready, _, _ = select.select([fd], [], [], 0.2)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""

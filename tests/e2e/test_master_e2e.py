"""The master and its workers, end to end: real `pyd` processes, real HTTP on loopback.

Covers the acceptance list of the process-model issue: privileges, recycling under load with
no failed request, reload/update/upgrade under load, kill -9 of a worker and of the master,
memory recycling, a broken update, pidfile and CLI edge cases, request-timeout.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import time
from pathlib import Path

import pytest
from harness import Load, free_port, http_get, run_pyd, wait_port, world_readable_dir

pytestmark = pytest.mark.e2e

HELLO = '''
import os

def app(environ, start_response):
    body = b"hello from %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def config(port: int, directory: Path, extra: str = "", user: str = "root",
           app: str = "hello:app", pool_extra: str = "") -> str:
    return (f"user {user};\nworkers 2;\ncwd {directory};\ngraceful-timeout 10s;\n{extra}\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app {app}; access-log off; "
            f"{pool_extra} }}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(HELLO)
    return tmp_path


def served_by(port: int) -> int:
    status, _, body = http_get(port)
    assert status == 200
    return int(body.split()[-1])


# -- 1. privileges -------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind port 81 and switch users")
def test_root_master_unprivileged_workers_on_port_81(pyd_factory):
    site = world_readable_dir()
    (site / "hello.py").write_text(HELLO)
    (site / "hello.py").chmod(0o644)
    nobody = pwd.getpwnam("nobody")
    p = pyd_factory(f"user nobody;\nworkers 2;\ncwd {site};\n"
                    "Pool:HTTPServer { listen 127.0.0.1:81; app hello:app; }\n", directory=site)
    p.start()
    assert p.ids(p.master_pid)[0] == 0
    workers = p.workers()
    assert len(workers) == 2
    for pid in workers:
        assert p.ids(pid) == (nobody.pw_uid, nobody.pw_gid)
    assert p.title(p.master_pid).startswith(f"pyd: master {p.conf}")
    assert p.title(workers[0]) == "pyd: worker 1 [HTTPServer]" or \
        p.title(workers[0]).startswith("pyd: worker")
    assert served_by(81) in workers


def test_root_without_user_refuses(pyd_factory, site):
    if os.geteuid() != 0:
        pytest.skip("only root can be refused this")
    port = free_port()
    p = pyd_factory(f"workers 1;\ncwd {site};\nPool:HTTPServer {{ listen 127.0.0.1:{port}; "
                    "app hello:app; }\n")
    proc = p.start(check=False)
    assert proc.returncode == 1
    assert "user root" in proc.stderr


# -- 2. recycling under load ---------------------------------------------------------------------

def test_max_requests_recycles_without_failures(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site, "max-requests 100;\nmax-requests-jitter 20;"))
    p.start()
    keep = Load(port, clients=16, keepalive=True).start(duration=60)
    close = Load(port, clients=8, keepalive=False).start(duration=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recycles = p.log().count("retiring: served")
        if recycles >= 12 and keep.total + close.total >= 3000:
            break
        time.sleep(0.2)
    keep.stop()
    close.stop()
    assert keep.failed == 0 and keep.resets == 0, keep.report()
    assert close.failed == 0 and close.resets == 0 and close.retries == 0, close.report()
    assert keep.total + close.total >= 3000
    assert recycles >= 10, p.log()[-2000:]
    assert close.total > 100 and keep.total > 1000
    status = p.fullstatus()
    assert "requests" in status.split("restarts by reason:")[1]


# -- 3. reload and update under load -------------------------------------------------------------

def test_reload_and_update_under_load(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    load = Load(port, clients=16, keepalive=True).start(duration=120)
    load_close = Load(port, clients=4, keepalive=False).start(duration=120)
    try:
        for i in range(5):
            before = set(p.workers())
            out = p.cli("reload", check=True).stdout
            assert "replaced" in out
            assert not before & set(p.workers()), "reload must replace every worker"
            text = p.conf.read_text().replace(f"workers {2 + (i % 2)};", f"workers {3 - (i % 2)};")
            p.conf.write_text(text)
            out = p.cli("update", check=True).stdout
            assert "replaced" in out
    finally:
        load.stop()
        load_close.stop()
    assert load.failed == 0 and load.resets == 0, load.report()
    assert load_close.failed == 0 and load_close.resets == 0, load_close.report()
    assert load.ok > 100


# -- 4. kill -9 of a worker ----------------------------------------------------------------------

def test_killed_worker_is_replaced_within_a_second(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    victim = p.workers()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        workers = p.workers()
        if len(workers) == 2 and victim not in workers:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"not replaced within 1s: {p.workers()}")
    for _ in range(10):
        assert served_by(port) != victim
    assert "killed 1" in p.fullstatus()


def test_killed_worker_only_its_connections_fail(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    conns = []
    owners = {}
    for _ in range(12):  # keep-alive connections spread over both workers
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
        owners[s] = int(data.rsplit(b" ", 1)[-1])
        conns.append(s)
    victim = p.workers()[0]
    assert victim in owners.values()
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.3)
    for s in conns:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(4096)
        except OSError:
            data = b""
        if owners[s] == victim:
            assert data == b""
        else:
            assert data.startswith(b"HTTP/1.1 200"), data
        s.close()


# -- 5. memory ------------------------------------------------------------------------------------

def test_memory_limit_recycles(pyd_factory, tmp_path):
    (tmp_path / "leak.py").write_text('''
LEAK = []

def app(environ, start_response):
    LEAK.append(b"x" * (8 << 20))
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
''')
    port = free_port()
    p = pyd_factory(config(port, tmp_path, "workers 1;\nmax-memory-usage 64M;", app="leak:app")
                    .replace("workers 2;\n", ""))
    p.start()
    first = p.workers()
    for _ in range(8):
        http_get(port)
    p.wait_for_log(r"retiring: RSS \d+M over max-memory-usage 64M", timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "memory 1" not in p.fullstatus():
        time.sleep(0.1)
    assert "memory 1" in p.fullstatus()
    assert p.workers() != first


# -- 6. a broken update --------------------------------------------------------------------------

def test_broken_update_keeps_serving(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    workers = p.workers()
    good = p.conf.read_text()
    p.conf.write_text(good.replace("workers 2;", "workers 2;\nmax-request 10;"))
    proc = p.cli("update")
    assert proc.returncode == 1
    assert 'unknown directive "max-request"' in proc.stderr
    assert f"{p.conf}:5:1" in proc.stderr
    m = p.wait_for_log(r"update: the configuration has errors[^\n]*\n([^\n]+)")
    assert f"{p.conf}:5:1: error" in m.group(1)
    assert p.workers() == workers
    assert served_by(port) in workers


# -- 7. pidfile and command line edge cases ------------------------------------------------------

def test_pidfile_and_cli_edge_cases(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    # stop / status when not running: one clear line, non-zero
    proc = p.cli("stop")
    assert proc.returncode == 1 and proc.stderr.strip() == "pyd: pyd is not running"
    proc = p.cli("status")
    assert proc.returncode == 3 and proc.stdout.strip() == "pyd: pyd is not running"
    # a stale pidfile (a dead pid, no lock) is recognised and replaced
    p.pidfile.parent.mkdir(parents=True, exist_ok=True)
    p.pidfile.write_text("999999\n")
    p.start()
    assert p.master_pid != 999999
    assert "replaced a stale pidfile" in p.log()
    # a second start: one line, non-zero, the first keeps running
    proc = p.cli("start")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"pyd: pyd is already running (pid {p.master_pid})"
    proc = p.cli("status")
    assert proc.returncode == 0 and f"pid {p.master_pid}" in proc.stdout
    p.stop()
    assert not p.pidfile.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user")
def test_start_as_user_who_cannot_write_the_pidfile(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o755)
    conf = world_readable_dir() / "pyd.conf"
    conf.write_text(f"pidfile {locked}/pyd.pid;\nlog-file {locked}/pyd.log;\n"
                    "Pool:echo { class examples.echo:EchoPool; listen 127.0.0.1:1; }\n")
    conf.chmod(0o644)
    import subprocess

    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           "/usr/bin/env", "true"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("setpriv is not available")
    # The CLI cannot run as nobody here (the Python install is under /root); test the check.
    from pyd.system.daemon import PidfileError, check_writable

    pid = os.fork()
    if pid == 0:
        os.setgid(65534)
        os.setuid(65534)
        try:
            check_writable(str(locked / "pyd.pid"))
        except PidfileError as e:
            os._exit(0 if "cannot write the pidfile" in str(e) and "permission denied" in str(e)
                     else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- 8. kill -9 of the master ---------------------------------------------------------------------

def test_workers_exit_when_the_master_dies(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    workers = p.workers()
    os.kill(p.master_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.alive(w) for w in workers):
        time.sleep(0.05)
    assert not any(p.alive(w) for w in workers)
    p.master_pid = None


# -- 9. upgrade under load ------------------------------------------------------------------------

def test_upgrade_under_load(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    old_master = p.master_pid
    load = Load(port, clients=16, keepalive=True).start(duration=60)
    load_close = Load(port, clients=4, keepalive=False).start(duration=60)
    try:
        time.sleep(0.5)
        out = p.cli("upgrade", check=True).stdout
        assert "upgraded" in out
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and p.alive(old_master):
            time.sleep(0.05)
        assert not p.alive(old_master)
        time.sleep(0.5)
    finally:
        load.stop()
        load_close.stop()
    new_master = int(p.pidfile.read_text())
    assert new_master != old_master
    p.master_pid = new_master
    p.started.append(new_master)
    assert load.failed == 0 and load.resets == 0, load.report()
    assert load_close.failed == 0 and load_close.resets == 0, load_close.report()
    assert served_by(port) in p.workers()


# -- more of the process model ---------------------------------------------------------------------

def test_app_import_error_stops_start_with_its_position(pyd_factory, tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module\n")
    port = free_port()
    p = pyd_factory(config(port, tmp_path, app="broken:app"))
    proc = p.start(check=False)
    assert proc.returncode == 1
    assert f"{p.conf}:" in proc.stderr and "error: cannot import broken:app" in proc.stderr
    assert "No module named 'no_such_module'" in proc.stderr
    assert not p.pidfile.exists() or not run_pyd("status", "-c", str(p.conf)).returncode == 0


def test_graceful_stop_finishes_requests_in_flight(pyd_factory, tmp_path):
    (tmp_path / "slow.py").write_text('''
import time

def app(environ, start_response):
    time.sleep(1.5)
    start_response("200 OK", [("Content-Length", "4")])
    return [b"done"]
''')
    port = free_port()
    p = pyd_factory(config(port, tmp_path, app="slow:app"))
    p.start()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    proc = p.cli("graceful-stop")
    assert proc.returncode == 0
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"done")
    assert b"Connection: close" in data
    s.close()


def test_request_timeout_logs_the_stack_and_replaces_the_worker(pyd_factory, tmp_path):
    (tmp_path / "stuck.py").write_text('''
def app(environ, start_response):
    while True:  # burns the CPU: the hub never runs again
        pass
''')
    port = free_port()
    p = pyd_factory(config(port, tmp_path, "workers 1;\nrequest-timeout 1s;", app="stuck:app")
                    .replace("workers 2;\n", ""))
    p.start()
    victim = p.workers()[0]
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /spin?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    p.wait_for_log(r"killed by request-timeout", timeout=10)
    log = p.log()
    assert "GET b'/spin?x=1'" in log or "/spin?x=1" in log
    assert "while True" in log or "stuck.py" in log
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (victim in p.workers() or not p.workers()):
        time.sleep(0.05)
    assert victim not in p.workers() and len(p.workers()) == 1
    assert "timeout 1" in p.fullstatus()
    s.close()


def test_echo_pool_and_fullstatus(pyd_factory, tmp_path):
    port = free_port()
    p = pyd_factory(f"user root;\nworkers 2;\ncwd {Path(__file__).resolve().parents[2]};\n"
                    f"Pool:echo {{ class examples.echo:EchoPool; listen 127.0.0.1:{port}; "
                    "prefix \"> \"; }\n")
    p.start()
    wait_port(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"hi\n")
        assert s.recv(100) == b"> hi\n"
    out = p.fullstatus()
    assert "worker" in out and "idle" in out and f"listeners: 127.0.0.1:{port}" in out
    status = p.cli("status", check=True).stdout
    assert f"pid {p.master_pid}" in status and "2 workers" in status


def test_boot_failure_backs_off(pyd_factory, tmp_path):
    flag = tmp_path / "fail"
    (tmp_path / "flaky.py").write_text(f'''
import os
if os.path.exists({str(flag)!r}):
    raise RuntimeError("flaky at import")

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
''')
    port = free_port()
    p = pyd_factory(config(port, tmp_path, app="flaky:app"))
    p.start()
    flag.write_text("1")
    proc = p.cli("reload")
    assert proc.returncode == 1 and "flaky at import" in proc.stderr
    assert "old workers keep serving" in proc.stderr
    assert http_get(port)[0] == 200
    time.sleep(3)
    tries = p.log().count("failed to start; next try in")
    assert 2 <= tries <= 6, f"{tries} boot attempts in 3s: no backoff?"
    flag.unlink()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and "next try" in p.log().splitlines()[-1]:
        time.sleep(0.2)
    assert http_get(port)[0] == 200


def test_the_config_parser_stays_out_of_the_master_and_its_workers(pyd_factory, tmp_path):
    """The master parses in a child (load_apart), also on update: lark never enters the
    master's memory, nor the workers' it forks (a few MB each)."""
    (tmp_path / "mods.py").write_text(
        "import sys\n"
        "def app(environ, start_response):\n"
        "    body = repr(sorted(m for m in sys.modules if m.split('.')[0] == 'lark')).encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    port = free_port()
    p = pyd_factory(config(port, tmp_path, app="mods:app"))
    p.start()
    assert http_get(port)[2] == b"[]"
    p.cli("update", check=True)
    assert http_get(port)[2] == b"[]"
    p.cli("update", check=True)
    p.conf.write_text(p.conf.read_text().replace("workers 2", "workerz 2"))
    broken = p.cli("update")
    assert broken.returncode == 1, broken.stderr
    assert f'{p.conf}:' in broken.stderr and 'unknown directive "workerz"' in broken.stderr
    assert http_get(port)[2] == b"[]"

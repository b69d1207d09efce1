"""The CLI as an operator meets it: finding the running master whatever its config now says,
`upgrade` returning only once the new master answers, `reload` beside an edited config, what
`start` says, and a workers' user who cannot read the interpreter or the app."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from harness import free_port, http_get, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

HELLO = '''
import os
def app(environ, start_response):
    body = b"hello from %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def config(port: int, directory: Path, extra: str = "") -> str:
    return (f"user root;\nworkers 2;\ncwd {directory};\ngraceful-timeout 5s;\n{extra}\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app hello:app; access-log off; }}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(HELLO)
    return tmp_path


@pytest.fixture
def running(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site), directory=site / "pyd")
    p.start()
    p.port = port
    return p


# -- a broken config still finds the running master ---------------------------------------------

def test_a_syntax_error_in_the_config_does_not_hide_the_running_master(running):
    p = running
    assert "/run/pyd/" not in str(p.pidfile)  # not the default pidfile
    good = p.conf.read_text()
    p.conf.write_text(good + "Pool:HTTPServer { listen 127.0.0.1:1; app \"unterminated;\n")
    status = p.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"pyd is running (pid {p.master_pid}" in status.stdout
    assert "has errors" in status.stderr
    update = p.cli("update")
    assert update.returncode == 1
    assert "not running" not in update.stdout + update.stderr
    assert "the configuration was not applied" in update.stderr, update.stderr
    assert http_get(p.port)[0] == 200  # still serving on the old config
    stop = p.cli("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"stopped (pid {p.master_pid})" in stop.stdout
    assert not p.alive(p.master_pid)


def test_found_paths_reads_only_the_lines_it_needs(tmp_path):
    from pyd.cli.commands import found_paths

    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "paths.conf").write_text("control-socket ../sock/pyd.sock;\n")
    conf = tmp_path / "pyd.conf"
    conf.write_text('user root;\n  pidfile "run/my pyd.pid";  # here\nPool:X { listen\n'
                    "include conf.d/*.conf;\n")
    assert found_paths(str(conf)) == {"pidfile": str(tmp_path / "run" / "my pyd.pid"),
                                      "control-socket": str(tmp_path / "sock" / "pyd.sock")}
    yaml = tmp_path / "pyd.yaml"
    yaml.write_text("pidfile: /srv/run/pyd.pid\nworkers: [\n")
    assert found_paths(str(yaml)) == {"pidfile": "/srv/run/pyd.pid"}


# -- upgrade returns once the new master answers -------------------------------------------------

def test_upgrade_then_status_finds_the_new_master_three_times_out_of_three(running):
    p = running
    for _ in range(3):
        before = p.master_pid
        up = p.cli("upgrade")
        assert up.returncode == 0, up.stdout + up.stderr
        # What `pyd upgrade && pyd status` runs, with nothing in between.
        status = p.cli("status")
        assert status.returncode == 0, status.stdout + status.stderr
        m = re.search(r"pyd is running \(pid (\d+)", status.stdout)
        assert m, status.stdout
        new = int(m.group(1))
        assert new != before
        assert int(p.pidfile.read_text().split()[0]) == new
        p.master_pid = new
        p.started.append(new)
        assert http_get(p.port)[0] == 200


# -- a workers' user who cannot read the virtualenv ----------------------------------------------

@pytest.fixture
def hidden_venv():
    """A virtualenv under a 0700 directory of root's, with a package the app needs in it."""
    top = Path(tempfile.mkdtemp(prefix="pyd-hidden-"))  # mkdtemp: mode 0700, owned by root
    venv = top / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "fakeflask").mkdir()
    (site / "fakeflask" / "__init__.py").write_text("def hello():\n    return b'hi'\n")
    (site / "pyd-repo.pth").write_text(str(REPO) + "\n")
    app = Path(tempfile.mkdtemp(prefix="pyd-app-"))
    app.chmod(0o755)
    (app / "shop.py").write_text(
        "import fakeflask\n\ndef app(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [fakeflask.hello()]\n")
    (app / "shop.py").chmod(0o644)
    yield top, venv, app
    shutil.rmtree(top, ignore_errors=True)
    shutil.rmtree(app, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run workers as nobody")
def test_a_venv_nobody_cannot_read_is_named_with_the_directory_that_stops_it(hidden_venv):
    top, venv, app = hidden_venv
    assert (top.stat().st_mode & 0o777) == 0o700
    pwd.getpwnam("nobody")
    port = free_port()
    conf = app / "pyd.conf"
    conf.write_text(f"user nobody;\nworkers 1;\ncwd {app};\npidfile {app}/run/pyd.pid;\n"
                    f"log-file {app}/log/pyd.log;\n"
                    f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app shop:app; }}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYD_", "PYTHON"))}
    python = str(venv / "bin" / "python")
    why = f"user nobody cannot read {venv}"
    stop = f"{top} is drwx------ root:root, no search (x) permission for it"

    test = subprocess.run([python, "-m", "pyd", "configtest", "-q", "-c", str(conf)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert test.returncode == 1
    assert "No module named 'fakeflask'" in test.stderr, test.stderr
    assert why in test.stderr and stop in test.stderr, test.stderr

    start = subprocess.run([python, "-m", "pyd", "start", "-c", str(conf)],
                           capture_output=True, text=True, env=env, timeout=90)
    try:
        assert start.returncode == 1, start.stdout + start.stderr
        assert "fakeflask" in start.stderr, start.stderr
        assert why in start.stderr and stop in start.stderr, start.stderr
    finally:
        if start.returncode == 0:
            subprocess.run([python, "-m", "pyd", "stop", "-c", str(conf)], env=env, timeout=60)


def test_denied_names_the_first_directory_that_stops_a_user():
    from pyd.system.readable import denied

    tmp_path = Path(tempfile.mkdtemp(prefix="pyd-readable-", dir="/tmp"))
    try:
        _denied_cases(denied, tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _denied_cases(denied, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "lib").mkdir(parents=True)
    locked.chmod(0o711)  # search, no read: the path inside is reachable
    (locked / "lib").chmod(0o755)
    tmp_path.chmod(0o755)
    other = 65534 if os.geteuid() != 65534 else 65533
    assert denied(str(locked / "lib"), other, {other}) is None
    locked.chmod(0o700)
    assert denied(str(locked / "lib"), other, {other}).startswith(f"{locked} is drwx------")
    assert denied(str(locked / "lib"), os.geteuid(), set()) is None  # the owner
    (locked / "lib").chmod(0o700)
    locked.chmod(0o755)
    assert "no read permission" in denied(str(locked / "lib"), other, {other})


# -- reload beside an edited config ---------------------------------------------------------------

def test_reload_says_when_the_file_on_disk_is_not_the_running_config(running):
    p = running
    same = p.cli("reload")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "differs" not in same.stderr and "pyd update" not in same.stderr, same.stderr
    p.conf.write_text(p.conf.read_text().replace("workers 2;", "workers 3;"))
    edited = p.cli("reload")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    assert f"{p.conf} differs from the configuration pyd runs" in edited.stderr, edited.stderr
    assert "`pyd update` applies the file" in edited.stderr
    assert "2 workers replaced" in edited.stdout  # still the loaded config's two
    p.conf.write_text(p.conf.read_text() + "workers;\n")
    broken = p.cli("reload")
    assert broken.returncode == 0, broken.stdout + broken.stderr
    assert "has errors" in broken.stderr and "pyd update" in broken.stderr, broken.stderr


# -- what start says -------------------------------------------------------------------------------

def test_start_says_where_it_listens_and_where_the_log_goes(pyd_factory, site):
    port = free_port()
    p = pyd_factory(config(port, site), directory=site / "pyd")
    out = p.start().stdout
    assert f"pyd: listening on 127.0.0.1:{port} (Pool:HTTPServer)" in out, out
    assert f"pyd: log: {p.logfile} (`pyd log -f` follows it)" in out, out
    assert out.index("started (pid") < out.index("listening on")


def test_start_in_the_foreground_says_it_first(pyd_factory, site):
    import select
    import signal

    port = free_port()
    p = pyd_factory(config(port, site), directory=site / "pyd")
    proc = subprocess.Popen([sys.executable, "-m", "pyd", "start", "--foreground", "-c",
                             str(p.conf)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"log: " not in seen and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
        wait_until(lambda: http_get(port)[0] == 200 if _port_open(port) else False, 30,
                   "the foreground pyd serving")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    text = seen.decode()
    assert f"pyd: starting in the foreground (config {p.conf})" in text, text
    assert f"pyd: listening on 127.0.0.1:{port} (Pool:HTTPServer)" in text, text
    assert f"pyd: log: {p.logfile}" in text, text


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0

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

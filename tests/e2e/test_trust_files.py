"""Nothing the workers' user can write reaches root: tried as that user would.

The workers run as `nobody` for real, from an interpreter nobody can read (a virtualenv of the
system's Python, made once and kept under /tmp). The attacker owns the app directory and drops
modules there named like what root imports (`lark`, `croniter`, `argparse`, ...): each writes a
marker with the uid that imported it, then hands over to the real module. After `pyd start`,
`pyd update`, `pyd upgrade` and a cron run, no marker may say uid 0. Links planted in a
directory nobody owns must not lead root to a file of its own; the workers and supervised
programs do not inherit what only the master holds (NOTIFY_SOCKET, the upgrade's descriptor).
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import json
import os
import pwd
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import ROOT, Pyd, free_port, http_get, wait_until, world_readable_dir

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the workers run as nobody"),
    pytest.mark.timeout(240),
]

SYSTEM_PYTHON = "/usr/bin/python3"

# Names root imports lazily (the CLI, the config parser, the service, jobrun, a re-executed
# master), and one a worker imports on purpose: `colorsys`, proof that the trap works.
PLANTED = ("argparse", "lark", "croniter", "shutil", "zoneinfo", "json", "textwrap", "tempfile",
           "difflib", "glob", "fnmatch", "mimetypes", "pickle", "subprocess", "gettext",
           "daemon", "yaml", "setproctitle", "inotify_simple", "graypy", "httptools", "uuid",
           "hashlib", "base64", "string", "locale", "selectors", "calendar", "colorsys")

TROJAN = '''
import importlib, os, sys
_here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
try:
    with open(os.path.join({markers!r}, "%s.%d.%d" % (__name__, os.getpid(), os.geteuid())),
              "w") as _f:
        _f.write(open("/proc/self/cmdline").read().replace("\\0", " "))
except OSError:
    pass
del sys.modules[__name__]
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _here]
try:
    importlib.import_module(__name__)
finally:
    sys.path[:] = _saved
'''

HELLO = '''
import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/env":
        body = __import__("json").dumps(dict(os.environ)).encode()
    else:
        import colorsys  # planted: imported here as nobody
        body = b"hello from %d uid %d" % (os.getpid(), os.geteuid())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

JOBS = '''
import os


def job():
    import colorsys  # planted: imported here as nobody
    print("job ran as uid", os.geteuid())
'''


# -- an interpreter nobody can run -------------------------------------------------------------

def _requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]


@pytest.fixture(scope="session")
def venv_python() -> str:
    """A virtualenv of the system's Python with pyd's dependencies, readable by everyone;
    made once (under a lock: xdist workers share it) and kept in /tmp between runs."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed: the default interpreter is unreadable by nobody")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import venv, ensurepip"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no venv/ensurepip (apt-get install python3-venv)")
    reqs = _requirements()
    version = subprocess.run([SYSTEM_PYTHON, "-V"], capture_output=True, text=True).stdout
    key = hashlib.sha256((version + "\n".join(reqs)).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"pyd-test-venv-{key}"
    python = target / "bin" / "python"
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "complete").exists():
            return str(python)
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(target)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *reqs], check=True,
                       timeout=600)
        subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
        (target / "complete").write_text("")
    return str(python)


# -- the attacker's app directory --------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody")


class Trap:
    """An app directory owned by nobody, full of trojans, and the markers they leave."""

    def __init__(self, base: Path):
        self.app = base / "app"
        self.markers = base / "markers"
        self.app.mkdir()
        self.markers.mkdir()
        self.markers.chmod(0o1777)
        (self.app / "hello.py").write_text(HELLO)
        (self.app / "jobs.py").write_text(JOBS)
        for name in PLANTED:
            (self.app / f"{name}.py").write_text(TROJAN.format(markers=str(self.markers)))
        for path in [self.app, *self.app.iterdir()]:
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)  # the workers' user wrote all this

    def found(self) -> list[tuple[str, int, str]]:
        """(module, euid, command line) of every import of a planted module."""
        out = []
        for marker in self.markers.iterdir():
            name, _, euid = marker.name.split(".")
            out.append((name, int(euid), marker.read_text().strip()))
        return out

    def as_root(self) -> list[str]:
        return [f"{name} imported as root by: {cmd}" for name, euid, cmd in self.found()
                if euid == 0]

    def clear(self) -> None:
        for marker in self.markers.iterdir():
            marker.unlink()


class VenvPyd(Pyd):
    """pyd run by the virtualenv's interpreter, from `cwd`, as `python [flags] -m pyd`."""

    python = ""
    cwd: Path | None = None
    flags: tuple[str, ...] = ()
    env: dict = {}

    def cli(self, *args: str, timeout: float = 90, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env, **(env or {}))
        proc = subprocess.run([self.python, *self.flags, "-m", "pyd", *args, "-c", str(self.conf)],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=self.cwd, preexec_fn=getattr(self, "preexec", None))
        if check and proc.returncode != 0:
            raise AssertionError(f"pyd {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def base():
    d = world_readable_dir("pyd-trust-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def trap(base: Path) -> Trap:
    return Trap(base)


@pytest.fixture
def make(pyd_factory, venv_python, base):
    """make(config_text, cwd=..., flags=(...)) -> a started-able VenvPyd in base/pyd."""
    made = []

    def build(config: str, cwd: Path | None = None, flags: tuple[str, ...] = (),
              env: dict | None = None, directory: Path | None = None) -> VenvPyd:
        p = pyd_factory(config, directory=directory or base / f"pyd{len(made)}")
        p.__class__ = VenvPyd
        p.python, p.cwd, p.flags, p.env = venv_python, cwd, flags, dict(env or {})
        made.append(p)
        return p

    yield build
    for p in made:  # before `base` goes: a master stopping still writes its log there
        p.cleanup()


def site_config(trap: Trap, port: int, extra: str = "") -> str:
    return (f"user nobody;\nworkers 2;\ncwd {trap.app};\ngraceful-timeout 5s;\n{extra}\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app hello:app; access-log off; }}\n")


def serve_as_nobody(trap: Trap, port: int) -> None:
    """The workers serve as nobody and import from the app directory (the trap works)."""
    status, _, body = http_get(port)
    assert status == 200 and body.endswith(b"uid %d" % NOBODY.pw_uid), body
    assert any(name == "colorsys" and euid == NOBODY.pw_uid for name, euid, _ in trap.found())


# -- 1. root imports nothing from the app directory ----------------------------------------------

def test_pyd_start_from_the_app_directory_imports_nothing_there_as_root(make, trap):
    """`python -m pyd start` typed in the app directory: that directory is first on sys.path."""
    port = free_port()
    p = make(site_config(trap, port, "Cron:tick { every 1h; run jobs:job; }"), cwd=trap.app)
    p.start()
    serve_as_nobody(trap, port)
    p.service()
    assert trap.as_root() == []
    assert p.cli("configtest", "-q").returncode == 0
    assert trap.as_root() == [], "configtest's import check"


def test_pyd_update_imports_nothing_from_the_app_directory_as_root(make, trap):
    """The master parses the new config in a child (lark, yaml): from root's own paths."""
    port = free_port()
    p = make(site_config(trap, port), cwd=trap.app, flags=("-P",))
    p.start()
    serve_as_nobody(trap, port)
    trap.clear()
    p.conf.write_text(p.conf.read_text().replace("workers 2;", "workers 3;"))
    update = p.cli("update")
    assert update.returncode == 0, update
    wait_until(lambda: len(p.workers()) == 3, 20, "three workers after the update")
    assert trap.as_root() == []


def test_pyd_upgrade_imports_nothing_from_the_app_directory_as_root(make, trap):
    """The re-executed master is a new root interpreter: nothing of its cwd on sys.path."""
    port = free_port()
    p = make(site_config(trap, port), cwd=trap.app, flags=("-P",))
    p.start()
    trap.clear()
    old = p.master_pid
    upgrade = p.cli("upgrade")
    assert upgrade.returncode == 0, upgrade
    new = int(re.search(r"new master is pid (\d+)", upgrade.stdout).group(1))
    p.started.append(new)
    p.master_pid = new
    wait_until(lambda: not p.alive(old), 30, "the old master gone")
    serve_as_nobody(trap, port)
    assert trap.as_root() == []


def test_a_cron_run_imports_nothing_from_the_app_directory_as_root(make, trap):
    """The service process and jobrun start as root; only the job, as nobody, imports there."""
    port = free_port()
    p = make(site_config(trap, port, "Cron:tick { schedule \"0 0 1 1 *\"; run jobs:job; }"),
             cwd=trap.app, flags=("-P",))
    p.start()
    p.service()
    run = p.cli("cron", "run", "tick")
    assert run.returncode == 0, run
    p.wait_for_log(rf"cron\.tick: job ran as uid {NOBODY.pw_uid}")
    jobs = [cmd for name, euid, cmd in trap.found() if name == "colorsys" and "jobrun" in cmd]
    assert jobs, trap.found()  # the job itself imported from the app directory, as nobody
    assert trap.as_root() == []


def test_a_privileged_app_in_a_directory_the_workers_user_owns_is_refused(make, trap):
    (trap.app / "shop.py").write_text("import pyd\n\nclass Shop(pyd.AppInstance):\n    pass\n")
    os.chown(trap.app / "shop.py", NOBODY.pw_uid, NOBODY.pw_gid)
    port = free_port()
    p = make(site_config(trap, port, "App:shop { class shop:Shop; privileged; }"),
             flags=("-P",))
    proc = p.start(check=False)
    assert proc.returncode == 1
    assert f"privileged code is imported as root from {trap.app}" in proc.stderr, proc.stderr
    assert trap.as_root() == []


# -- 2. root follows no link the workers' user planted ------------------------------------------

@pytest.fixture
def secret(base: Path) -> Path:
    """A root-owned 0600 file: what the attacker's links point at."""
    s = base / "secret"
    s.write_text("root's own\n")
    s.chmod(0o600)
    return s


def nobody_dir(path: Path) -> Path:
    path.mkdir()
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


def untouched(secret: Path, before: os.stat_result) -> bool:
    st = secret.stat()
    return secret.read_text() == "root's own\n" and (st.st_size, st.st_mtime_ns) == (
        before.st_size, before.st_mtime_ns)


def test_a_pidfile_link_planted_by_the_workers_user_is_not_followed(make, trap, base, secret):
    run = nobody_dir(base / "run")
    (run / "pyd.pid").symlink_to(secret)
    os.lchown(run / "pyd.pid", NOBODY.pw_uid, NOBODY.pw_gid)
    before = secret.stat()
    p = make(f"pidfile {run}/pyd.pid;\n" + site_config(trap, free_port()), flags=("-P",))
    p.pidfile = run / "pyd.pid"
    proc = p.start(check=False)
    assert untouched(secret, before), secret.read_text()
    assert proc.returncode == 1 and "symbolic link" in proc.stderr, proc.stderr


def test_a_log_file_link_planted_by_the_workers_user_is_not_followed(make, trap, base, secret):
    logs = nobody_dir(base / "logs")
    (logs / "pyd.log").symlink_to(secret)
    before = secret.stat()
    p = make(f"log-file {logs}/pyd.log;\n" + site_config(trap, free_port()), flags=("-P",))
    p.logfile = logs / "pyd.log"
    proc = p.start(check=False)
    assert untouched(secret, before), secret.read_text()
    assert proc.returncode == 1 and "symbolic link" in proc.stderr, proc.stderr


def test_a_log_file_swapped_for_a_link_before_reopenlog_is_not_followed(make, trap, base,
                                                                         secret):
    """The logrotate pattern of CVE-2016-1247: the workers' user owns the log directory."""
    logs = nobody_dir(base / "logs")
    port = free_port()
    p = make(f"log-file {logs}/pyd.log;\n" + site_config(trap, port), flags=("-P",))
    p.logfile = logs / "pyd.log"
    p.start()
    p.wait_for_log(rf"the log file {logs}/pyd.log: the directory {logs} is owned by nobody")
    before = secret.stat()
    os.rename(logs / "pyd.log", logs / "pyd.log.1")  # as nobody could: the directory is theirs
    (logs / "pyd.log").symlink_to(secret)
    p.cli("reopenlog")
    for _ in range(3):
        http_get(port)
    p.cli("reopenlog")
    assert untouched(secret, before), secret.read_text()
    serve_as_nobody(trap, port)  # and the site keeps serving


def test_config_files_others_can_write_are_warned_about(make, trap, base):
    confd = nobody_dir(base / "conf.d")
    port = free_port()
    p = make(site_config(trap, port) + f"include {confd}/*.conf;\n", flags=("-P",))
    test = p.cli("configtest", "-q")
    assert test.returncode == 0
    test = p.cli("configtest")
    assert (f"pyd: warning: {confd} can be changed by others: the directory {confd} belongs "
            f"to uid {NOBODY.pw_uid}") in test.stderr, test.stderr
    p.start()
    p.wait_for_log(rf"config: {re.escape(str(confd))} can be changed by others: the directory "
                   rf"{re.escape(str(confd))} belongs to uid {NOBODY.pw_uid}")


# -- 3. what only the master holds ----------------------------------------------------------------

def test_workers_and_programs_do_not_inherit_notify_socket_or_the_upgrade_fd(make, trap, base):
    notify = base / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    os.chmod(notify, 0o777)
    envfile = nobody_dir(base / "out") / "process.env"
    port = free_port()
    p = make(site_config(trap, port, f"Process:env {{ command \"sh -c 'env > {envfile}; "
                                     f"exec sleep 1000'\"; }}"),
             flags=("-P",), env={"NOTIFY_SOCKET": str(notify)})
    try:
        p.start()
        senders = _notifications(receiver)
        assert senders and all(pid == p.master_pid for pid, _ in senders), senders
        assert any("READY=1" in text for _, text in senders)
        for _ in range(4):  # both workers, whichever answers
            env = json.loads(http_get(port, "/env")[2])
            assert "NOTIFY_SOCKET" not in env and "PYD__UPGRADE_FD" not in env, env
        wait_until(lambda: envfile.exists() and envfile.read_text(), 10, "the program's env")
        assert "NOTIFY_SOCKET" not in envfile.read_text()
        old = p.master_pid
        upgrade = p.cli("upgrade")
        assert upgrade.returncode == 0, upgrade
        new = int(re.search(r"new master is pid (\d+)", upgrade.stdout).group(1))
        p.started.append(new)
        p.master_pid = new
        wait_until(lambda: not p.alive(old), 30, "the old master gone")
        for _ in range(4):
            env = json.loads(http_get(port, "/env")[2])
            assert "NOTIFY_SOCKET" not in env and "PYD__UPGRADE_FD" not in env, env
        # The old master named its successor; no worker ever spoke.
        senders = _notifications(receiver)
        assert (old, f"MAINPID={new}") in senders, senders
        assert {pid for pid, _ in senders} <= {old, new}, senders
    finally:
        receiver.close()


def _notifications(receiver: socket.socket) -> list[tuple[int, str]]:
    """Every datagram waiting, with the sender's pid as the kernel tells it."""
    out = []
    receiver.setblocking(False)
    while True:
        try:
            data, ancdata, _, _ = receiver.recvmsg(4096, socket.CMSG_SPACE(12))
        except BlockingIOError:
            return out
        pid = next((int.from_bytes(d[:4], sys.byteorder) for level, kind, d in ancdata
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), 0)
        for line in data.decode().splitlines():
            out.append((pid, line))


# -- 4. descriptors ------------------------------------------------------------------------------

def test_the_open_files_limit_is_raised_and_a_low_one_is_warned_about(make, trap):
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    port = free_port()
    p = make(site_config(trap, port), flags=("-P",))
    p.preexec = low_limit
    p.start()
    limits = Path(f"/proc/{p.master_pid}/limits").read_text()
    assert re.search(r"Max open files\s+4096\s+4096", limits), limits
    p.wait_for_log(r"open files limit \(RLIMIT_NOFILE\) is 4096 \(hard 4096\), but each worker "
                   r"may hold 10000 connections")
    for pid in p.workers():
        assert re.search(r"Max open files\s+4096\s+4096",
                         Path(f"/proc/{pid}/limits").read_text())

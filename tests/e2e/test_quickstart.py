"""The README's quick start, run as written on a fresh Debian 12 that has only `python3`.

A debootstrap minbase chroot of bookworm (plus python3, nothing else: no pip, no venv module,
no curl, no ca-certificates) is built once and cached as a tar outside the repository; each run
unpacks it afresh, copies the working tree in (as a fresh clone has it), runs the README's first
command inside as root with a time limit, and fetches the hello page from the host (the chroot
shares the network namespace). Without a Debian mirror or PyPI the test fails, never skips.
Of the host only its resolver and the certificate authorities it trusts (where TLS is
inspected on the way out) go into the chroot; the environment is a fresh root shell's.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.quickstart]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PYD_TEST_CACHE", "/var/cache/pyd-test"))
IMAGE = CACHE / "bookworm-minbase.tar"
SUITE = "bookworm"
BUILD_TIMEOUT = 900  # seen: about 2 minutes
LINE_TIMEOUT = 600  # apt-get python3-venv, a virtualenv, pip install -e .: seen about 1 minute
INSIDE = "/srv/pyd"  # a place `nobody` (the bundled config's workers) can read
PORT = 8080  # what conf/pyd.conf listens on


def readme_first_line() -> str:
    """The first command of the README's quick start, as a user copies it."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return block.splitlines()[0]


def test_the_readme_names_the_quickstart_line():
    line = readme_first_line()
    assert line.startswith("./quickstart start --verbose-tty=1"), line
    assert "http://127.0.0.1:8080/" in line


def _need_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the quick-start chroot needs root (debootstrap, chroot, mount)")
    missing = [t for t in ("debootstrap", "chroot", "mount", "umount", "tar")
               if shutil.which(t) is None]
    assert not missing, f"missing {missing}: .ci/run installs debootstrap"


def build_image() -> Path:
    """The cached tar of a bookworm minbase chroot with python3; built once, under a lock."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if IMAGE.exists():
            return IMAGE
        work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
        try:
            root = work / "root"
            mirror = os.environ.get("PYD_TEST_DEBIAN_MIRROR")  # default: debootstrap's own
            started = time.monotonic()
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3", SUITE, str(root),
                 *([mirror] if mirror else [])],
                capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            assert proc.returncode == 0, (
                "debootstrap failed (is Debian's mirror reachable?):\n" + proc.stdout[-3000:]
                + proc.stderr[-3000:])
            subprocess.run(["tar", "-C", str(root), "-cf", str(work / "image.tar"), "."],
                           check=True, timeout=300)
            os.replace(work / "image.tar", IMAGE)
            print(f"built {IMAGE} in {time.monotonic() - started:.0f}s")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return IMAGE


def _copy_working_tree(dest: Path) -> None:
    """What a fresh clone has: tracked files and new ones not ignored, as they are now."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
                         capture_output=True, check=True, timeout=60).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = REPO / rel
        if not src.is_file() or src.is_symlink() and not src.exists():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    for d in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        d.chmod(0o755)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _get(url: str) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except OSError:
        return None


def test_the_quickstart_line_serves_hello_on_a_fresh_debian():
    _need_root_tools()
    if not _port_free(PORT):
        pytest.skip(f"127.0.0.1:{PORT} is taken on this machine; the quick start listens there")
    line = readme_first_line()
    image = build_image()
    top = Path(tempfile.mkdtemp(prefix="pyd-quickstart-", dir="/var/tmp"))
    root = top / "root"
    mounted: list[Path] = []
    proc = None
    try:
        root.mkdir()
        subprocess.run(["tar", "-C", str(root), "-xf", str(image)], check=True, timeout=300)
        shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        env.update(_this_networks_trust(root))
        _copy_working_tree(root / INSIDE.lstrip("/"))
        for what, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"]),
                           ("dev/shm", ["-t", "tmpfs", "tmpfs"])):
            point = root / what
            point.mkdir(exist_ok=True)
            subprocess.run(["mount", *args, str(point)], check=True, timeout=30)
            mounted.append(point)
        log = open(top / "quickstart.log", "w+b")
        started = time.monotonic()
        proc = subprocess.Popen(
            ["timeout", "-s", "KILL", str(LINE_TIMEOUT), "chroot", str(root), "/bin/sh", "-c",
             f"cd {INSIDE} && {line}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        answer = None
        while answer is None and proc.poll() is None \
                and time.monotonic() - started < LINE_TIMEOUT:
            answer = _get(f"http://127.0.0.1:{PORT}/")
            if answer is None:
                time.sleep(0.5)
        took = time.monotonic() - started
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
        assert answer is not None, (
            f"nothing served on 127.0.0.1:{PORT} after {took:.0f}s "
            f"(exit {proc.poll()}):\n{output[-6000:]}")
        print(f"the quick-start line served after {took:.0f}s")
        status, body = answer
        assert status == 200 and body.startswith(b"Hello from pyd (worker pid "), answer
        pidfile = root / INSIDE.lstrip("/") / "run" / "pyd.pid"
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=60)
        assert not pidfile.exists() or not pidfile.read_text().strip(), "pidfile left behind"
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: timeout, chroot, pyd
            proc.wait(timeout=30)
        _kill_left_in(root)
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], timeout=30)
        if not any(_is_mounted(p) for p in mounted):
            shutil.rmtree(top, ignore_errors=True)


def _this_networks_trust(root: Path) -> dict[str, str]:
    """A fresh machine on this network trusts what this one does: where TLS is inspected on
    the way out, the host's CA bundle (and any proxy) goes into the chroot, nothing else of
    the host's pip settings."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    if os.path.isfile(bundle):
        inside = root / "etc" / "ssl" / "certs" / "host-ca-certificates.crt"
        inside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle, inside)
        env["PIP_CERT"] = env["SSL_CERT_FILE"] = "/etc/ssl/certs/host-ca-certificates.crt"
    return env


def _kill_left_in(root: Path) -> None:
    """Processes rooted in our chroot (pyd's workers survive their session's end): killed."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == str(root):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass


def _is_mounted(point: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(point) for line in f)

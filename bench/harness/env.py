"""The harness's own environment: the peers' venv, Debian's nginx and wrk, versions, the machine.

Installs only what is missing, so a second run starts at once.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .servers import BENCH, PYD_PYTHON, VENV, Pyd

# gunicorn 27.0.1 imports `packaging` without declaring it.
PEERS = ["gunicorn", "gevent", "granian", "uwsgi", "packaging"]
PEER_BINARIES = ["gunicorn", "granian", "uwsgi"]
APT = ["nginx", "wrk"]


LOCK_PATH = Path("/tmp/pyd-bench.lock")
_held: list[int] = []


def exclusive(wait_s: float = 1800.0) -> str | None:
    """Hold the machine-wide benchmark lock for the rest of this process's life.

    Two benchmarks at once on two cores measure each other. Waits up to wait_s for another
    holder; returns None once held, or a note for the report if it ran without the lock.
    """
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not told:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
                log(f"another benchmark is running ({holder}); waiting up to {wait_s / 60:.0f} min")
                told = True
            if time.monotonic() > deadline:
                os.close(fd)
                return "another benchmark ran at the same time (lock not obtained): disturbed figures"
            time.sleep(2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode(), 0)
    _held.append(fd)  # closed when the process exits, which releases the lock
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_venv() -> None:
    """bench/.venv with the Python peers (uWSGI is compiled by pip with gcc on first install)."""
    missing = [b for b in PEER_BINARIES if not (VENV / "bin" / b).exists()]
    if not missing and _venv_imports("gevent", "packaging"):
        return
    if not (VENV / "bin/python").exists():
        log(f"creating {VENV.relative_to(BENCH.parent)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log(f"installing {', '.join(PEERS)} into the venv (uWSGI compiles; about a minute)")
    subprocess.run([str(VENV / "bin/pip"), "install", "-q", *PEERS], check=True)


def _venv_imports(*modules: str) -> bool:
    code = "; ".join(f"import {m}" for m in modules)
    return subprocess.run([str(VENV / "bin/python"), "-c", code],
                          capture_output=True).returncode == 0


def ensure_debian() -> None:
    """nginx and wrk from Debian; a system nginx the package starts on port 80 is stopped."""
    missing = [p for p in APT if shutil.which(p) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"bench: {', '.join(missing)} missing; install with apt-get as root")
    log(f"installing {', '.join(missing)} from Debian")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    if "nginx" in missing and Path("/run/nginx.pid").exists():
        # The package's own nginx, just started by this install: the harness runs its own.
        subprocess.run(["nginx", "-s", "stop"], check=False)


def pyd_importable() -> str | None:
    """None if the system python3 imports pyd, else why not."""
    p = subprocess.run([PYD_PYTHON, "-c", "import pyd"], capture_output=True, text=True,
                       cwd=tempfile.gettempdir(), env=Pyd.cli_env())
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": str(os.cpu_count()), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def wrk_version() -> str:
    p = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return ((p.stdout or p.stderr).strip().splitlines() or ["unknown"])[0].split(" Copyright")[0]

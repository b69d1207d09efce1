"""The servers under test: how each is configured, started, found ready, and stopped.

pyd comes from the repository (the system python3, where it is installed editable); the peers come
from bench/.venv and Debian. Each server gets a Site (apps directory, app, port, workers) and
returns a Running handle, or raises Unavailable with a one-line reason the report shows.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

BENCH = Path(__file__).resolve().parent.parent
VENV = BENCH / ".venv"
PYD_PYTHON = os.environ.get("PYD_PYTHON", "python3")
START_TIMEOUT = 60.0


class Unavailable(Exception):
    """The server could not serve this scenario; str() is the reason shown in the report."""


@dataclass
class Site:
    """What a server is asked to serve."""

    root: Path              # temporary directory holding apps.py and static/, readable by nobody
    app: str                # a callable of apps.py
    port: int
    workers: int = 1
    static: bool = False    # serve /static/ from root/static with the server's own file serving
    backend_port: int = 0   # for a front nginx: where its upstream listens

    @property
    def static_dir(self) -> Path:
        return self.root / "static"


@dataclass
class Running:
    """A started server: the pid whose tree is measured, and how to stop it.

    parts names the roots of everything measured (a front nginx and its backend: two trees).
    """

    root_pid: int
    stop: Callable[[], None]
    notes: list[str] = field(default_factory=list)
    parts: dict[str, int] = field(default_factory=dict)

    def roots(self) -> list[int]:
        return list(self.parts.values()) or [self.root_pid]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Server:
    """A peer started as a child process in its own session; its tree is stopped by pid."""

    name = ""
    title = ""
    stop_signal = signal.SIGTERM

    def command(self, site: Site) -> list[str]:
        raise NotImplementedError

    def prepare(self, site: Site) -> None:
        """Write whatever config files the command refers to."""

    def wait_ready(self, site: Site, alive: Callable[[], bool]) -> None:
        procs.wait_http(site.port, "/", timeout=START_TIMEOUT, alive=alive)

    def start(self, site: Site) -> Running:
        self.prepare(site)
        log_path = site.root / f"{self.name}-{site.port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(self.command(site), cwd=site.root, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def stop() -> None:
            procs.kill_tree(procs.tree(proc.pid), first=self.stop_signal)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                procs.kill_tree(procs.tree(proc.pid), first=signal.SIGKILL, grace=1)
                proc.wait(timeout=5)

        try:
            self.wait_ready(site, lambda: proc.poll() is None)
        except (TimeoutError, RuntimeError) as e:
            stop()
            raise Unavailable(f"{e}; log: {_tail(log_path)}") from None
        return Running(proc.pid, stop)

    def version(self) -> str:
        raise NotImplementedError


def _first_line(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    out = (p.stdout or p.stderr).strip().splitlines()
    return out[0] if out else "unknown"


class Gunicorn(Server):
    name, title = "gunicorn", "gunicorn -k gevent"
    stop_signal = signal.SIGINT  # quick shutdown; SIGTERM would wait for idle keep-alive clients

    def command(self, site: Site) -> list[str]:
        return [str(VENV / "bin/gunicorn"), "-k", "gevent", "-w", str(site.workers),
                "-b", f"127.0.0.1:{site.port}", "--worker-connections", "1000",
                "--log-level", "warning", "--chdir", str(site.root), f"apps:{site.app}"]

    def version(self) -> str:
        gevent = _first_line([str(VENV / "bin/python"), "-c",
                              "import gevent; print(gevent.__version__)"])
        return f"{_first_line([str(VENV / 'bin/gunicorn'), '--version'])}, gevent {gevent}"


class Granian(Server):
    name, title = "granian", "Granian (WSGI)"

    def command(self, site: Site) -> list[str]:
        cmd = [str(VENV / "bin/granian"), "--interface", "wsgi", "--host", "127.0.0.1",
               "--port", str(site.port), "--workers", str(site.workers), "--no-access-log",
               "--log-level", "warning", "--working-dir", str(site.root)]
        if site.static:
            cmd += ["--static-path-route", "/static", "--static-path-mount", str(site.static_dir)]
        return cmd + [f"apps:{site.app}"]

    def version(self) -> str:
        return _first_line([str(VENV / "bin/granian"), "--version"])


class UWSGI(Server):
    """uWSGI, in one of three modes.

    "http11": --http11-socket (http-socket with HTTP/1.1 keep-alive) and 64 threads per process,
    one per wrk connection. Its gevent loop engine is built in, but on --http-socket it closes the
    connection after every response, and --http11-socket with --gevent stalls; so the HTTP sweep
    uses threads. "http-gevent": --http-socket in gevent mode (no keep-alive), for comparison.
    "uwsgi": its own protocol on --socket, gevent mode, behind nginx's uwsgi_pass.
    """

    ASYNC_CORES = 1000
    THREADS = 64
    TITLES = {"http11": "uWSGI (http11-socket, threads)",
              "http-gevent": "uWSGI (http-socket, gevent)",
              "uwsgi": "uWSGI (uwsgi protocol, gevent)"}

    def __init__(self, mode: str = "http11", name: str = "uwsgi"):
        self.mode, self.name, self.title = mode, name, self.TITLES[mode]

    def command(self, site: Site) -> list[str]:
        addr = f"127.0.0.1:{site.port}"
        bind, concurrency = {
            "http11": (["--http11-socket", addr], ["--threads", str(self.THREADS)]),
            "http-gevent": (["--http-socket", addr], ["--gevent", str(self.ASYNC_CORES)]),
            "uwsgi": (["--socket", addr], ["--gevent", str(self.ASYNC_CORES)]),
        }[self.mode]
        return [str(VENV / "bin/uwsgi"), *bind, "--home", str(VENV), "--chdir", str(site.root),
                "--module", f"apps:{site.app}", "--master", "--processes", str(site.workers),
                *concurrency, "--listen", "1024", "--disable-logging", "--die-on-term",
                "--need-app"]

    def wait_ready(self, site: Site, alive: Callable[[], bool]) -> None:
        if self.mode == "uwsgi":
            procs.wait_tcp(site.port, timeout=START_TIMEOUT, alive=alive)
        else:
            super().wait_ready(site, alive)

    def version(self) -> str:
        return "uWSGI " + _first_line([str(VENV / "bin/uwsgi"), "--version"])


class Nginx(Server):
    """nginx in the foreground; `locations` builds the server block's body for a Site."""

    name, title = "nginx", "nginx"
    stop_signal = signal.SIGTERM

    def __init__(self, locations: Callable[[Site], str], *, name: str = "nginx",
                 title: str = "nginx", upstream: Callable[[Site], str] | None = None):
        self.locations, self.upstream = locations, upstream
        self.name, self.title = name, title

    def wait_ready(self, site: Site, alive: Callable[[], bool]) -> None:
        # In front of a backend, a request could wait on it for nginx's 60 s upstream timeout;
        # the scenario's check request (10 s) finds a backend that does not answer.
        if self.upstream is not None:
            procs.wait_tcp(site.port, timeout=START_TIMEOUT, alive=alive)
        else:
            super().wait_ready(site, alive)

    def conf_path(self, site: Site) -> Path:
        return site.root / f"{self.name}-{site.port}.conf"

    def config(self, site: Site) -> str:
        prefix = site.root / f"{self.name}-{site.port}"
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        temps = "".join(f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        upstream = self.upstream(site) if self.upstream else ""
        return f"""{user}worker_processes {site.workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 16384; }}
http {{
    include /etc/nginx/mime.types;
    default_type text/plain;
    access_log off;
    sendfile on;
    tcp_nopush on;
    # nginx closes a keep-alive connection after 1000 requests by default; the Python servers
    # do not, so lift the limit to compare like with like.
    keepalive_requests 1000000;
{temps}{upstream}
    server {{
        listen 127.0.0.1:{site.port} backlog=4096;
{self.locations(site)}
    }}
}}
"""

    def prepare(self, site: Site) -> None:
        (site.root / f"{self.name}-{site.port}").mkdir(exist_ok=True)
        self.conf_path(site).write_text(self.config(site))

    def command(self, site: Site) -> list[str]:
        return ["nginx", "-e", str(site.root / f"{self.name}-{site.port}" / "error.log"),
                "-p", str(site.root) + "/", "-c", str(self.conf_path(site))]

    def version(self) -> str:
        return _first_line(["nginx", "-v"]).replace("nginx version: ", "")


def nginx_hello_and_static(site: Site) -> str:
    return f"""        location / {{ return 200 "Hello, World!"; }}
        location /static/ {{ root {site.root}; }}"""


class Pyd:
    """pyd from the repository, started with `pyd start -c FILE` (it daemonizes) and `pyd stop`.

    `pool_extra` adds lines to the pool section; `top` adds top-level directives. By default pyd
    runs from the working tree; after use_revision() from a clean export of one commit.
    """

    name, title = "pyd", "pyd"
    source: Path | None = None      # a directory holding an exported pyd/ package
    revision: str | None = None

    @classmethod
    def use_revision(cls, rev: str) -> None:
        """Run pyd from `git archive REV` (in /tmp, readable by nobody) instead of the working
        tree, which other people may be editing while a sweep runs."""
        repo = ["git", "-C", str(BENCH.parent)]
        sha = subprocess.run([*repo, "rev-parse", "--verify", f"{rev}^{{commit}}"],
                             capture_output=True, text=True)
        if sha.returncode != 0:
            raise SystemExit(f"bench: not a commit: {rev}")
        dest = Path(tempfile.mkdtemp(prefix="pyd-bench-src-", dir="/tmp"))
        archive = subprocess.run([*repo, "archive", sha.stdout.strip(), "pyd"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
        atexit.register(shutil.rmtree, dest, ignore_errors=True)
        cls.source, cls.revision = dest, sha.stdout.strip()

    @classmethod
    def cli(cls, verb: str, conf: Path) -> list[str]:
        return [PYD_PYTHON, "-m", "pyd.cli", verb, "-c", str(conf)]

    @classmethod
    def cli_env(cls) -> dict[str, str]:
        """The environment for pyd's commands: the export first on sys.path, when there is one."""
        if cls.source is None:
            return dict(os.environ)
        return os.environ | {"PYTHONPATH": str(cls.source)}

    def __init__(self, pool_type: str = "HTTPServer", *, access_log: str | None = "off",
                 top: list[str] = (), pool_extra: list[str] = ()):
        self.pool_type, self.access_log = pool_type, access_log
        self.top, self.pool_extra = list(top), list(pool_extra)

    def paths(self, site: Site) -> dict[str, Path]:
        base = site.root / f"pyd-{site.port}"
        return {"conf": base.with_suffix(".conf"), "pid": base.with_suffix(".pid"),
                "log": base.with_suffix(".log")}

    def config(self, site: Site, *, access_log: bool = True) -> str:
        p = self.paths(site)
        lines = []
        if os.geteuid() == 0:
            lines.append("user nobody;")  # workers refuse to run as root without it
        lines += [f"workers {site.workers};", f"cwd {site.root};", f"pidfile {p['pid']};",
                  f"log-file {p['log']};", *self.top, f"Pool:{self.pool_type} {{",
                  f"    listen 127.0.0.1:{site.port};", f"    app apps:{site.app};"]
        if site.static:
            lines.append(f"    location /static/ {{ alias {site.static_dir}/; }}")
        if access_log and self.access_log:
            lines.append(f"    access-log {self.access_log};")
        lines += [f"    {line}" for line in self.pool_extra] + ["}", ""]
        return "\n".join(lines)

    def command(self, site: Site) -> list[str]:
        return self.cli("start", self.paths(site)["conf"])

    def _cli(self, site: Site, verb: str, timeout: float) -> subprocess.CompletedProcess:
        cmd = self.cli(verb, self.paths(site)["conf"])
        try:
            return subprocess.run(cmd, cwd=site.root, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, env=self.cli_env())
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, -1, "", f"`pyd {verb}` took over {timeout}s")

    def start(self, site: Site) -> Running:
        notes = []
        conf = self.paths(site)["conf"]
        conf.write_text(self.config(site))
        p = self._cli(site, "start", START_TIMEOUT)
        out = (p.stdout + p.stderr).strip()
        if p.returncode != 0 and self.access_log == "off" and '"access-log"' in out:
            # A pyd without the directive (or a pool without it) runs with its default then.
            notes.append("pyd has no `access-log` directive yet: run with its default")
            conf.write_text(self.config(site, access_log=False))
            p = self._cli(site, "start", START_TIMEOUT)
            out = (p.stdout + p.stderr).strip()
        if p.returncode != 0:
            self.stop_if_running(site)
            raise Unavailable(_pyd_reason(out) or f"`pyd start` exited {p.returncode}")
        try:
            pid = int(self.paths(site)["pid"].read_text().split()[0])
        except (OSError, ValueError, IndexError) as e:
            self.stop_if_running(site)
            raise Unavailable(f"`pyd start` succeeded but left no readable pidfile ({e})") from None
        wait = procs.wait_http if self.pool_type == "HTTPServer" else procs.wait_tcp
        try:
            wait(site.port, timeout=START_TIMEOUT, alive=lambda: procs.tree(pid) != [])
        except (TimeoutError, RuntimeError) as e:
            self.stop_master(site, pid)
            raise Unavailable(f"started but not answering: {e}") from None
        return Running(pid, lambda: self.stop_master(site, pid), notes)

    def stop_master(self, site: Site, pid: int) -> None:
        pids = procs.tree(pid)
        self._cli(site, "stop", 30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(procs.tree(p) for p in pids):
            time.sleep(0.05)
        # Whatever `pyd stop` left behind: only the tree of the master this harness started.
        procs.kill_tree([p for p in pids if procs.tree(p)], first=signal.SIGKILL, grace=2)

    def stop_if_running(self, site: Site) -> None:
        """A master of this site's config that runs (pidfile written) is stopped by pid."""
        try:
            pid = int(self.paths(site)["pid"].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if procs.tree(pid) and _cmdline_mentions(pid, str(self.paths(site)["conf"])):
            self.stop_master(site, pid)

    def fingerprint(self) -> str:
        """HEAD and a hash of uncommitted changes outside bench/: equal means the same pyd."""
        if self.revision:
            return self.revision
        repo = ["git", "-C", str(BENCH.parent)]
        head = _first_line([*repo, "rev-parse", "HEAD"])
        diff = subprocess.run([*repo, "diff", "HEAD", "--", ".", ":!bench"],
                              capture_output=True).stdout
        untracked = subprocess.run([*repo, "ls-files", "--others", "--exclude-standard",
                                    "--", ".", ":!bench"], capture_output=True, text=True).stdout
        digest = hashlib.sha1(diff)
        for name in sorted(untracked.split()):
            digest.update(name.encode())
            try:
                digest.update((BENCH.parent / name).read_bytes())
            except OSError:
                pass
        return f"{head}:{digest.hexdigest()[:12]}"

    def version(self) -> str:
        if self.revision:
            return f"{self.revision[:7]} (a clean export of that commit)"
        head = _first_line(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"])
        status = subprocess.run(["git", "-C", str(BENCH.parent), "status", "--porcelain",
                                 "--", ".", ":!bench"], capture_output=True, text=True).stdout
        return f"{head}{' (dirty: uncommitted changes outside bench/)' if status.strip() else ''}"


def _cmdline_mentions(pid: int, text: str) -> bool:
    """A pidfile may be stale and its pid reused: signal it only if it is this config's master."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text in f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def _pyd_reason(output: str) -> str:
    """The line of pyd's output that says why, without the caret lines under it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line
    return lines[-1] if lines else ""

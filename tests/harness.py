"""Starting a real pyd for end-to-end tests, and the small clients the tests talk to it with.

`Pyd(directory, config_text)` writes the config, runs `pyd start` as a subprocess (the real
CLI, daemonizing), and stops it (by pid, killing only what it started) when the test ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pyd.service.main import children_of

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pyd(*args: str, timeout: float = 60, env: dict | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run the `pyd` command line as users do; returns the completed process."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    proc = subprocess.run([PYTHON, "-m", "pyd", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=env.get("CWD") if env else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"pyd {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def world_readable_dir(prefix: str = "pyd-test-") -> Path:
    """A directory under /tmp that workers running as `nobody` can read."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


class Pyd:
    """A pyd started from a config text in `directory` (pidfile, log and socket inside)."""

    def __init__(self, directory: Path, config: str, name: str = "pyd.conf"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / name
        self.pidfile = self.dir / "run" / "pyd.pid"
        self.logfile = self.dir / "log" / "pyd.log"
        head = ""
        if not re.search(r"^\s*pidfile\s", config, re.M):
            head += f"pidfile {self.pidfile};\n"
        if not re.search(r"^\s*log-file\s", config, re.M):
            head += f"log-file {self.logfile};\n"
        self.conf.write_text(head + config)
        self.master_pid: int | None = None
        self.started: list[int] = []

    def cli(self, *args: str, timeout: float = 90, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
        return run_pyd(*args, "-c", str(self.conf), timeout=timeout, check=check, env=env)

    def start(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = self.cli("start", *extra, check=check)
        if proc.returncode == 0:
            self.master_pid = int(self.pidfile.read_text().strip())
            self.started.append(self.master_pid)
        return proc

    def stop(self, command: str = "stop") -> subprocess.CompletedProcess | None:
        if self.master_pid is None or not self.alive(self.master_pid):
            return None
        proc = self.cli(command)
        self.master_pid = None
        return proc

    def cleanup(self) -> None:
        """Whatever happens in the test, nothing it started survives it."""
        pids = set(self.started)
        for pid in list(pids):
            pids |= set(self.children(pid))
        try:
            self.stop()
        except Exception:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(self.alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if self.alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- looking at the process tree ------------------------------------------------------------

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False

    children = staticmethod(children_of)  # pids whose parent is pid (not zombies)

    def workers(self) -> list[int]:
        assert self.master_pid is not None
        return sorted(p for p in self.children(self.master_pid) if self.title(p).startswith(
            "pyd: worker"))

    @staticmethod
    def title(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""

    @staticmethod
    def ids(pid: int) -> tuple[int, int]:
        """(uid, gid) of a process, from /proc/PID/status."""
        text = Path(f"/proc/{pid}/status").read_text()
        uid = int(re.search(r"^Uid:\s+(\d+)", text, re.M).group(1))
        gid = int(re.search(r"^Gid:\s+(\d+)", text, re.M).group(1))
        return uid, gid

    def log(self) -> str:
        try:
            return self.logfile.read_text()
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the log within {timeout}s:\n{self.log()[-3000:]}")

    def fullstatus(self) -> str:
        return self.cli("fullstatus", check=True).stdout

    def service(self) -> int:
        """The pid of the one service process (started right after the workers serve)."""
        def find() -> list[int]:
            return [c for c in self.children(self.master_pid)
                    if self.title(c).startswith("pyd: service")]

        pids = wait_until(find, 5, "the service process")
        assert len(pids) == 1, [self.title(c) for c in self.children(self.master_pid)]
        return pids[0]


def wait_until(predicate, timeout: float, what: str, step: float = 0.05):
    """predicate()'s first true value within timeout; else AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout}s")


def http_get(port: int, path: str = "/", host: str = "127.0.0.1", headers: dict | None = None,
             timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One request on a fresh connection with the standard library's client."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1",
                 half_close: bool = False) -> bytes:
    """Send raw bytes (then shut the sending side, with `half_close`), read until the server
    closes (or the timeout); the raw answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port}")


class Load:
    """Concurrent HTTP/1.1 clients on loopback, bounded in requests and time.

    Keep-alive clients retry a request only when a *reused* connection was closed cleanly
    before any byte of the response (RFC 9112 9.3.1, what browsers and urllib3 do); those are
    counted as `retries`, not failures. A reset or any other error is a failure.
    """

    def __init__(self, port: int, clients: int = 16, keepalive: bool = True,
                 path: str = "/", host: str = "127.0.0.1"):
        import threading

        self.port, self.clients, self.keepalive, self.path, self.host = (
            port, clients, keepalive, path, host)
        self.ok = self.failed = self.resets = self.retries = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads: list = []
        self.limit = None

    def start(self, max_requests: int | None = None, duration: float = 60.0) -> Load:
        import threading

        self.limit = max_requests
        self.deadline = time.monotonic() + duration
        for _ in range(self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self) -> Load:
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)
        return self

    def wait(self, timeout: float = 120.0) -> Load:
        for t in self.threads:
            t.join(timeout)
        return self

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def _done(self) -> bool:
        if self.stop_flag.is_set() or time.monotonic() > self.deadline:
            return True
        return self.limit is not None and self.total >= self.limit

    def _client(self) -> None:
        sock = None
        used = 0
        request = (f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   + ("" if self.keepalive else "Connection: close\r\n") + "\r\n").encode()
        while not self._done():
            for attempt in (1, 2):
                if sock is None:
                    sock = socket.create_connection((self.host, self.port), timeout=30)
                    used = 0
                try:
                    sock.sendall(request)
                    status, keep = _read_response(sock)
                except _ClosedBeforeResponse:
                    sock.close()
                    sock = None
                    if used and attempt == 1:
                        with self.lock:
                            self.retries += 1
                        continue
                    self._record(False, "closed before any response")
                    break
                except ConnectionResetError as e:
                    sock.close()
                    sock = None
                    with self.lock:
                        self.resets += 1
                    self._record(False, f"reset: {e}")
                    break
                except OSError as e:
                    sock.close()
                    sock = None
                    self._record(False, f"{type(e).__name__}: {e}")
                    break
                used += 1
                self._record(status == 200, f"status {status}")
                if not keep or not self.keepalive:
                    sock.close()
                    sock = None
                break
        if sock is not None:
            sock.close()

    def _record(self, ok: bool, why: str) -> None:
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(why)

    def report(self) -> str:
        return (f"{self.ok} ok, {self.failed} failed, {self.resets} resets, {self.retries} "
                f"retries; errors: {self.errors}")


class _ClosedBeforeResponse(Exception):
    pass


def _read_response(sock: socket.socket) -> tuple[int, bool]:
    """Read one response (Content-Length or chunked); (status, server keeps the connection)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            if not buf:
                raise _ClosedBeforeResponse()
            raise ConnectionError("closed inside the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    keep = headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" in headers:
        need = int(headers[b"content-length"])
        while len(rest) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the response body")
            rest += chunk
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the chunked body")
            rest += chunk
    return status, keep

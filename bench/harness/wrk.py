"""Running wrk against a loopback URL and reading its report: req/s, p99, errors.

wrk is the only load generator of the sweep, so every server is measured through the same client.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

THREADS = 2
CONNECTIONS = 64
TIMEOUT = "5s"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"

POST_LUA = """\
-- A 1 MB POST body, sent with every request.
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors_connect: int = 0
    errors_read: int = 0
    errors_write: int = 0
    errors_timeout: int = 0
    non_2xx: int = 0

    @property
    def errors(self) -> int:
        return (self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout
                + self.non_2xx)

    def to_dict(self) -> dict:
        return asdict(self) | {"errors": self.errors}


def command(url: str, duration: float, *, threads: int = THREADS, connections: int = CONNECTIONS,
            headers: list[str] = (), script: Path | None = None) -> list[str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{_duration(duration)}",
           "--timeout", TIMEOUT, "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script is not None:
        cmd += ["-s", str(script)]
    return cmd + [url]


def _duration(seconds: float) -> str:
    # wrk takes whole seconds; keep at least one.
    return f"{max(1, round(seconds))}s"


def run(cmd: list[str], duration: float) -> WrkResult:
    """Run wrk (killed if it overruns by 30 s) and parse its report; RuntimeError if it failed."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"wrk did not finish: {shlex.join(cmd)}") from e
    if proc.returncode != 0 or "Requests/sec" not in proc.stdout:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return parse(proc.stdout)


def parse(text: str) -> WrkResult:
    r = WrkResult()
    if m := re.search(r"(\d+) requests in " + _TIME, text):
        r.requests = int(m.group(1))
        r.seconds = float(m.group(2)) * _UNITS[m.group(3)] / 1e3
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        r.rps = float(m.group(1))
    if m := re.search(r"^\s+50%\s+" + _TIME, text, re.M):
        r.p50_ms = float(m.group(1)) * _UNITS[m.group(2)]
    if m := re.search(r"^\s+99%\s+" + _TIME, text, re.M):
        r.p99_ms = float(m.group(1)) * _UNITS[m.group(2)]
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        r.errors_connect, r.errors_read, r.errors_write, r.errors_timeout = map(int, m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        r.non_2xx = int(m.group(1))
    return r

"""One measurement: start a server, check its answer, warm it up, load it with wrk, stop it.

Whatever happens, the server is stopped before this returns; a failure becomes a Measurement with
status "unavailable" (it did not start) or "error" (it started but answered wrongly or wrk failed).
"""

from __future__ import annotations

import resource
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import procs, wrk
from .servers import Running, Site, Unavailable


@dataclass
class Measurement:
    server: str
    scenario: str
    workers: int
    round: int = 0
    title: str = ""
    status: str = "ok"          # ok | unavailable | error
    reason: str = ""
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    rss_total_mb: float = 0.0
    rss_process_mb: float = 0.0
    processes: int = 0
    client_cpu_s: float = 0.0   # wrk's (and the harness's) CPU during the run
    other_cores: float = 0.0    # cores kept busy by other programs on the machine meanwhile
    command: str = ""
    cpu_parts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_us_per_request(self) -> float | None:
        return self.cpu_s / self.requests * 1e6 if self.requests else None

    def to_dict(self) -> dict:
        return asdict(self) | {"cpu_us_per_request": self.cpu_us_per_request}


def _own_cpu() -> float:
    """CPU of this harness and its reaped children (wrk, once it has exited)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load(running: Running, cmd: list[str], duration: float) -> tuple[wrk.WrkResult, procs.Usage]:
    """wrk against a running server while its process tree is watched.

    Also works out how busy the rest of the shared machine was meanwhile (usage.other_cores):
    every core's busy time, less the server's, wrk's and the harness's own.
    """
    busy0, own0, t0 = procs.machine_busy_seconds(), _own_cpu(), time.monotonic()
    with procs.TreeMonitor(running.roots()) as monitor:
        result = wrk.run(cmd, duration)
    busy, own = procs.machine_busy_seconds() - busy0, _own_cpu() - own0
    usage = monitor.usage
    usage.client_cpu_s = own
    usage.other_cores = max(0.0, busy - own - usage.cpu_s) / (time.monotonic() - t0)
    return result, usage


def measure(server, site: Site, *, scenario: str, check: Callable[[int], str | None],
            wrk_cmd: Callable[[float], list[str]], duration: float, warmup: float,
            round_: int = 0, name: str | None = None) -> Measurement:
    """name: the server's name in the report, when a variant runs in its place."""
    m = Measurement(name or server.name, scenario, site.workers, round_, title=server.title)
    m.command = shlex.join(wrk_cmd(duration))
    try:
        running = server.start(site)
    except Unavailable as e:
        m.status, m.reason = "unavailable", str(e)
        return m
    m.notes += running.notes
    try:
        problem = check(site.port)
        if problem:
            m.status, m.reason = "error", problem
            return m
        if warmup > 0:
            wrk.run(wrk_cmd(warmup), warmup)
        result, usage = load(running, wrk_cmd(duration), duration)
        fill(m, result, usage)
        m.cpu_parts = {name: round(usage.cpu_by_root.get(pid, 0.0), 2)
                       for name, pid in running.parts.items()}
    except RuntimeError as e:
        m.status, m.reason = "error", str(e)
    finally:
        running.stop()
    return m


def fill(m: Measurement, result: wrk.WrkResult, usage: procs.Usage) -> None:
    m.rps, m.p50_ms, m.p99_ms = result.rps, result.p50_ms, result.p99_ms
    m.requests, m.errors = result.requests, result.errors
    m.cpu_s = round(usage.cpu_s, 2)
    m.rss_total_mb = round(usage.rss_total_peak / 2**20, 1)
    m.rss_process_mb = round(usage.rss_process_peak / 2**20, 1)
    m.processes = len(usage.pids)
    m.client_cpu_s = round(usage.client_cpu_s, 2)
    m.other_cores = round(usage.other_cores, 2)
    if result.errors:
        m.notes.append(f"wrk errors: connect {result.errors_connect}, read {result.errors_read}, "
                       f"write {result.errors_write}, timeout {result.errors_timeout}, "
                       f"non-2xx {result.non_2xx}")


def settle(seconds: float = 0.5) -> None:
    """A short pause between runs, so one server's TIME_WAIT and exit do not overlap the next."""
    time.sleep(seconds)

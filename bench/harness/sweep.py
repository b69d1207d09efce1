"""The HTTP sweep behind `bench/run`: every scenario, worker count and server, interleaved, repeated.

Order: for each repetition (round), for each scenario and worker count, every server once, the
servers' order rotated each round so none is always first. One server runs at a time.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field

from . import procs
from .measure import Measurement, measure, settle
from .scenarios import Scenario, wrk_command
from .servers import UWSGI, Granian, Gunicorn, Nginx, Pyd, Site, nginx_hello_and_static

DEFAULT_SERVERS = ["pyd", "gunicorn", "granian", "uwsgi", "nginx"]
PEER_ORDER = ["gunicorn", "granian", "uwsgi", "uwsgi-gevent", "nginx"]


def all_servers() -> dict:
    return {"pyd": Pyd(), "gunicorn": Gunicorn(), "granian": Granian(), "uwsgi": UWSGI("http11"),
            "uwsgi-gevent": UWSGI("http-gevent", name="uwsgi-gevent"),
            "nginx": Nginx(nginx_hello_and_static)}


def server_for(servers: dict, name: str, scenario: Scenario):
    """The server to run for this scenario; uWSGI needs another mode for `Connection: close`.

    uWSGI's --http11-socket ignores a client's `Connection: close` (the response keeps the
    connection open, so wrk keeps it too); its --http-socket closes after every response.
    """
    if name == "uwsgi" and scenario.name == "hello-close":
        return servers["uwsgi-gevent"]
    return servers[name]


@dataclass
class Plan:
    scenarios: list[Scenario]
    servers: list[str]
    workers: list[int]
    repeat: int
    duration: float
    warmup: float
    measurements: list[Measurement] = field(default_factory=list)

    def takes_part(self, server: str, scenario: Scenario) -> bool:
        return server != "nginx" or scenario.nginx

    def runs(self) -> int:
        per_round = sum(self.takes_part(s, sc) for sc in self.scenarios for s in self.servers)
        return per_round * len(self.workers) * self.repeat

    def estimate_s(self) -> float:
        # start + check + stop of a server is about 1.5 s here; wrk's own start about 0.2 s.
        return self.runs() * (self.duration + self.warmup + 2.0)


def run_sweep(plan: Plan, root, log=lambda s: print(s, file=sys.stderr, flush=True)) -> None:
    servers = all_servers()
    unavailable: dict[tuple[str, str, int], str] = {}
    total, done = plan.runs(), 0
    for round_ in range(plan.repeat):
        shift = round_ % len(plan.servers)
        order = plan.servers[shift:] + plan.servers[:shift]
        for scenario in plan.scenarios:
            for workers in plan.workers:
                for name in order:
                    if not plan.takes_part(name, scenario):
                        continue
                    done += 1
                    key = (name, scenario.name, workers)
                    if key in unavailable:
                        # Hung at start in an earlier round: do not pay its timeout again. A quick
                        # failure is tried again: pyd's tree may be mid-change, not broken.
                        m = Measurement(name, scenario.name, workers, round_ + 1,
                                        status="unavailable", reason=unavailable[key])
                    else:
                        site = Site(root=root, app=scenario.app, port=procs.free_port(),
                                    workers=workers, static=scenario.static)
                        began = time.monotonic()
                        m = measure(server_for(servers, name, scenario), site, name=name, scenario=scenario.name,
                                    check=scenario.check,
                                    wrk_cmd=lambda d, s=scenario, p=site.port:
                                        wrk_command(s, root, p, d),
                                    duration=plan.duration, warmup=plan.warmup, round_=round_ + 1)
                        if m.status == "unavailable" and time.monotonic() - began > 10:
                            unavailable[key] = m.reason
                        settle()
                    plan.measurements.append(m)
                    log(f"[{done}/{total}] round {round_ + 1} {scenario.name} w{workers} "
                        f"{name}: {describe(m)}")


def describe(m: Measurement) -> str:
    if m.status != "ok":
        return f"{m.status}: {m.reason}"
    p99 = f"{m.p99_ms:.1f}ms" if m.p99_ms is not None else "?"
    errors = f", {m.errors} errors" if m.errors else ""
    return (f"{m.rps:,.0f} req/s, p99 {p99}, cpu {m.cpu_s:.1f}s, rss {m.rss_total_mb:.0f}MB"
            f"{errors}")


@dataclass
class Summary:
    """The medians of one (scenario, server, workers) cell over its successful runs."""

    server: str
    scenario: str
    workers: int
    runs: int
    title: str = ""
    rps: float | None = None
    rps_min: float | None = None
    rps_max: float | None = None
    p99_ms: float | None = None
    cpu_s: float | None = None
    cpu_us_per_request: float | None = None
    rss_total_mb: float | None = None
    rss_process_mb: float | None = None
    other_cores: float | None = None
    errors: int = 0
    status: str = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(measurements: list[Measurement]) -> list[Summary]:
    cells: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in measurements:
        cells.setdefault((m.scenario, m.server, m.workers), []).append(m)
    out = []
    for (scenario, server, workers), ms in cells.items():
        ok = [m for m in ms if m.status == "ok"]
        s = Summary(server, scenario, workers, len(ok), title=ms[-1].title)
        s.notes = sorted({n for m in ms for n in m.notes if not n.startswith("wrk errors")})
        if not ok:
            failed = ms[-1]
            s.status, s.reason = failed.status, failed.reason
            out.append(s)
            continue
        if len(ok) < len(ms):
            bad = next(m for m in ms if m.status != "ok")
            s.notes.append(f"{len(ms) - len(ok)} of {len(ms)} runs failed: {bad.reason}")
        s.rps = _median([m.rps for m in ok])
        s.rps_min, s.rps_max = min(m.rps for m in ok), max(m.rps for m in ok)
        s.p99_ms = _median([m.p99_ms for m in ok])
        s.cpu_s = _median([m.cpu_s for m in ok])
        s.cpu_us_per_request = _median([m.cpu_us_per_request for m in ok])
        s.rss_total_mb = _median([m.rss_total_mb for m in ok])
        s.rss_process_mb = _median([m.rss_process_mb for m in ok])
        s.other_cores = _median([m.other_cores for m in ok])
        s.errors = sum(m.errors for m in ok)
        out.append(s)
    return out


def elapsed(start: float) -> str:
    s = time.monotonic() - start
    return f"{int(s // 60)} min {int(s % 60)} s"

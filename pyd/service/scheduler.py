"""Cron sections: when each job runs next, and its runs (in the service process, never per worker).

Theory of operation. A schedule is a pure function `next_after(t)` of a clock reading, so tests
give it any time they like: `Cron` (croniter, in the job's time zone, on the wall clock) and
`Interval` (`every`, on the monotonic clock, deaf to clock steps). Each job has one timing
greenlet that sleeps until its next tick and fires once; `jitter` delays the start, `overlap`
decides what a tick does while the last run still goes. A run is a child process in its own
process group (`/bin/sh -c` for a command, `python -m pyd.jobrun` for a callable, which drops to
the configured user before it imports the job), so a timeout kills all of it. Every run ends in
one record on channel `cron.NAME`: its duration and outcome, with the traceback or the stderr
when it failed.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

import gevent
import gevent.event
import gevent.pool
import gevent.subprocess
from croniter import croniter

from pyd.service.supervisor import (
    KILL_GRACE,
    describe_exit,
    human,
    pump,
    spawn,
    spelled,
    stop_group,
)
from pyd.system.privileges import PrivilegeError, resolve
from pyd.system.trust import python_command, python_environ

log = logging.getLogger("pyd.service")

MARGIN = timedelta(hours=3)  # more than any daylight-saving shift
STDERR_KEPT = 64 * 1024  # the tail of a run's stderr kept for its outcome record


# -- schedules: pure arithmetic on clock readings ------------------------------------------------

class Interval:
    """`every 30s`: ticks at anchor + k * seconds, on the monotonic clock."""

    clock = staticmethod(time.monotonic)

    def __init__(self, seconds: float, anchor: float):
        self.seconds, self.anchor = seconds, anchor

    def next_after(self, t: float) -> float:
        k = max(0, math.floor((t - self.anchor) / self.seconds) + 1)
        return self.anchor + k * self.seconds

    def __str__(self) -> str:
        return f"every {spelled(self.seconds)}"


class Cron:
    """A cron expression in a time zone (None: the system's), on the wall clock.

    Wall times are mapped to instants the way vixie cron treats daylight-saving changes: a time
    skipped by a forward change runs at the change (once, however many skipped times match); a
    time repeated by a backward change runs once, at its first occurrence, unless the hour field
    is `*` (a job about elapsed time, every 15 minutes say), which runs in both.
    """

    clock = staticmethod(time.time)

    def __init__(self, expression: str, timezone: str | None = None):
        if len(expression.split()) != 5 and not expression.startswith("@"):
            raise ValueError(f'"{expression}": a cron expression has five fields')
        self.expression = expression
        self.timezone = timezone
        self.tz = zoneinfo.ZoneInfo(timezone) if timezone else None
        hours = croniter(expression).expanded[1]
        self.every_hour = hours == ["*"] or len(hours) == 24

    def __str__(self) -> str:
        return self.expression + (f" ({self.timezone})" if self.timezone else "")

    # wall clock <-> instants
    def wall(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.tz).replace(tzinfo=None)

    def instant(self, naive: datetime, fold: int) -> float:
        return naive.replace(tzinfo=self.tz, fold=fold).timestamp()

    def offset(self, t: float) -> timedelta:
        return datetime.fromtimestamp(t, self.tz).astimezone().utcoffset() if self.tz is None \
            else datetime.fromtimestamp(t, self.tz).utcoffset()

    def quiet(self, t: float) -> bool:
        """No change of UTC offset within MARGIN of t."""
        m = MARGIN.total_seconds()
        return self.offset(t - m) == self.offset(t + m)

    def instants(self, naive: datetime) -> list[float]:
        """When a wall time happens: usually once, twice or never around a change."""
        first, second = self.instant(naive, 0), self.instant(naive, 1)
        real = [x for x in (first, second) if self.wall(x) == naive]
        if len(real) == 2 and first != second:  # repeated by a backward change
            return [first, second] if self.every_hour else [first]
        if real:
            return real[:1]
        return [self._gap_end(naive, min(first, second), max(first, second))]

    def _gap_end(self, naive: datetime, lo: float, hi: float) -> float:
        """The first instant the wall clock reaches `naive` (it jumped over it)."""
        lo, hi = math.floor(lo), math.ceil(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.wall(mid) >= naive:
                hi = mid
            else:
                lo = mid
        return float(hi)

    def next_after(self, t: float) -> float:
        """The first tick strictly after t."""
        # Near an offset change wall times are not in the order of the instants: look at the
        # wall times a few hours around, and keep the earliest instant after t.
        now = self.wall(t)
        it = croniter(self.expression, now - (timedelta(0) if self.quiet(t) else MARGIN))
        best = best_naive = None
        slack = timedelta(0)
        for _ in range(100_000):
            naive = it.get_next(datetime)
            if best is not None and naive > max(best_naive + slack, now):
                return best
            for x in self.instants(naive):
                if x > t and (best is None or x < best):
                    best, best_naive = x, naive
                    slack = timedelta(0) if self.quiet(x) else MARGIN
        raise ValueError(f"{self.expression}: no next run found")


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides when and how a job runs; a change on `pyd update` reschedules it."""

    name: str
    schedule: str | None
    every: float | None
    timezone: str | None
    run: str | None
    command: str | None
    jitter: float
    timeout: float
    overlap: str
    user: str | None
    group: str | None
    chroot: str | None
    cwd: str
    pythonpath: tuple[str, ...]

    @classmethod
    def from_section(cls, config, section) -> JobSpec:
        s = section.settings
        return cls(section.name, s["schedule"], s["every"], s["timezone"], s["run"],
                   s["command"], s["jitter"], s["timeout"], s["overlap"], config.user,
                   config.group, config.chroot, config.cwd or os.getcwd(),
                   tuple(config.pythonpath))

    def make_schedule(self) -> Interval | Cron:
        if self.every is not None:
            return Interval(self.every, time.monotonic())
        return Cron(self.schedule, self.timezone)

    def argv(self) -> list[str]:
        if self.command is not None:
            return ["/bin/sh", "-c", self.command]
        # -P: jobrun starts as root, so its directory must not be on sys.path (run in /).
        argv = python_command("pyd.service.jobrun", "--cwd", self.cwd)
        for flag, value in (("--user", self.user), ("--group", self.group),
                            ("--chroot", self.chroot)):
            if value is not None:
                argv += [flag, value]
        for path in self.pythonpath:
            argv += ["--pythonpath", path]
        return argv + [self.run]


# -- runs ----------------------------------------------------------------------------------------

class Run:
    """One run of a job: a child process group, its output, its outcome record."""

    def __init__(self, spec: JobSpec, trigger: str):
        self.spec = spec
        self.trigger = trigger  # schedule, queued, manual
        self.log = logging.getLogger(f"cron.{spec.name}")
        self.pid: int | None = None
        self.started = time.time()
        self.duration = 0.0
        self.ok = False
        self.outcome = "running"
        self.killing: str | None = None  # why we are killing it: timeout, stop
        self.done = gevent.event.Event()

    def execute(self) -> None:
        began = time.monotonic()
        what = "run" if self.trigger == "schedule" else f"run ({self.trigger})"
        stderr: list[bytes] = []
        try:
            self.start()
        except (OSError, PrivilegeError, ValueError) as e:
            self.finish(began, False, f"cannot start: {e}")
            self.log.error("%s failed: cannot start: %s", what, e)
            return
        self.log.debug("%s started (pid %d)", what, self.pid)
        readers = [gevent.spawn(pump, self.proc.stdout, self._line),
                   gevent.spawn(pump, self.proc.stderr, lambda line: _keep(stderr, line))]
        try:
            code = self.proc.wait(timeout=self.spec.timeout or None)
        except gevent.subprocess.TimeoutExpired:
            self.killing = self.killing or "timeout"
            stop_group(self.pid, signal.SIGTERM, KILL_GRACE)
            code = self.proc.wait()
        # Nothing the run started may outlive it (and keep its pipes open).
        stop_group(self.pid, signal.SIGTERM, KILL_GRACE)
        gevent.joinall(readers, timeout=1.0)
        gevent.killall(readers, block=False)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        err = b"".join(stderr).decode("utf-8", "replace").rstrip()
        tail = f":\n{err}" if err else ""
        if self.killing == "timeout":
            self.finish(began, False, f"timeout ({spelled(self.spec.timeout)})")
            self.log.error("%s killed: still running after its timeout of %s%s", what,
                           spelled(self.spec.timeout), tail)
        elif self.killing:
            self.finish(began, False, f"stopped ({self.killing})")
            self.log.warning("%s stopped after %s: %s%s", what, human(self.duration),
                             self.killing, tail)
        elif code == 0:
            self.finish(began, True, "ok")
            self.log.info("%s ok in %s%s", what, human(self.duration), tail)
        else:
            self.finish(began, False, describe_exit(code))
            self.log.error("%s failed after %s: %s%s", what, human(self.duration),
                           describe_exit(code), tail)

    def start(self) -> None:
        env = dict(os.environ, PYD_JOB=self.spec.name)
        if self.spec.command is not None:
            self.proc = spawn(self.spec.argv(), resolve(self.spec.user, self.spec.group),
                              self.spec.cwd, env)
        else:
            # pyd.jobrun starts as root and drops privileges itself, after its own imports;
            # only then does it put the job's cwd and pythonpath on sys.path.
            self.proc = spawn(self.spec.argv(), None, "/", python_environ(env))
        self.pid = self.proc.pid

    def finish(self, began: float, ok: bool, outcome: str) -> None:
        self.duration = time.monotonic() - began
        self.ok, self.outcome = ok, outcome

    def _line(self, line: str) -> None:
        self.log.info("%s", line, extra={"stream": "stdout"})

    def stop(self, why: str) -> None:
        """Kill the run's process group (TERM, then KILL); the run records why."""
        if self.pid is not None and not self.done.is_set():
            self.killing = why
            stop_group(self.pid, signal.SIGTERM, KILL_GRACE)


def _keep(lines: list[bytes], line: str) -> None:
    lines.append(line.encode() + b"\n")
    while sum(len(x) for x in lines) > STDERR_KEPT and len(lines) > 1:
        lines.pop(0)


# -- jobs and the scheduler ----------------------------------------------------------------------

class Job:
    """A Cron section as the scheduler keeps it: its schedule, next tick, runs and history."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.schedule = spec.make_schedule()
        self.next_due: float | None = None  # on the schedule's clock
        self.running: list[Run] = []
        self.queued = False
        self.last: Run | None = None
        self.runs = self.failures = self.skipped = 0
        self.log = logging.getLogger(f"cron.{spec.name}")

    def next_wall(self) -> float | None:
        """The next tick on the wall clock, for people."""
        if self.next_due is None or self.schedule.clock is time.time:
            return self.next_due
        return time.time() + (self.next_due - self.schedule.clock())


class Scheduler:
    """Every Cron section: one timing greenlet per job, the runs they start, `cron list|run`."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.timers: dict[str, gevent.Greenlet] = {}
        self.runs: set[Run] = set()
        self.greenlets = gevent.pool.Group()
        self.stopping = False

    def configure(self, config) -> None:
        """Schedule new jobs, forget removed ones, reschedule the changed ones (their runs in
        progress go on)."""
        specs = {s.name: JobSpec.from_section(config, s) for s in config.of_kind("Cron")}
        for name in list(self.jobs):
            if specs.get(name) != self.jobs[name].spec:
                self.timers.pop(name).kill(block=False)
                old = self.jobs.pop(name)
                if name in specs:
                    log.info("Cron:%s changed; rescheduled", name)
                    job = self.jobs[name] = Job(specs[name])
                    job.last, job.runs, job.failures = old.last, old.runs, old.failures
                    job.skipped = old.skipped
                    job.running = old.running
        for name, spec in specs.items():
            if name not in self.jobs:
                self.jobs[name] = Job(spec)
            if name not in self.timers:
                self.timers[name] = self.greenlets.spawn(self.keep_time, self.jobs[name])

    def keep_time(self, job: Job) -> None:
        """The timing loop of one job: sleep until the tick, fire once, repeat."""
        clock = job.schedule.clock
        try:
            job.next_due = job.schedule.next_after(clock())
        except (ValueError, KeyError) as e:
            job.log.error("the schedule never fires: %s", e)
            return
        while True:
            # Short naps: the wall clock may be stepped while we sleep.
            while (left := job.next_due - clock()) > 0:
                gevent.sleep(min(left, 30.0))
            due = job.next_due
            self.fire(job)
            job.next_due = job.schedule.next_after(max(due, clock()))

    def fire(self, job: Job) -> None:
        if job.spec.jitter:
            self.greenlets.spawn_later(random.uniform(0, job.spec.jitter), self.start_run,
                                       job, "schedule")
        else:
            self.start_run(job, "schedule")

    def start_run(self, job: Job, trigger: str) -> Run | str:
        """Start a run now, or say why not (overlap)."""
        if self.stopping:
            return "not started: pyd is stopping"
        if job.running and job.spec.overlap != "allow" and trigger != "queued":
            pids = ", ".join(str(r.pid) for r in job.running)
            if job.spec.overlap == "skip" or trigger == "manual":
                job.skipped += 1
                why = f"skipped: the last run (pid {pids}) is still running"
                job.log.warning("%s", why)
                return why
            if job.queued:
                job.skipped += 1
                job.log.warning("skipped: a run already waits for the one still running "
                                "(pid %s)", pids)
                return "skipped: a run is already queued"
            job.queued = True
            job.log.info("queued: the last run (pid %s) is still running", pids)
            return "queued"
        run = Run(job.spec, trigger)
        job.running.append(run)
        self.runs.add(run)
        self.greenlets.spawn(self._execute, job, run)
        return run

    def _execute(self, job: Job, run: Run) -> None:
        try:
            run.execute()
        finally:
            job.running.remove(run)
            self.runs.discard(run)
            job.last = run
            job.runs += 1
            job.failures += not run.ok
            run.done.set()
        current = self.jobs.get(job.spec.name)
        if current is not None and current.queued and not current.running:
            current.queued = False
            self.start_run(current, "queued")

    def run_now(self, name: str) -> Run | str:
        job = self.jobs.get(name)
        if job is None:
            raise KeyError(name)
        return self.start_run(job, "manual")

    def status(self) -> list[dict]:
        out = []
        for job in self.jobs.values():
            last = job.last
            out.append({
                "name": job.spec.name, "schedule": str(job.schedule), "next": job.next_wall(),
                "running": [r.pid for r in job.running], "queued": job.queued,
                "runs": job.runs, "failures": job.failures, "skipped": job.skipped,
                "last_start": last.started if last else None,
                "last_outcome": last.outcome if last else None,
                "last_duration": last.duration if last else None})
        return out

    def stop(self, graceful: bool, timeout: float) -> None:
        """No more ticks; runs in progress finish (graceful, up to `timeout`) or are killed."""
        self.stopping = True  # and no queued run starts when the last one ends
        for timer in self.timers.values():
            timer.kill(block=False)
        self.timers.clear()
        runs = list(self.runs)
        if graceful and runs:
            log.info("waiting up to %s for %d job runs to finish", human(timeout), len(runs))
            deadline = time.monotonic() + timeout
            for run in runs:
                run.done.wait(max(0.0, deadline - time.monotonic()))
        gevent.joinall([gevent.spawn(r.stop, "pyd is stopping") for r in list(self.runs)])
        for run in runs:
            run.done.wait(KILL_GRACE + 5.0)
        self.greenlets.kill(block=False)

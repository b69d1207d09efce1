"""Process sections: supervised external programs, and the child-process plumbing jobs share.

Each program copy runs in its own process group as its configured user, with stdout and stderr
logged line by line to channel `process.NAME`. It is restarted by policy (always, on-failure,
never) after `restart-delay`, doubled on each quick crash up to `restart-delay-max`. Stopping
sends `stop-signal` to the whole group, then SIGKILL after `stop-timeout`: grandchildren go too.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gevent
import gevent.event
import gevent.subprocess as subprocess

from pyd.system.backoff import Backoff
from pyd.system.daemon import scrub_environ
from pyd.system.privileges import Identity, PrivilegeError, resolve

KILL_GRACE = 2.0  # after the polite signal to a run or a leftover group: SIGKILL
MAX_LINE = 64 * 1024

log = logging.getLogger("pyd.service")


# -- child processes: spawn as a user in a new group, stop the whole group -----------------------

def spawn(argv: list[str], identity: Identity | None, cwd: str | None,
          env: dict[str, str]) -> subprocess.Popen:
    """Start `argv` in a new process group as `identity`, stdout and stderr piped to us.

    The service stays root so that each program can take its own user: setgroups, setgid and
    setuid happen in the child, between fork and exec.
    """
    kw: dict = {}
    env = dict(env)
    scrub_environ(env)  # what only the master holds (NOTIFY_SOCKET...) never reaches a program
    if identity is not None and identity.switch:
        kw.update(user=identity.uid, group=identity.gid,
                  extra_groups=os.getgrouplist(identity.name, identity.gid))
        env = dict(env, HOME=identity.home, USER=identity.name, LOGNAME=identity.name)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, env=env, process_group=0, **kw)


def group_alive(pgid: int) -> bool:
    """Whether any process (a zombie included) is left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, sig: int, timeout: float) -> bool:
    """Send `sig` to the group, SIGKILL what is left after `timeout`; True if it went in time.

    Waits (cooperatively) until the group is empty: the leader and every process it started
    that stayed in the group, however deep.
    """
    if not group_alive(pgid):
        return True
    signal_group(pgid, sig)
    if _wait_group(pgid, timeout):
        return True
    signal_group(pgid, signal.SIGKILL)
    _wait_group(pgid, 5.0)
    return False


def _wait_group(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(0.02)
    return True


def pump(stream, emit: Callable[[str], None]) -> None:
    """Read a child's pipe line by line until it closes; each line to `emit`."""
    try:
        for raw in iter(partial(stream.readline, MAX_LINE), b""):
            emit(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass  # closed under us: the run or program is gone


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def spelled(seconds: float) -> str:
    """A configured duration as the config language writes it: 1s, 1m 30s, 250ms."""
    from pyd.config.values import Duration

    return Duration().format_one(seconds)


def human(seconds: float) -> str:
    """A duration for the log and the status tables: 0.35s, 12.0s, 3m 5s."""
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    from pyd.config.values import Duration

    return Duration().format_one(float(int(seconds)))


# -- Process sections ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProgramSpec:
    """What decides how a program runs; a different spec after `pyd update` restarts it."""

    name: str
    argv: tuple[str, ...]
    numprocs: int
    user: str | None
    group: str | None
    cwd: str
    env: tuple[tuple[str, str], ...]
    restart: str
    restart_delay: float
    restart_delay_max: float
    min_uptime: float
    stop_signal: int
    stop_timeout: float

    @classmethod
    def from_section(cls, config, section) -> ProgramSpec:
        s = section.settings
        user, group = s["user"], s["group"]
        if user is None:
            user, group = config.user, group if group is not None else config.group
        env = []
        for block in section.blocks("env"):
            env += [(e.name, " ".join(e.words)) for e in block.extra]
        return cls(section.name, tuple(shlex.split(s["command"])), s["numprocs"], user, group,
                   s["cwd"] or config.cwd or os.getcwd(), tuple(env), s["restart"],
                   s["restart-delay"], s["restart-delay-max"], s["min-uptime"],
                   getattr(signal, "SIG" + s["stop-signal"]), s["stop-timeout"])


class Instance:
    """One copy of a program: started, watched, restarted with backoff, stopped as a group."""

    def __init__(self, spec: ProgramSpec, number: int):
        self.spec = spec
        self.number = number
        self.label = spec.name if spec.numprocs == 1 else f"{spec.name}:{number}"
        self.log = logging.getLogger(f"process.{spec.name}")
        self.state = "starting"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0  # wall clock, for status
        self.restarts = 0
        self.last_exit = ""
        self.last_pid: int | None = None
        self.backoff = Backoff(spec.restart_delay, spec.restart_delay_max)  # quick crashes
        self.stopping = False
        self.wake = gevent.event.Event()
        self.greenlet = gevent.spawn(self.supervise)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.state == "running" else None

    def supervise(self) -> None:
        while not self.stopping:
            ran = self.run_once()
            if self.stopping:
                break
            if not self.should_restart():
                self.state = "exited"
                self.log.info("%s will not be restarted (restart %s)", self.label,
                              self.spec.restart)
                return
            if ran < self.spec.min_uptime:  # a quick crash: back off further each time
                wait = self.backoff.failed()
            else:
                self.backoff.reset()
                wait = self.spec.restart_delay
            self.state = "backoff"
            self.log.warning("%s (pid %s) exited after %s: %s; restarting in %s", self.label,
                             self.last_pid, human(ran), self.last_exit, human(wait))
            self.wake.wait(wait)
            self.wake.clear()
            if not self.stopping:
                self.restarts += 1

    def run_once(self) -> float:
        """Start the program and wait for it to exit; how long it ran."""
        self.state = "starting"
        began = time.monotonic()
        try:
            identity = resolve(self.spec.user, self.spec.group)
            env = dict(os.environ, PYD_PROCESS_NAME=self.spec.name,
                       PYD_PROCESS_NUMBER=str(self.number), **dict(self.spec.env))
            self.proc = spawn(list(self.spec.argv), identity, self.spec.cwd, env)
        except (OSError, PrivilegeError, ValueError) as e:
            self.last_exit = f"cannot start: {e}"
            self.last_pid = None
            self.log.error("%s cannot start: %s", self.label, e)
            return time.monotonic() - began
        self.started = time.time()
        self.last_pid = self.proc.pid
        self.state = "running"
        if self.stopping:  # stop() came while we were starting: it found nothing to stop
            stop_group(self.proc.pid, self.spec.stop_signal, self.spec.stop_timeout)
        self.log.info("%s started (pid %d): %s", self.label, self.proc.pid,
                      shlex.join(self.spec.argv))
        prefix = "" if self.spec.numprocs == 1 else f"[{self.number}] "
        readers = [gevent.spawn(pump, self.proc.stdout, partial(self._line, prefix, "stdout")),
                   gevent.spawn(pump, self.proc.stderr, partial(self._line, prefix, "stderr"))]
        code = self.proc.wait()
        ran = time.monotonic() - began
        self.last_exit = describe_exit(code)
        if not self.stopping:
            # The leader is gone; whatever it left in its group must not outlive it.
            if group_alive(self.proc.pid):
                self.log.warning("%s exited, leaving processes in its group; stopping them",
                                 self.label)
                stop_group(self.proc.pid, self.spec.stop_signal, self.spec.stop_timeout)
        gevent.joinall(readers, timeout=1.0)
        gevent.killall(readers, block=False)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        return ran

    def _line(self, prefix: str, stream: str, line: str) -> None:
        self.log.info("%s%s", prefix, line, extra={"stream": stream})

    def should_restart(self) -> bool:
        if self.spec.restart == "always":
            return True
        if self.spec.restart == "never":
            return False
        return self.last_exit != "exit status 0"

    def stop(self, hard: bool = False) -> None:
        """Stop the program (its whole group) and the supervising greenlet; waits for both."""
        self.stopping = True
        self.wake.set()
        proc = self.proc
        if proc is not None and self.state == "running":
            self.state = "stopping"
            if hard:
                stop_group(proc.pid, signal.SIGKILL, 5.0)
            elif not stop_group(proc.pid, self.spec.stop_signal, self.spec.stop_timeout):
                self.log.warning("%s (pid %d) did not stop within %s of SIG%s; killed",
                                 self.label, proc.pid, spelled(self.spec.stop_timeout),
                                 signal.Signals(self.spec.stop_signal).name[3:])
            self.log.info("%s (pid %d) stopped", self.label, proc.pid)
        self.greenlet.join()
        self.state = "stopped"

    def status(self) -> dict:
        running = self.state == "running"
        return {"name": self.label, "pid": self.pid, "state": self.state,
                "uptime": time.time() - self.started if running else None,
                "restarts": self.restarts, "last_exit": self.last_exit}


class Supervisor:
    """Every Process section of the config, kept as the config says."""

    def __init__(self) -> None:
        self.programs: dict[str, list[Instance]] = {}
        self.specs: dict[str, ProgramSpec] = {}

    def configure(self, config) -> None:
        """Start new programs, stop removed ones, restart the ones whose section changed."""
        specs = {s.name: ProgramSpec.from_section(config, s) for s in config.of_kind("Process")}
        gone = [name for name in self.programs if specs.get(name) != self.specs.get(name)]
        self._stop([i for name in gone for i in self.programs.pop(name)])
        for name in gone:
            if name in specs:
                log.info("Process:%s changed; restarting it", name)
        for name, spec in specs.items():
            if name not in self.programs:
                self.programs[name] = [Instance(spec, n) for n in range(1, spec.numprocs + 1)]
        self.specs = specs

    def restart(self, name: str) -> list[Instance]:
        """Stop and start a program (NAME) or one copy of it (NAME:N), backoff forgotten."""
        base, _, number = name.partition(":")
        instances = self.programs.get(base)
        if instances is None:
            raise KeyError(name)
        chosen = [i for i in instances if not number or str(i.number) == number]
        if not chosen:
            raise KeyError(name)
        self._stop(chosen)
        for old in chosen:
            new = Instance(old.spec, old.number)
            new.restarts = old.restarts
            instances[instances.index(old)] = new
        return [i for i in instances if i.number in {c.number for c in chosen}]

    def status(self) -> list[dict]:
        return [i.status() for instances in self.programs.values() for i in instances]

    def stop_all(self, hard: bool = False) -> None:
        self._stop([i for instances in self.programs.values() for i in instances], hard)
        self.programs.clear()
        self.specs = {}

    @staticmethod
    def _stop(instances: list[Instance], hard: bool = False) -> None:
        """In parallel: each gets its own stop-timeout, not the sum of them all."""
        gevent.joinall([gevent.spawn(i.stop, hard) for i in instances])

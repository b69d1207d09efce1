"""One gevent worker: drops privileges, loads its apps and pools, serves, counts, retires, drains.

Forked by the master (or run alone by `pyd runworker`). It reports through its scoreboard slot
and learns what to do from signals: QUIT drain and exit, TERM/INT close and exit, USR1 reopen
logs, ABRT (request-timeout) log every greenlet's stack and exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Mapping

import gevent
import gevent.event
from gevent.util import format_run_info
from setproctitle import setproctitle

from pyd.apps import (
    AppInstance,
    RefError,
    import_ref,
    make_app,
    privileged_imports,
    set_privileged_path,
)
from pyd.config import Config, ConfigError, Problem
from pyd.ipc import scoreboard as sb
from pyd.ipc.counters import Layout, Writer
from pyd.ipc.modules import report_modules
from pyd.log import reopen as log_reopen
from pyd.log.capture import Capture
from pyd.metrics.registry import layout_for, served_by_master
from pyd.net.listeners import Listener
from pyd.pools import POOL_TYPES
from pyd.pools.base import Pool, UserPool, label
from pyd.system import memory, proc
from pyd.system.daemon import scrub_environ
from pyd.system.privileges import PrivilegeError, drop, resolve

log = logging.getLogger("pyd.worker")

EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # could not start (privileges, cwd, a pool): do not respawn in a loop
EXIT_APP_LOAD_ERROR = 4  # an app failed to import or init
EXIT_TIMEOUT = 5  # killed itself after logging a stuck request

MEMORY_SAMPLES = 3  # consecutive samples over max-memory-usage before retiring
TICK = 1.0


class BootError(Exception):
    """The worker cannot start; `message` is what `pyd start` shows, `code` the exit status."""

    def __init__(self, message: str, code: int = EXIT_BOOT_ERROR):
        super().__init__(message)
        self.message, self.code = message, code


def pool_factory(section):
    """The class that serves a pool section: built-in pools by name, users' by `class`."""
    if section.cls in POOL_TYPES:
        return import_ref(POOL_TYPES[section.cls])
    return UserPool.create


def build_pools(config: Config, listeners: Mapping[str, Listener], apps: Mapping[str, object],
                worker=None, privileged: bool | None = None) -> list[Pool]:
    """Create and load the pools (only privileged or only unprivileged ones when asked)."""
    pools = []
    for section in config.pools:
        if privileged is not None and bool(section.settings.get("privileged")) != privileged:
            continue
        if served_by_master(section):
            continue
        mine = [listeners[str(a)] for a in section.settings["listen"]]
        try:
            with privileged_imports() if privileged else contextlib.nullcontext():
                pool = pool_factory(section)(section, mine, worker)
                pool.load(apps)
        except (RefError, ConfigError) as e:
            raise BootError(_at(section, e), EXIT_APP_LOAD_ERROR) from None
        pools.append(pool)
    return pools


def build_apps(config: Config, privileged: bool | None = None) -> dict[str, AppInstance]:
    if privileged and isinstance(config, Config):  # (an update builds from its sections only)
        set_privileged_path(app_path(config))
    apps = {}
    for section in config.apps:
        if privileged is not None and bool(section.settings.get("privileged")) != privileged:
            continue
        try:
            apps[section.name] = make_app(section)
        except (RefError, ConfigError) as e:
            raise BootError(_at(section, e), EXIT_APP_LOAD_ERROR) from None
        except Exception as e:
            raise BootError(Problem(f"{section.header}: init() failed: "
                                    f"{type(e).__name__}: {e}", section.pos).format(),
                            EXIT_APP_LOAD_ERROR) from None
    return apps


def _at(section, e: Exception) -> str:
    """An app loading error, placed at the directive that named the app."""
    if isinstance(e, ConfigError):
        return e.format()
    for name in ("class", "app"):
        if section.settings.is_set(name) if name in section.settings else False:
            return Problem(str(e), section.settings.origin(name).pos).format()
    for child in section.children:
        if "app" in child.settings and child.settings.is_set("app"):
            ref = child.settings["app"]
            if ref in str(e):
                return Problem(str(e), child.settings.origin("app").pos).format()
    return Problem(str(e), section.pos).format()


def app_path(config: Config) -> tuple[str, ...]:
    """Where apps are imported from: `pythonpath`, then `cwd` (inside the chroot: nothing the
    master could use)."""
    if config.chroot:
        return ()
    return (*config.pythonpath, config.cwd or os.getcwd())


def enter_cwd(config: Config) -> None:
    """Where apps are imported from: `cwd` (made current) and `pythonpath`, first on sys.path.

    Only on the workers' side of the privilege drop: root (the master, the service) never has
    them on sys.path, and imports privileged apps through privileged_imports() alone.
    """
    cwd = config.cwd or os.getcwd()
    try:
        os.chdir(cwd)
    except OSError as e:
        raise BootError(f"cannot enter cwd {cwd}: {e.strerror}") from None
    for path in [cwd, *reversed(config.pythonpath)]:
        if path not in sys.path:
            sys.path.insert(0, path)


class Worker:
    def __init__(self, config: Config, number: int, slot: int, scoreboard: sb.Scoreboard,
                 listeners: Mapping[str, Listener], *, apps: Mapping[str, AppInstance] = (),
                 pools: list[Pool] = (), master_pid: int | None = None,
                 report_fd: int | None = None):
        self.config = config
        self.number = number
        self.slot = slot
        self.scoreboard = scoreboard
        self.listeners = listeners
        self.apps: dict[str, AppInstance] = dict(apps or {})
        self.pools: list[Pool] = list(pools or [])
        self.master_pid = master_pid
        self.report_fd = report_fd  # autoreload: where to report our source files
        self.requests = 0
        self.inflight: dict[int, tuple[float, str]] = {}
        self._next_token = 0
        self.last_activity = time.monotonic()
        jitter = config.max_requests_jitter
        self.request_limit = (config.max_requests + random.randint(0, jitter)
                              if config.max_requests else 0)
        self.memory_over = 0
        self.retiring = False
        self.stopping = False
        self.stop_event = gevent.event.Event()
        self.graceful = True
        self.started = time.time()
        self.capture = Capture()
        # This slot's counters block, laid out as the master laid it out for this config.
        board = scoreboard
        # Counted only where a Pool:Metrics will read them: a few stores per request otherwise
        # spent for nobody.
        self.counting = any(s.cls == "Metrics" for s in config.pools)
        self.counters = Writer(layout_for(config, board.counters_capacity)
                               if board.counters_capacity else Layout(),
                               board.counters_buffer(slot) if board.counters_capacity
                               else bytearray(8))

    # -- boot -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Boot, serve until told to stop, drain, exit. Never returns."""
        code = EXIT_OK
        try:
            self.boot()
        except BootError as e:
            self.scoreboard.set_message(self.slot, e.message)
            log.error("worker %d failed to start:\n%s", self.number, e.message)
            self._exit(e.code)
        except Exception as e:  # anything else at boot: report it the same way
            message = f"worker boot failed: {type(e).__name__}: {e}"
            self.scoreboard.set_message(self.slot, message)
            log.exception("worker %d failed to start", self.number)
            self._exit(EXIT_BOOT_ERROR)
        try:
            self.serve()
        except Exception:
            log.exception("worker %d crashed", self.number)
            code = EXIT_BOOT_ERROR
        self._exit(code)

    def boot(self) -> None:
        names = " ".join(label(s) for s in self.config.pools if not served_by_master(s))
        setproctitle(f"pyd: worker {self.number} [{names}]")
        scrub_environ()  # NOTIFY_SOCKET and the upgrade's descriptors are the master's
        self.capture.start()  # print(), tracebacks: into the log when a daemon's null
        memory.tune()
        self._install_signals()
        try:
            drop(resolve(self.config.user, self.config.group), self.config.chroot)
        except (PrivilegeError, OSError) as e:
            raise BootError(f"cannot drop privileges: {e}") from None
        enter_cwd(self.config)
        self.apps.update(build_apps(self.config, privileged=False))
        for pool in self.pools:  # preloaded by the master: adopt them
            pool.worker = self
        self.pools += build_pools(self.config, self.listeners, self.apps, self,
                                  privileged=False)
        for app in self.apps.values():
            app.on_ready()
        for pool in self.pools:
            pool.on_ready()

    def _install_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                    signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        gevent.signal_handler(signal.SIGQUIT, self.stop, True)
        gevent.signal_handler(signal.SIGTERM, self.stop, False)
        gevent.signal_handler(signal.SIGINT, self.stop, False)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        # Not through the hub: the hub may be the thing that is stuck.
        signal.signal(signal.SIGABRT, self._stuck)

    # -- serving --------------------------------------------------------------------------------

    def serve(self) -> None:
        for pool in self.pools:
            pool.start()
        self.report(sb.IDLE)
        if self.config.autoreload and self.report_fd is not None:
            report_modules(self.report_fd)
        log.info("worker %d (pid %d) serving %s", self.number, os.getpid(),
                 ", ".join(f"{p.name} on {', '.join(map(str, p.listeners))}" for p in self.pools)
                 or "nothing")
        while not self.stop_event.wait(TICK):
            self.tick()
        self.drain()

    def tick(self) -> None:
        if self.master_pid is not None and os.getppid() != self.master_pid:
            log.warning("worker %d: the master (pid %d) is gone; stopping", self.number,
                        self.master_pid)
            self.scoreboard.set_state(self.slot, sb.STOPPING, sb.R_ORPHANED)
            self.stop(True)
            return
        if not self.retiring:
            self.check_limits()
        self.report()

    def report(self, state: int | None = None) -> None:
        now = time.time()
        oldest = 0.0
        if self.inflight:
            age = time.monotonic() - min(t for t, _ in self.inflight.values())
            oldest = now - age
        if state is None and not self.retiring and not self.stopping:
            state = sb.BUSY if self.inflight else sb.IDLE
        if state is not None:
            first = self.scoreboard.state(self.slot) == sb.STARTING
            self.scoreboard.set_state(self.slot, state)
            if first:
                self.scoreboard.notify()
        connections = sum(len(p.connections) for p in self.pools)
        counters = self.counters
        counters.in_flight(len(self.inflight))
        for p in self.pools:
            conns = p.connections
            parked = sum(1 for c in conns if not isinstance(c, gevent.Greenlet))
            counters.connections(p.name, len(conns), parked, getattr(p, "accepted", 0))
        self.scoreboard.update(self.slot, now, oldest, self.requests, self._rss(), connections,
                               len(self.inflight))

    def check_limits(self) -> None:
        limit = self.config.max_memory_usage
        if limit:
            if self._rss() > limit:
                self.memory_over += 1
                if self.memory_over >= MEMORY_SAMPLES:
                    self.retire(sb.R_MEMORY, f"RSS {self._rss() >> 20}M over "
                                             f"max-memory-usage {limit >> 20}M")
                    return
            else:
                self.memory_over = 0
        idle = self.config.max_idle
        if idle and not self.inflight and time.monotonic() - self.last_activity > idle:
            self.retire(sb.R_IDLE, f"idle for more than {idle:g}s")

    def retire(self, reason: int, why: str) -> None:
        """Ask the master for a replacement; keep serving until it tells us to drain."""
        if self.retiring or self.stopping:
            return
        self.retiring = True
        log.info("worker %d (pid %d) retiring: %s", self.number, os.getpid(), why)
        self.scoreboard.set_state(self.slot, sb.RETIRING, reason)
        self.scoreboard.notify()

    # -- what pools call per request ------------------------------------------------------------

    def request_started(self, description: str) -> int:
        self._next_token += 1
        self.inflight[self._next_token] = (time.monotonic(), description)
        return self._next_token

    def request_finished(self, token: int, record=None) -> None:
        """`record` (a web.exchange.RequestRecord) is counted in this slot's block."""
        self.inflight.pop(token, None)
        if record is not None and self.counting:
            self.counters.record(record)
        self.requests += 1
        self.last_activity = time.monotonic()
        if self.request_limit and self.requests >= self.request_limit and not self.retiring:
            self.retire(sb.R_REQUESTS, f"served {self.requests} requests "
                                       f"(max-requests {self.config.max_requests} + jitter)")

    # -- stopping -------------------------------------------------------------------------------

    def stop(self, graceful: bool) -> None:
        if self.stopping:
            if not graceful and self.graceful:
                self.graceful = False  # a fast stop overrides a drain in progress
                for pool in self.pools:
                    pool.close_all()
            return
        self.stopping = True
        self.graceful = graceful
        self.scoreboard.set_state(self.slot, sb.STOPPING)
        self.stop_event.set()

    def drain(self) -> None:
        """Stop accepting, let in-flight work finish (until graceful-timeout), then exit."""
        timeout = self.config.graceful_timeout if self.graceful else 1.0
        deadline = time.monotonic() + timeout
        for pool in self.pools:
            pool.stop_accepting()
        log.info("worker %d (pid %d) %s", self.number, os.getpid(),
                 "draining" if self.graceful else "stopping")
        pending_apps = dict(self.apps)
        asked_apps = 0.0
        while True:
            pools_done = all([pool.shutdown(self.graceful) for pool in self.pools])
            if pools_done and pending_apps and time.monotonic() - asked_apps >= 1.0:
                asked_apps = time.monotonic()
                for name, app in list(pending_apps.items()):
                    try:
                        if app.on_shutdown(self.graceful):
                            del pending_apps[name]
                    except Exception:
                        log.exception("app %s: on_shutdown failed", name)
                        del pending_apps[name]
            if pools_done and not pending_apps:
                break
            if time.monotonic() > deadline:
                left = sum(len(p.connections) for p in self.pools)
                log.warning("worker %d: graceful-timeout passed with %d connections and %d apps "
                            "still busy; closing them", self.number, left, len(pending_apps))
                break
            self.report()
            gevent.sleep(0.05)
        for pool in self.pools:
            pool.close_all()
        self.report(sb.STOPPING)

    def reopen_logs(self) -> None:
        log_reopen()

    def _stuck(self, signum: int, frame) -> None:
        """request-timeout: the master asks us to show where the time goes, then we go."""
        now = time.monotonic()
        lines = [f"worker {self.number} (pid {os.getpid()}) killed by request-timeout; "
                 "requests in flight:"]
        for started, description in sorted(self.inflight.values()):
            lines.append(f"  {now - started:8.1f}s  {description}")
        lines.append("the current stack:")
        lines += ["  " + line for line in "".join(traceback.format_stack(frame)).splitlines()]
        lines.append("every greenlet:")
        lines += ["  " + line for line in format_run_info(current_thread_ident=None)]
        log.error("\n".join(lines))
        self.scoreboard.set_state(self.slot, sb.STOPPING, sb.R_TIMEOUT)
        self._exit(EXIT_TIMEOUT)

    def _rss(self) -> int:
        return proc.rss()

    def _exit(self, code: int) -> None:
        self.capture.stop()  # the last lines (a final traceback) before the log shuts down
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

"""The master (the arbiter): preloads as root, forks workers and keeps them right.

Signal handlers and control commands only enqueue; the loop dispatches to short verbs:
spawn_worker, kill_worker, reap, murder (stuck requests), manage (count and recycling), scale,
reload, update, upgrade, stop. What to do with the workers is decided by the fleet policy
(pyd/master/fleet.py, no I/O); the master reads the scoreboard for it and does what it says.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections import Counter, deque

import gevent
import gevent.os
import gevent.pool
from gevent.event import Event

from pyd.config import Config, ConfigError
from pyd.ipc import scoreboard as sb
from pyd.ipc import startline
from pyd.ipc.signals import MASTER_RECEIVES, STOPS, stop_deadlines
from pyd.master import fleet
from pyd.master.boot import ApplyError, StartResult, apply_config, boot_master
from pyd.master.fleet import BOOT_TIMEOUT, WorkerInfo
from pyd.master.metrics_server import Metrics
from pyd.net import listeners as lst
from pyd.service.main import ServiceHandle
from pyd.worker.main import EXIT_BOOT_ERROR, Worker

log = logging.getLogger("pyd.master")

STEP_ERROR_EVERY = 10.0  # a loop step failing again and again logs its traceback this often

SIGNALS = ("HUP", "QUIT", "INT", "TERM", "USR1", "USR2", "TTIN", "TTOU")


class Master:
    def __init__(self, config: Config, overrides: list = (), argv_overrides: list[str] = (),
                 ready_fd: int | None = None, tty: bool = False):
        self.config = config
        # Re-read (update) and re-executed (upgrade) by this name, whatever the cwd is then.
        self.config_file = os.path.abspath(config.path)
        self.overrides = list(overrides)
        self.argv_overrides = list(argv_overrides)
        self.ready_fd = ready_fd
        self.tty = tty
        self.pid = os.getpid()
        self.started = time.time()
        self.workers: dict[int, WorkerInfo] = {}
        self.listeners: dict[str, lst.Listener] = {}
        self.apps: dict = {}
        self.pools: list = []
        self.target = 0
        self.generation = 1
        self.generation_reason = sb.R_RELOAD
        self.boot_errors: dict[int, str] = {}  # generation -> the last boot error message
        self.fleet = fleet.Fleet(fleet.Limits.of(config))
        self.backoff = self.fleet.backoff  # number -> Backoff, after a failed boot
        self.exits: Counter[str] = Counter()
        self.signals: deque[str] = deque()
        self.exited: deque[tuple[int, int]] = deque()
        self.wakeup = Event()
        self.stopping: str | None = None  # None, "graceful", "fast", "hard", "upgrade"
        self.stop_deadline = 0.0
        self.scoreboard: sb.Scoreboard | None = None
        self.control = None
        self.pidfile = None
        self.greenlets = gevent.pool.Group()
        self._signal_watchers: list = []
        self.pidfile_pending = False
        self.start_error = ""
        self.workers_told = False  # stopping: the workers were signalled (after the service)
        self.step_errors: dict[str, tuple[str, float, int]] = {}  # step -> (error, logged, n)
        self.service = ServiceHandle(self)  # jobs, supervised programs, autoreload
        self.metrics = Metrics(self)  # the workers' counters, Pool:Metrics

    # -- boot -----------------------------------------------------------------------------------

    def run(self) -> int:
        """Boot, serve until stopped, clean up. Returns the exit status."""
        result = boot_master(self)
        if not result.ok:
            self.start_error = result.message
            self.notify_ready(error=result.message or "the master could not start")
            self.shutdown(unlink=True)
            logging.shutdown()  # the log's last lines reach their targets before the exit
            return 1
        self.notify_ready()
        log.info("pyd master (pid %d) serving with %d workers, config %s", self.pid,
                 self.target, self.config.path)
        self.loop()
        self.shutdown(unlink=self.stopping != "upgrade")
        log.info("pyd master (pid %d) exits", self.pid)
        logging.shutdown()  # the daemon leaves by os._exit: no atexit would flush the log
        return 0

    def notify_ready(self, error: str = "") -> None:
        """Tell systemd and whoever waits on the start pipe that this master serves, or why not."""
        from pyd.system.daemon import sd_notify

        if not error:
            sd_notify(f"READY=1\nMAINPID={self.pid}\nSTATUS=serving with {self.target} workers")
        if self.ready_fd is None:
            return
        try:
            os.write(self.ready_fd, startline.error_line(error) if error
                     else startline.ready_line(self.pid, self.target))
            os.close(self.ready_fd)
        except OSError:
            pass
        self.ready_fd = None

    def watch_workers(self) -> None:
        """Wake the loop when a worker writes to the scoreboard's pipe (ready, retiring)."""
        fd = self.scoreboard.wake_r

        def read() -> None:
            while True:
                try:
                    gevent.os.nb_read(fd, 4096)
                except OSError:
                    return
                self.wakeup.set()

        self.greenlets.spawn(read)

    def install_signals(self) -> None:
        for name in SIGNALS:
            signum = getattr(signal, "SIG" + name)
            self._signal_watchers.append(gevent.signal_handler(signum, self.enqueue, name))

    def enqueue(self, name: str) -> None:
        """Signal handlers only enqueue; the loop acts."""
        self.signals.append(name)
        self.wakeup.set()

    def wait_for_workers(self, timeout: float = BOOT_TIMEOUT) -> StartResult:
        """At start: every worker serving, or the first boot error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.reap()
            if self.boot_errors:
                return StartResult(False, next(iter(self.boot_errors.values())))
            if self.stopping:
                return StartResult(False, "stopped while starting")
            self.sync_phases()
            if self.workers and all(w.phase == "serving" for w in self.workers.values()):
                return StartResult(True)
            self.wakeup.wait(0.05)
            self.wakeup.clear()
        return StartResult(False, f"workers did not start within {timeout:.0f}s")

    # -- the loop -------------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            self.wakeup.wait(0.25)
            self.wakeup.clear()
            self.metrics.turn()
            while self.signals:
                name = self.signals.popleft()
                log.info("master got SIG%s", name)
                self.step("handle_" + name.lower())
            self.step("reap")
            if self.pidfile_pending:
                self.step("take_pidfile")
            if self.stopping:
                if self.service.running:  # it stops first; the workers wait for it
                    self.step("service.enforce_deadline", self.service.enforce_deadline)
                    continue
                if not self.workers_told:
                    self.step("stop_workers", self.stop_workers, True)
                if not self.workers:
                    return
                self.step("enforce_stop_deadline")
                continue
            self.step("murder")
            self.step("manage")
            self.step("scale")
            self.step("service.manage", self.service.manage)

    def step(self, name: str, fn=None, *args) -> None:
        """One step of the loop: an error in it is logged with its traceback and costs this
        turn of that step, never the master. The same error again is logged at most every
        STEP_ERROR_EVERY seconds, with how often it happened."""
        try:
            (fn or getattr(self, name))(*args)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            now = time.monotonic()
            last, logged, count = self.step_errors.get(name, ("", 0.0, 0))
            if error == last and now - logged < STEP_ERROR_EVERY:
                self.step_errors[name] = (last, logged, count + 1)
                return
            again = f" ({count} more times since)" if error == last and count else ""
            log.error("master: %s failed%s; it is tried again on the next turn\n%s", name,
                      again, traceback.format_exc().rstrip())
            self.step_errors[name] = (error, now, 0)

    # -- signals: what each means to an operator ------------------------------------------------

    def handle_term(self) -> None:
        """Fast stop: workers close their connections and exit."""
        self.stop(MASTER_RECEIVES[signal.SIGTERM])

    def handle_int(self) -> None:
        """Fast stop (Ctrl-C in --foreground)."""
        self.stop(MASTER_RECEIVES[signal.SIGINT])

    def handle_quit(self) -> None:
        """Graceful stop: workers finish in-flight requests (up to graceful-timeout), then exit."""
        self.stop(MASTER_RECEIVES[signal.SIGQUIT])

    def handle_hup(self) -> None:
        """Update: re-read the config; if valid, replace the workers with ones that use it."""
        self.update()

    def handle_usr1(self) -> None:
        """Reopen every log file, in the master and the workers (after logrotate)."""
        self.reopen_logs()

    def handle_usr2(self) -> None:
        """Upgrade: re-execute the master with the listeners (a new pyd, no downtime)."""
        from pyd.master.upgrade import upgrade

        self.greenlets.spawn(upgrade, self)

    def handle_ttin(self) -> None:
        """One worker more (up to max-workers)."""
        self.set_target(self.target + 1)

    def handle_ttou(self) -> None:
        """One worker less (down to min-workers, at least 1)."""
        self.set_target(self.target - 1)

    # -- verbs ----------------------------------------------------------------------------------

    def spawn_worker(self, number: int, predecessor: WorkerInfo | None = None) -> None:
        slot = self.scoreboard.claim(number, self.generation)
        if slot is None:
            log.error("no free scoreboard slot for worker %d (restart pyd to grow it)", number)
            return
        pid = gevent.os.fork_and_watch(callback=self._child_exited)
        if pid == 0:
            self.after_fork(keep_slot=slot)
            Worker(self.config, number, slot, self.scoreboard, self.listeners, apps=self.apps,
                   pools=self.pools, master_pid=self.pid,
                   report_fd=self.service.report_fd).run()
            os._exit(EXIT_BOOT_ERROR)  # pragma: no cover - run() never returns
        self.scoreboard.set_pid(slot, pid)
        self.metrics.spawned(pid, slot)
        now = time.monotonic()
        w = WorkerInfo(pid, slot, number, self.generation, now, time.time(), beat_seen=now)
        w.beat = self.scoreboard.read(slot).heartbeat
        if predecessor is not None:
            predecessor.successor, w.predecessor = w, predecessor
        self.workers[pid] = w
        log.info("spawned worker %d (pid %d)%s", number, pid,
                 f" to replace pid {predecessor.pid}" if predecessor else "")

    def _child_exited(self, watcher) -> None:
        self.exited.append((watcher.pid, watcher.rstatus))
        self.wakeup.set()

    def after_fork(self, keep_slot: int | None = None) -> None:
        """In the new child (a worker, the service): let go of everything that is the master's,
        and of every scoreboard slot but the worker's own."""
        if self.scoreboard is not None:
            self.scoreboard.keep_only(keep_slot)
        self.metrics.after_fork()
        for watcher in self._signal_watchers:
            watcher.cancel()
        if self.control is not None:
            self.control.close(unlink=False)
        if self.pidfile is not None and self.pidfile.fd is not None:
            os.close(self.pidfile.fd)  # POSIX locks are per process: the master keeps its own
            self.pidfile.fd = None
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None
        self.service.close_in_child()
        self.greenlets.kill(block=False)

    def kill_worker(self, w: WorkerInfo, sig: int) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def act(self, actions: list) -> None:
        """Do what the fleet policy decided."""
        for action in actions:
            if isinstance(action, fleet.Kill):
                self.kill_worker(action.worker, action.signal)
            elif isinstance(action, fleet.Spawn):
                self.spawn_worker(action.number, predecessor=action.predecessor)
            elif isinstance(action, fleet.Log):
                log.log(action.level, "%s", action.message)
            elif isinstance(action, fleet.Target):
                self.set_target(action.workers)

    def slots(self) -> dict[int, sb.SlotView]:
        """What each worker wrote in its slot, read once for this turn."""
        return {w.slot: self.scoreboard.read(w.slot) for w in self.workers.values()}

    def reap(self) -> None:
        while self.exited:
            pid, status = self.exited.popleft()
            w = self.workers.pop(pid, None)
            if w is None:
                if self.service.owns(pid):
                    self.service.exited(status)
                continue  # not a worker (the new master of an upgrade)
            reason = sb.R_CRASHED
            try:
                code = os.waitstatus_to_exitcode(status)
                message = self.scoreboard.message(w.slot)
                reason, actions = self.fleet.exited(w, code, message, bool(self.stopping),
                                                    time.monotonic())
                if reason == sb.R_BOOT_ERROR:
                    self.boot_errors[w.generation] = self.backoff[w.number].message
                self.act(actions)
            finally:  # whatever happened, the worker is gone: its slot and links go with it
                if not 0 <= reason < len(sb.REASONS):
                    reason = sb.R_BAD_REPORT
                self.exits[sb.REASONS[reason]] += 1
                self.step("metrics.reaped", self.metrics.reaped, pid)  # before the slot is free
                self.scoreboard.release(w.slot, reason)
                fleet.unlink(w)

    def sync_phases(self) -> None:
        """Phases from what the workers wrote (serving, retiring; a liar is replaced)."""
        self.act(self.fleet.sync(self.workers.values(), self.slots(), self.generation,
                                 self.generation_reason, time.monotonic()))

    def manage(self) -> None:
        """Keep `target` workers serving; give every retiring worker a successor first."""
        self.sync_phases()
        self.act(self.fleet.manage(self.workers.values(), self.target, time.monotonic()))

    def murder(self) -> None:
        """request-timeout: a request (or a blocked hub) past the limit gets its worker killed,
        after the worker logged every greenlet's stack."""
        self.act(self.fleet.murder(self.workers.values(), self.slots(), time.monotonic(),
                                   time.time()))

    def scale(self) -> None:
        """Between min-workers and max-workers: one more when all are busy for 3s, one less
        when two or more have been idle for 30s."""
        self.act(self.fleet.scale(self.workers.values(), self.slots(), self.target,
                                  time.monotonic()))

    def set_target(self, n: int) -> None:
        lo = self.config.min_workers or 1
        hi = self.config.max_workers or max(self.config.workers, n, 1)
        n = max(lo, min(hi, n, self.scoreboard.size // 2))
        if n != self.target:
            log.info("workers: %d -> %d", self.target, n)
            self.target = n
            self.wakeup.set()

    def reload(self) -> int:
        """Replace every worker gracefully (new app code); returns the new generation."""
        self.generation += 1
        self.generation_reason = sb.R_RELOAD
        log.info("reload: replacing every worker (generation %d)", self.generation)
        self.wakeup.set()
        return self.generation

    def update(self) -> tuple[bool, str]:
        """Re-read the config; an invalid one changes nothing and says why."""
        from pyd.config import load_apart

        try:
            new = load_apart(self.config_file, self.overrides)
        except ConfigError as e:
            log.error("update: the configuration has errors; still serving the old one:\n%s",
                      e.format())
            self.metrics.reloads["invalid"] += 1
            return False, e.format()
        except Exception as e:
            log.exception("update: cannot read the configuration; still serving the old one")
            self.metrics.reloads["invalid"] += 1
            return False, f"cannot read the configuration: {type(e).__name__}: {e}"
        try:
            warnings = apply_config(self, new)
        except ApplyError as e:
            log.error("update: the new configuration cannot be applied; still serving the old "
                      "one:\n%s", e)
            self.metrics.reloads["failed"] += 1
            return False, str(e)
        self.fleet.limits = fleet.Limits.of(new)
        self.service.configure(new)
        self.metrics.configure(new)
        self.metrics.start()
        self.metrics.reloads["applied"] += 1
        self.generation += 1
        self.generation_reason = sb.R_UPDATE
        log.info("update: configuration re-read; replacing every worker (generation %d)",
                 self.generation)
        self.wakeup.set()
        return True, "\n".join(warnings)

    def take_pidfile(self) -> None:
        """After an upgrade: the old master let go of the pidfile; make it ours."""
        from pyd.system.daemon import PidfileError

        try:
            self.pidfile.acquire()
        except PidfileError:
            return
        self.pidfile_pending = False
        log.info("pidfile %s taken over from the previous master", self.pidfile.path)

    def reopen_logs(self) -> None:
        from pyd.log import reopen

        reopen()
        for w in self.workers.values():
            self.kill_worker(w, signal.SIGUSR1)
        self.service.signal(signal.SIGUSR1)

    def stop(self, how: str) -> None:
        if self.stopping and how == "graceful":
            return
        first = self.stopping is None
        self.stopping = how
        if self.service.running:
            # Supervised programs and jobs stop first; the loop stops the workers after them.
            self.service.stop(how)
            self.wakeup.set()
            return
        self.stop_workers(first)

    def stop_workers(self, first: bool) -> None:
        how = self.stopping
        self.workers_told = True
        self.stop_deadline = time.monotonic() + stop_deadlines(self.config, how).workers
        sig = STOPS[how].worker
        if first or how != "graceful":
            log.info("stopping (%s) %d workers", how, len(self.workers))
        for w in self.workers.values():
            w.phase = "draining"
            w.reason = w.reason or sb.R_STOPPED
            self.kill_worker(w, sig)
        self.wakeup.set()

    def enforce_stop_deadline(self) -> None:
        if time.monotonic() > self.stop_deadline:
            for w in self.workers.values():
                log.warning("worker %d (pid %d) did not stop in time; killing it", w.number, w.pid)
                self.kill_worker(w, signal.SIGKILL)
            self.stop_deadline = time.monotonic() + 5.0

    def shutdown(self, unlink: bool) -> None:
        """The master's own resources, last: listeners, control socket, pidfile."""
        for pool in self.pools:
            pool.close_all()
        for listener in self.listeners.values():
            listener.close(unlink=unlink)
        if self.control is not None:
            self.control.close(unlink=unlink)
        if self.pidfile is not None:
            self.pidfile.release(unlink=unlink)
        self.greenlets.kill(block=False)

    def fullstatus_extra(self) -> dict:
        """The service process, its supervised programs and jobs, for `pyd fullstatus`."""
        return self.service.fullstatus()

    # -- the control socket ---------------------------------------------------------------------

    def command(self, cmd: str, args: dict, progress) -> dict:
        from pyd.master import commands as commands_master

        handler = getattr(commands_master, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            return {"ok": False, "message": f"unknown command {cmd}"}
        return handler(self, args, progress)


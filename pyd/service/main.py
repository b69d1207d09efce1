"""The service process: Cron jobs, supervised Process programs and autoreload, off the request path.

One process, forked by the master after its workers serve and stopped before them, titled
`pyd: service [scheduler supervisor monitor]` after what it runs. It stays root (each program
takes its own user; each job run drops to the top-level `user` itself) and runs no user code.
It is a child subreaper, so whatever its programs leave behind comes back to it and is stopped
with them. `ServiceHandle` is the master's side: fork, restart with backoff, stop first, and a
private socket pair for requests (config on update, status, `cron run`, `process restart`)
and events (autoreload asks for a reload). Workers report their source files to the master in
datagrams; the master keeps the list and hands it to the service, even a restarted one.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import pickle
import signal
import struct
import time
from collections.abc import Iterable

import gevent
import gevent.event
import gevent.lock
import gevent.os
from gevent import socket

from pyd.ipc.modules import parse_report
from pyd.ipc.signals import SERVICE_RECEIVES, STOPS, stop_deadlines
from pyd.service.monitor import Monitor
from pyd.service.supervisor import Supervisor, describe_exit, human
from pyd.system.backoff import Backoff
from pyd.system.daemon import scrub_environ
from pyd.system.proc import children_of

log = logging.getLogger("pyd.service")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MAX_BACKOFF = 60.0
MAX_MODULES = 50_000


def parts(config) -> list[str]:
    """What the config asks the service process to run; nothing: no service process."""
    out = []
    if config.of_kind("Cron"):
        out.append("scheduler")
    if config.of_kind("Process"):
        out.append("supervisor")
    if config.autoreload:
        out.append("monitor")
    return out


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        log.warning("prctl(%d) failed: %s", option, os.strerror(ctypes.get_errno()))


class Channel:
    """Length-prefixed pickled messages between the master and its service process.

    Pickle, because a whole Config travels on `pyd update`. Both ends are root and the socket
    pair is private: the master closes its end in every other child it forks.
    """

    HEADER = struct.Struct("!I")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lock = gevent.lock.Semaphore()
        self.pending: dict[int, gevent.event.AsyncResult] = {}

    def send(self, message: dict) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            self.sock.sendall(self.HEADER.pack(len(data)) + data)

    def receive(self) -> dict | None:
        """The next message; None when the other end is gone."""
        head = self._exactly(self.HEADER.size)
        if head is None:
            return None
        body = self._exactly(self.HEADER.unpack(head)[0])
        return None if body is None else pickle.loads(body)

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(min(n - len(data), 1 << 20))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def sweep_children(exclude: Iterable[int] = (), timeout: float = 5.0) -> int:
    """SIGKILL our children outside our own process group, and their groups; how many.

    A subreaper inherits the orphans of its descendants: this is how nothing a program (or a
    dead service process) started outlives it.
    """
    mine, skip, killed = os.getpgrp(), set(exclude), 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for pid in children_of(os.getpid()):
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if pid in skip or pgid == mine:
                continue
            found.append(pid)
            if pgid != mine:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not found:
            break
        killed += len(found)
        gevent.sleep(0.05)  # the loop reaps them
    return killed


# -- the service process -------------------------------------------------------------------------

class Service:
    """Runs in the forked service process: the scheduler, the supervisor and the monitor."""

    def __init__(self, config, channel: Channel, master_pid: int, modules: Iterable[str]):
        self.config = config
        self.channel = channel
        self.master_pid = master_pid
        self.modules = list(modules)
        self.how: str | None = None
        self.stop_event = gevent.event.Event()

    def run(self) -> None:
        """Never returns."""
        from setproctitle import setproctitle

        from pyd.service.scheduler import Scheduler

        setproctitle(self.title())
        scrub_environ()  # NOTIFY_SOCKET and the upgrade's descriptors: the master's, not ours
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the master is killed: stop everything
        if os.getppid() != self.master_pid:
            os._exit(0)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        for signum, how in SERVICE_RECEIVES.items():
            gevent.signal_handler(signum, self.stop, how)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        for signum in (signal.SIGHUP, signal.SIGUSR2):  # meant for the master: ignore, but by a
            gevent.signal_handler(signum, lambda: None)  # handler, that exec does not inherit
        self.supervisor = Supervisor()
        self.scheduler = Scheduler()
        self.monitor = Monitor(self.request_reload)
        log.info("service process (pid %d) running: %s", os.getpid(), " ".join(parts(self.config)))
        self.configure(self.config)
        self.monitor.add_files(self.modules)
        gevent.spawn(self.serve_channel)
        while not self.stop_event.wait(1.0):
            if os.getppid() != self.master_pid:
                log.warning("the master (pid %d) is gone; stopping", self.master_pid)
                self.how = "fast"
                break
        self.shutdown(self.how or "fast")
        logging.shutdown()
        os._exit(0)

    def title(self) -> str:
        return f"pyd: service [{' '.join(parts(self.config))}]"

    def configure(self, config) -> None:
        from setproctitle import setproctitle

        self.config = config
        setproctitle(self.title())
        self.monitor.configure(config)
        self.scheduler.configure(config)
        self.supervisor.configure(config)

    def stop(self, how: str) -> None:
        if self.how == "hard" or (self.how is not None and how == "graceful"):
            return
        escalate = self.how is not None
        self.how = how
        self.stop_event.set()
        if escalate and how == "hard":  # a hard stop while stopping: no more waiting
            gevent.spawn(sweep_children)

    def shutdown(self, how: str) -> None:
        """Supervised programs first, then job runs; then anything reparented to us."""
        log.info("service process stopping (%s)", how)
        self.monitor.close()
        self.supervisor.stop_all(hard=how == "hard")
        self.scheduler.stop(graceful=how in ("graceful", "upgrade"),
                            timeout=self.config.graceful_timeout)
        left = sweep_children()
        if left:
            log.warning("killed %d leftover processes", left)
        log.info("service process (pid %d) stopped", os.getpid())

    def reopen_logs(self) -> None:
        from pyd.log import reopen

        reopen()

    def request_reload(self, files: list[str]) -> None:
        try:
            self.channel.send({"event": "reload", "files": files})
        except OSError:
            pass

    # -- requests from the master -----------------------------------------------------------

    def serve_channel(self) -> None:
        while True:
            message = self.channel.receive()
            if message is None:
                self.stop("fast")
                return
            gevent.spawn(self.answer, message)

    def answer(self, message: dict) -> None:
        handler = getattr(self, "do_" + message["cmd"].replace("-", "_"), None)
        try:
            if handler is None:
                reply = {"ok": False, "message": f"unknown request {message['cmd']}"}
            else:
                reply = handler(**message.get("args", {}))
        except Exception as e:  # a bug must not take the service down
            log.exception("service request %s failed", message["cmd"])
            reply = {"ok": False, "message": f"internal error: {e}"}
        if message.get("id") is not None:
            try:
                self.channel.send({"id": message["id"], "reply": reply})
            except OSError:
                pass

    def do_config(self, config) -> dict:
        self.configure(config)
        return {"ok": True}

    def do_watch(self, paths: list[str]) -> dict:
        self.monitor.add_files(paths)
        return {"ok": True}

    def do_status(self) -> dict:
        return {"ok": True, "data": {
            "pid": os.getpid(), "parts": parts(self.config), "jobs": self.scheduler.status(),
            "processes": self.supervisor.status(),
            "watching": len(self.monitor.files) if self.monitor.enabled else None}}

    def do_cron_run(self, name: str) -> dict:
        try:
            run = self.scheduler.run_now(name)
        except KeyError:
            known = ", ".join(sorted(self.scheduler.jobs)) or "none"
            return {"ok": False, "message": f"no Cron:{name} (jobs: {known})"}
        if isinstance(run, str):
            return {"ok": False, "message": f"Cron:{name} not started: {run}"}
        run.done.wait()
        return {"ok": run.ok, "message": f"Cron:{name} (pid {run.pid}): {run.outcome} after "
                                         f"{human(run.duration)}; its output is in the log, "
                                         f"channel cron.{name}"}

    def do_process_restart(self, name: str) -> dict:
        try:
            instances = self.supervisor.restart(name)
        except KeyError:
            known = ", ".join(sorted(self.supervisor.programs)) or "none"
            return {"ok": False, "message": f"no Process:{name} (processes: {known})"}
        deadline = time.monotonic() + 5.0
        while (time.monotonic() < deadline
               and any(i.state == "starting" for i in instances)):
            gevent.sleep(0.02)
        return {"ok": True, "message": "restarted " + ", ".join(
            f"{i.label} (pid {i.pid})" if i.pid else f"{i.label} ({i.state}: {i.last_exit})"
            for i in instances)}


# -- the master's side ---------------------------------------------------------------------------

class ServiceHandle:
    """The master's side of the service process; pyd/master.py calls it from its verbs."""

    def __init__(self, master):
        self.m = master
        self.pid: int | None = None
        self.channel: Channel | None = None
        self.started = 0.0
        self.stopping: str | None = None
        self.deadline = 0.0
        self.backoff = Backoff(0.5, MAX_BACKOFF)  # restarts after it failed
        self.ids = itertools.count(1)
        self.modules: set[str] = set()
        # Workers (unprivileged) send the paths of their source files here; only the master
        # reads, and passes them on. Non-blocking: a worker never waits for it.
        self.reports, self.report_send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.report_send.setblocking(False)
        master.greenlets.spawn(self._read_reports)

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def report_fd(self) -> int:
        return self.report_send.fileno()

    def owns(self, pid: int) -> bool:
        return pid == self.pid

    # -- verbs ------------------------------------------------------------------------------

    def manage(self) -> None:
        """Start the service process when the config needs one (and the backoff allows), stop
        it when the config no longer does."""
        wanted = bool(parts(self.m.config))
        if self.pid is None:
            # After an upgrade, not before the old master (and its service) let go.
            if wanted and not self.m.pidfile_pending and not self.backoff.waiting(time.monotonic()):
                self.spawn()
        elif self.stopping:
            self.enforce_deadline()
        elif not wanted:
            log.info("no Cron, Process or autoreload left in the config; stopping the service "
                     "process")
            self.stop("graceful")

    def spawn(self) -> None:
        if self.backoff.failures == 0:
            # Orphans of the service's programs come to us if it dies, to be swept (exited()).
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        config = self.m.config
        master_end, service_end = socket.socketpair()
        pid = gevent.os.fork_and_watch(callback=self.m._child_exited)
        if pid == 0:
            master_end.close()
            self.m.after_fork()
            self.report_send.close()
            for listener in self.m.listeners.values():
                listener.close(unlink=False)  # a closed listener must not stay bound here
            try:
                Service(config, Channel(service_end), self.m.pid, sorted(self.modules)).run()
            except BaseException:
                log.exception("the service process failed")
            os._exit(1)
        service_end.close()
        self.pid, self.channel = pid, Channel(master_end)
        self.started, self.stopping = time.monotonic(), None
        self.m.greenlets.spawn(self._read_channel, self.channel)
        log.info("spawned the service process (pid %d): %s", pid, " ".join(parts(config)))

    def exited(self, status: int) -> None:
        pid, self.pid = self.pid, None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        swept = sweep_children(exclude=[*self.m.workers, self.m.pid])
        if self.stopping or self.m.stopping:
            log.info("the service process (pid %d) stopped", pid)
            self.stopping = None
            return
        if swept:
            log.warning("killed %d processes the service process left behind", swept)
        if time.monotonic() - self.started > 30.0:
            self.backoff.reset()
        delay = self.backoff.failed(time.monotonic())
        log.error("the service process (pid %d) %s; restarting it in %.1fs", pid,
                  describe_exit(os.waitstatus_to_exitcode(status)), delay)

    def stop(self, how: str) -> None:
        """Ask the service to stop (programs first, then jobs); SIGKILL after a deadline."""
        if self.pid is None:
            return
        sig = STOPS[how].service
        deadline = time.monotonic() + stop_deadlines(self.m.config, how).service
        self.deadline = min(self.deadline, deadline) if self.stopping else deadline
        self.stopping = how
        self.signal(sig)

    def enforce_deadline(self) -> None:
        if self.pid is not None and time.monotonic() > self.deadline:
            log.warning("the service process (pid %d) did not stop in time; killing it",
                        self.pid)
            self.signal(signal.SIGKILL)
            self.deadline = time.monotonic() + 5.0

    def signal(self, sig: int) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def configure(self, config) -> None:
        """After `pyd update`: the service applies the new config (a missing one is started
        from the loop, an unneeded one stopped)."""
        if self.channel is not None and parts(config) and not self.stopping:
            self.m.greenlets.spawn(self._send_config, config)

    def _send_config(self, config) -> None:
        reply = self.request("config", timeout=120.0, config=config)
        if not reply.get("ok"):
            log.error("update: the service process did not apply the config: %s",
                      reply.get("message"))

    def close_in_child(self) -> None:
        """In any other child of the master: the channel and the reports are the master's."""
        if self.channel is not None:
            self.channel.close()
        self.reports.close()

    # -- talking to it ----------------------------------------------------------------------

    def request(self, cmd: str, timeout: float | None = 10.0, **args) -> dict:
        channel = self.channel
        if channel is None or self.stopping:
            return {"ok": False, "message": "the service process is not running"
                    + (f" (next try in {self.backoff.not_before - time.monotonic():.1f}s)"
                       if self.backoff.failures and not self.stopping else "")}
        ident = next(self.ids)
        result = channel.pending[ident] = gevent.event.AsyncResult()
        try:
            channel.send({"id": ident, "cmd": cmd, "args": args})
            return result.get(timeout=timeout)
        except OSError:
            return {"ok": False, "message": "the service process is gone"}
        except gevent.Timeout:
            return {"ok": False, "message": f"the service process did not answer {cmd} within "
                                            f"{timeout:.0f}s"}
        finally:
            channel.pending.pop(ident, None)

    def _read_channel(self, channel: Channel) -> None:
        while True:
            message = channel.receive()
            if message is None:
                break
            if "id" in message:
                result = channel.pending.get(message["id"])
                if result is not None:
                    result.set(message["reply"])
            elif message.get("event") == "reload" and not self.m.stopping:
                self.m.reload()
        for result in channel.pending.values():
            result.set({"ok": False, "message": "the service process is gone"})

    def _read_reports(self) -> None:
        while True:
            try:
                data = self.reports.recv(65536)
            except OSError:
                return
            new = [p for p in parse_report(data) if p not in self.modules]
            if not new or len(self.modules) + len(new) > MAX_MODULES:
                continue
            self.modules.update(new)
            if self.channel is not None and not self.stopping:
                try:
                    self.channel.send({"cmd": "watch", "args": {"paths": new}})
                except OSError:
                    pass

    # -- what the CLI asks ------------------------------------------------------------------

    def fullstatus(self) -> dict:
        if self.pid is None and not parts(self.m.config):
            return {}
        if self.pid is None:
            return {"extra_lines": ["service process: not running" + (
                f" (next try in {max(0.0, self.backoff.not_before - time.monotonic()):.1f}s)"
                if self.backoff.failures else "")]}
        lines = [f"service process: pid {self.pid} [{' '.join(parts(self.m.config))}], up "
                 f"{human(time.monotonic() - self.started)}"]
        reply = self.request("status", timeout=5.0)
        if not reply.get("ok"):
            return {"extra_lines": lines + [f"  {reply.get('message')}"]}
        data = reply["data"]
        if data["processes"]:  # a table (a list of rows) among the lines: the CLI lays it out
            lines.append(process_rows(data["processes"]))
        if data["jobs"]:
            lines.append(job_rows(data["jobs"]))
        if data["watching"] is not None:
            lines.append(f"autoreload: watching {data['watching']} source files")
        return {"extra_lines": lines, "service": data}

    def cron(self, action: str, name: str | None, progress) -> dict:
        if not self.m.config.of_kind("Cron"):
            return {"ok": False, "message": "there are no Cron sections in the configuration"}
        if action == "run":
            progress(f"running Cron:{name}")
            return self.request("cron-run", timeout=None, name=name)
        reply = self.request("status", timeout=5.0)
        if not reply.get("ok"):
            return reply
        return {"ok": True, "data": {"table": job_rows(reply["data"]["jobs"]),
                                     "jobs": reply["data"]["jobs"]}}

    def process(self, action: str, name: str | None, progress) -> dict:
        if not self.m.config.of_kind("Process"):
            return {"ok": False, "message": "there are no Process sections in the configuration"}
        if action == "restart":
            progress(f"restarting Process:{name}")
            return self.request("process-restart", timeout=None, name=name)
        reply = self.request("status", timeout=5.0)
        if not reply.get("ok"):
            return reply
        return {"ok": True, "data": {"table": process_rows(reply["data"]["processes"]),
                                     "processes": reply["data"]["processes"]}}


# -- tables for people: the cells; the CLI lays them out (pyd/cli/table.py) ----------------------

def _clock(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def process_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    table = [("process", "pid", "state", "uptime", "restarts", "last exit")]
    for r in rows:
        table.append((r["name"], str(r["pid"] or "-"), r["state"],
                      human(r["uptime"]) if r["uptime"] is not None else "-",
                      str(r["restarts"]), r["last_exit"] or "-"))
    return table


def job_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    table = [("job", "schedule", "next run", "last run", "outcome", "duration", "runs")]
    for r in rows:
        outcome = r["last_outcome"] or "-"
        if r["running"]:
            outcome = f"running (pid {', '.join(map(str, r['running']))})"
        table.append((r["name"], r["schedule"], _clock(r["next"]), _clock(r["last_start"]),
                      outcome, human(r["last_duration"]) if r["last_duration"] is not None
                      else "-", f"{r['runs']} ({r['failures']} failed, {r['skipped']} skipped)"))
    return table

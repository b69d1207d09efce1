"""Pool:Metrics, served by the master itself: /metrics, /health and /ready.

No app code and no worker take part: the master builds the answer from the scoreboard (each
worker's counters block, read as untrusted input and checked) and from its own books. The
responder is small and strict: one request per connection, the head read within
READ_DEADLINE and at most MAX_HEAD bytes (the h1 core's limits), at most MAX_CLIENTS at
once, peers outside `allowed-clients` closed. It runs on the master's gevent loop and never
blocks it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import gevent
from gevent import socket

from pyd.ipc import scoreboard as sb
from pyd.metrics import registry
from pyd.metrics.collect import Collector
from pyd.metrics.exposition import OPENMETRICS, TEXT, Family, render, wants_openmetrics
from pyd.metrics.families import http_families
from pyd.protocols.h1 import CLOSED, NEED_DATA, H1Connection, Limits, ProtocolError, Request
from pyd.version import __version__
from pyd.web.trusted import contains

log = logging.getLogger("pyd.master")

READ_DEADLINE = 5.0
SEND_DEADLINE = 10.0
MAX_HEAD = 16384
MAX_CLIENTS = 32
HEALTH_STALE = 10.0  # the loop turns every 0.25s at least: silent this long, it is stuck
LIMITS = Limits(max_request_line=2048, max_header_size=8192, max_headers=64, max_body_size=0)
PHASES = ("booting", "serving", "retiring", "draining")
MAX_RSS = 1 << 48


def _rss(pid: str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Metrics:
    """The master's metrics collaborator: the collector of the workers' counters, its own
    counters (config reloads), and the Pool:Metrics responder."""

    def __init__(self, master):
        self.m = master
        self.collector = Collector()
        self.reloads: Counter[str] = Counter()
        self.turned = time.monotonic()
        self.serving: dict[str, gevent.Greenlet] = {}  # listener key -> its acceptor
        self.clients = 0
        self.allowed: dict[str, tuple] = {}  # listener key -> allowed-clients

    # -- the layout, decided before each fork ---------------------------------------------------

    @staticmethod
    def capacity(config) -> int:
        return registry.capacity_for(config)

    def configure(self, config) -> None:
        """Boot and every applied update: the layout of workers forked from now on, and the
        listeners to answer on."""
        board = self.m.scoreboard
        layout = registry.layout_for(config, board.counters_capacity)
        board.counters_used = max(board.counters_used, layout.nbytes)
        self.collector.configure(layout)
        self.allowed = {}
        for section in config.pools:
            if registry.served_by_master(section):
                for address in section.settings["listen"]:
                    self.allowed[str(address)] = tuple(section.settings["allowed-clients"])
        for key in list(self.serving):
            if key not in self.allowed:
                self.serving.pop(key).kill(block=False)

    def start(self) -> None:
        for key in self.allowed:
            if key not in self.serving and key in self.m.listeners:
                self.serving[key] = self.m.greenlets.spawn(self._accept, key)

    def spawned(self, pid: int, slot: int) -> None:
        self.collector.spawned(pid, slot)

    def reaped(self, pid: int) -> None:
        self.collector.reaped(pid, self.m.scoreboard)

    def after_fork(self) -> None:
        """In a child: its copies of the metrics listeners are closed (a worker must not
        answer scrapes in the master's name)."""
        for key in self.allowed:
            listener = self.m.listeners.get(key)
            if listener is not None:
                try:
                    listener.sock.close()
                except OSError:
                    pass
        self.serving.clear()

    def turn(self) -> None:
        self.turned = time.monotonic()

    # -- what is served -------------------------------------------------------------------------

    def healthy(self) -> bool:
        return time.monotonic() - self.turned < HEALTH_STALE

    def ready(self) -> bool:
        m = self.m
        if m.stopping or not m.target:
            return False
        serving = sum(1 for w in m.workers.values() if w.phase in ("serving", "retiring"))
        return serving >= m.target

    def families(self) -> list[Family]:
        m = self.m
        out = http_families(self.collector.sample(m.scoreboard))
        phases = Counter(w.phase for w in m.workers.values())
        workers = Family("pyd_workers", "gauge", "Worker processes, by phase")
        for phase in PHASES:
            workers.add(phases.get(phase, 0), phase=phase)
        out.append(workers)
        out.append(Family("pyd_workers_target", "gauge", "How many workers the master keeps")
                   .add(m.target))
        out.append(Family("pyd_worker_starts", "counter", "Worker processes started")
                   .add(len(m.workers) + sum(m.exits.values())))
        exits = Family("pyd_worker_exits", "counter", "Worker processes ended, by reason")
        for reason in sb.REASONS[1:]:
            exits.add(m.exits.get(reason, 0), reason=reason)
        out.append(exits)
        rss = Family("pyd_worker_rss_bytes", "gauge", "Resident memory of each worker, as it "
                                                      "reports it")
        for w in sorted(m.workers.values(), key=lambda w: (w.number, w.pid)):
            try:
                value = m.scoreboard.read(w.slot).rss
            except Exception:
                value = 0
            rss.add(value if 0 <= value <= MAX_RSS else 0, worker=str(w.number),
                    pid=str(w.pid))
        out.append(rss)
        out.append(Family("pyd_master_rss_bytes", "gauge", "Resident memory of the master")
                   .add(_rss()))
        reloads = Family("pyd_config_reloads", "counter",
                         "Configuration updates, by outcome (applied, invalid, failed)")
        for outcome in ("applied", "invalid", "failed"):
            reloads.add(self.reloads.get(outcome, 0), outcome=outcome)
        out.append(reloads)
        out.append(Family("pyd_build_info", "gauge", "pyd's version").add(1, version=__version__))
        return out

    def answer(self, req: Request) -> tuple[str, str, bytes]:
        path = req.target.split(b"?", 1)[0]
        if req.method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"Method Not Allowed\n"
        if path == b"/metrics":
            accept = next((v for k, v in req.headers if k.lower() == b"accept"), None)
            om = wants_openmetrics(accept)
            return "200 OK", OPENMETRICS if om else TEXT, render(self.families(), om)
        if path == b"/health":
            if self.healthy():
                return "200 OK", "text/plain", b"ok\n"
            return "503 Service Unavailable", "text/plain", b"the master's loop is stuck\n"
        if path == b"/ready":
            if self.ready():
                return "200 OK", "text/plain", b"ready\n"
            why = b"stopping\n" if self.m.stopping else b"not every worker serves\n"
            return "503 Service Unavailable", "text/plain", why
        return "404 Not Found", "text/plain", b"Not Found\n"

    # -- the responder --------------------------------------------------------------------------

    def _accept(self, key: str) -> None:
        listener = self.m.listeners[key]
        sock = listener.sock
        while True:
            try:
                conn, address = sock.accept()
            except OSError:
                if key not in self.serving or sock.fileno() < 0:
                    return
                gevent.sleep(0.1)
                continue
            peer = address[0] if isinstance(address, tuple) else ""
            if (not listener.address.is_unix and not contains(self.allowed.get(key, ()), peer)) \
                    or self.clients >= MAX_CLIENTS:
                conn.close()
                continue
            self.clients += 1
            self.m.greenlets.spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        h1 = H1Connection(LIMITS, server_tokens=False)
        try:
            req = None
            read = 0
            with gevent.Timeout(READ_DEADLINE, False):
                while req is None:
                    try:
                        ev = h1.next_event()
                    except ProtocolError as e:
                        conn.sendall(h1.error_response(e.status))
                        return
                    if type(ev) is Request:
                        req = ev
                    elif ev is NEED_DATA:
                        data = conn.recv(4096)
                        read += len(data)
                        if read > MAX_HEAD:
                            conn.sendall(h1.error_response(431))
                            return
                        h1.receive_data(data)
                    elif ev is CLOSED:
                        return
                    else:
                        return
            if req is None:
                return  # too slow: closed without an answer
            try:
                status, ctype, body = self.answer(req)
            except Exception:
                log.exception("metrics: building the answer failed")
                status, ctype, body = "500 Internal Server Error", "text/plain", b"error\n"
            h1.closing = True
            out = h1.respond(status, [("Content-Type", ctype), ("Cache-Control", "no-store")],
                             body)
            with gevent.Timeout(SEND_DEADLINE, False):
                conn.sendall(out)
        except OSError:
            pass
        finally:
            self.clients -= 1
            h1.release()
            try:
                conn.close()
            except OSError:
                pass

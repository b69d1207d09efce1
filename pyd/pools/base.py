"""A Pool: a named config section with listeners and a connection handler, living in a worker.

The base class owns accepting (with a per-worker connection limit that pauses and resumes),
tracking live connections, and the graceful drain; subclasses implement `handle()`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket
from gevent.event import Event

from pyd.apps import RefError, class_settings, import_ref
from pyd.net.listeners import Listener

log = logging.getLogger("pyd.pool")

# Greenlets kept between connections. A new greenlet costs more than its object: Python gives
# each one its own frame stack, mapped (mmap) when it first runs and unmapped when it ends, with
# fresh pages to fault in each time: a tenth of a Connection: close request's CPU. Reused, they
# keep theirs. Each kept one holds about 25 KB.
IDLE_RUNNERS = 64

# handle() returns this when the connection lives on without its greenlet (an HTTP keep-alive
# connection parked while idle): the socket stays open and the pool keeps track of it.
KEEP_OPEN = object()


class Pool:
    """Base of every pool. Users subclass it for `Pool:name { class module:Class; ... }`.

    `handle(conn, address)` runs in its own greenlet for each accepted connection (a gevent
    socket); the pool closes it afterwards. Hooks: `load()` (import apps, in the worker after
    privileges are dropped), `on_ready()`, `on_shutdown(graceful) -> bool`. Typed settings from
    the section are declared as in AppInstance (`directives = {...}`) and read as self.settings.
    """

    directives: dict[str, tuple[Any, Any]] | None = None
    max_connections = 10000
    # A connection is one request for max-requests and draining, unless the pool counts its
    # own requests (HTTP and FastCGI do).
    connection_is_request = True

    def __init__(self, section, listeners: list[Listener], worker=None, settings=None):
        self.section = section
        self.listeners = listeners
        self.worker = worker
        self.settings = settings if settings is not None else section.settings
        self.name = _label(section)
        self.log = logging.getLogger(f"pyd.pool.{self.name}")
        # greenlet -> what the pool keeps about the connection (None until its handler runs)
        self.connections: dict[Any, Any] = {}
        self.accepting = False
        self.accepted = 0  # connections accepted (the worker reports it in its counters)
        self._acceptors: list[gevent.Greenlet] = []
        self._idle: list[gevent.Greenlet] = []  # runners waiting for a connection
        self._jobs: dict[gevent.Greenlet, tuple] = {}  # handed to an idle runner, not started
        self._room = Event()
        self._room.set()
        limit = section.settings.get("max-connections") if section is not None else None
        if limit:
            self.max_connections = limit

    # -- the lifecycle, driven by the worker ----------------------------------------------------

    def load(self, apps: dict) -> None:
        """Import what the pool serves; runs after privileges are dropped (or in the master,
        as root, for a privileged pool). `apps` are the App: instances, by name."""

    def on_ready(self) -> None:
        pass

    def on_shutdown(self, graceful: bool) -> bool:
        return True

    # -- requests, for pools that count their own (connection_is_request False) ----------------

    def request_started(self, what: Any) -> Any:
        """A request began: a token for the worker's table of requests in flight (what a
        request-timeout names), None outside a worker."""
        worker = self.worker
        return worker.request_started(what) if worker is not None else None

    def request_finished(self, token: Any, record: Any = None) -> None:
        """A request ended; `record` (a web.exchange.RequestRecord: status, bytes in and out,
        duration, client...) says how, for whatever counts requests."""
        if token is not None:
            self.worker.request_finished(token, record)

    def finisher(self) -> Callable[[Any, Any], None]:
        """What a request's end calls, with (token, record): the worker's own request_finished
        when this pool adds nothing to it (one call less on every request), else this pool's."""
        worker = self.worker
        if worker is not None and type(self).request_finished is Pool.request_finished:
            return worker.request_finished
        return self.request_finished

    def start(self) -> None:
        self.accepting = True
        for listener in self.listeners:
            self._acceptors.append(gevent.spawn(self._accept_loop, listener))

    def stop_accepting(self) -> None:
        """Stop taking connections; the master and other workers still listen on the sockets."""
        self.accepting = False
        for g in self._acceptors:
            g.kill(block=False)
        self._acceptors.clear()
        for listener in self.listeners:
            listener.sock.close()  # this worker's descriptor only

    def shutdown(self, graceful: bool) -> bool:
        """Ask connections to finish; True once none is left. Called repeatedly while draining."""
        if not graceful:
            self.close_all()
        return not self.connections and self.on_shutdown(graceful)

    def close_all(self) -> None:
        for g in list(self.connections):
            g.kill(block=False)

    # -- accepting ------------------------------------------------------------------------------

    def _accept_loop(self, listener: Listener) -> None:
        sock = listener.sock
        while self.accepting:
            if len(self.connections) >= self.max_connections:
                self._room.clear()
                self._room.wait()  # resumes when a connection ends below the limit
                continue
            try:
                conn, address = sock.accept()
            except OSError as e:
                if not self.accepting or e.errno == errno.EBADF:
                    return
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("accept on %s: %s; pausing for 100ms", listener, e.strerror)
                    gevent.sleep(0.1)
                continue
            self.accepted += 1
            self.spawn_connection(conn, address)

    def spawn_connection(self, conn: socket.socket, address: Any, resume: Any = None) -> Any:
        """Serve a connection (or `resume()` a parked one) in a greenlet of its own: an idle
        runner if one is kept, else a new one. Returns the greenlet, now in `connections`."""
        if self._idle:
            g = self._idle.pop()
            self._jobs[g] = (conn, address, resume)
            g.parent.loop.run_callback(g.switch)
        else:
            g = gevent.spawn(self._runner, conn, address, resume)
        self.connections[g] = None
        return g

    def _runner(self, conn: socket.socket, address: Any, resume: Any) -> None:
        """Serve connections one after another, waiting idle in between while few others do
        (IDLE_RUNNERS). Each connection starts with an empty contextvars context, as it would
        in a new greenlet; thread-locals (gevent's are per greenlet) live on with the runner,
        as with the threads of a thread pool."""
        me = gevent.getcurrent()
        hub = me.parent
        while True:
            if self._run(conn, address, resume):
                return  # killed: the pool is closing its connections
            if not self.accepting or len(self._idle) >= IDLE_RUNNERS:
                return
            conn = address = resume = None  # an idle runner holds nothing of the last one
            self._idle.append(me)
            try:
                hub.switch()  # until spawn_connection() hands over the next connection
            except BaseException:
                # Killed while idle, or just after a connection was handed over: close it.
                if me in self._idle:
                    self._idle.remove(me)
                job = self._jobs.pop(me, None)
                if job is not None:
                    self.connections.pop(me, None)
                    self.closed(job[0])
                raise
            conn, address, resume = self._jobs.pop(me)
            me.gr_context = None

    def _run(self, conn: socket.socket, address: Any, resume: Any = None) -> bool:
        """Handle a connection (or `resume()` a parked one), then close it. True if the
        greenlet was killed meanwhile."""
        killed = False
        token = None
        if self.connection_is_request and self.worker is not None:
            token = self.worker.request_started(f"{self.name} connection from {address}")
        kept = None
        try:
            kept = self.handle(conn, address) if resume is None else resume()
        except gevent.GreenletExit:
            killed = True
        except (ConnectionError, TimeoutError):
            pass
        except Exception:
            self.log.exception("error in %s handling a connection from %s", self.name, address)
        finally:
            self.connections.pop(gevent.getcurrent(), None)
            if kept is not KEEP_OPEN:
                self.closed(conn)
            if token is not None:
                self.worker.request_finished(token)
        return killed

    def closed(self, conn: socket.socket) -> None:
        try:
            conn.close()
        except OSError:
            pass
        if not self._room.is_set() and len(self.connections) < self.max_connections:
            self._room.set()

    def handle(self, conn: socket.socket, address: Any) -> None:
        raise NotImplementedError


def _label(section) -> str:
    """How a pool is named in titles and logs: HTTPServer, HTTPServer:admin, echo."""
    if section is None:
        return "pool"
    if section.cls:
        return section.cls + (f":{section.name}" if section.name else "")
    return section.name or section.kind


label = _label


class UserPool:
    """Builds a user's Pool subclass from `Pool:name { class module:Class; ... }`."""

    @staticmethod
    def create(section, listeners: list[Listener], worker) -> Pool:
        cls = import_ref(section.settings["class"])
        if not (isinstance(cls, type) and issubclass(cls, Pool)):
            raise RefError(f"{section.settings['class']} is not a subclass of pyd.Pool")
        return cls(section, listeners, worker, class_settings(cls, section))

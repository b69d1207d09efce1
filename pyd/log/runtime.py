"""The master's logging machinery: the target table, the channels and their dispatcher, the
housekeeper; and what a freshly forked child keeps of it (its end of its own channel, no more).

Every fork of the master makes a channel for the child (fork hooks, in __init__.py): the child
keeps the sending end, the dispatcher the other; the child closes every other end it inherited
(the master's, earlier children's) before app code can run. A worker's own children share its
channel.

Target ids only grow: a config update opens new targets under new ids and keeps the old ones
writable until the next reopen, so a worker forked before the update never writes to the
wrong place.
"""

from __future__ import annotations

import logging
import os
import time

from pyd.log.compress import Housekeeper
from pyd.log.files import FileSink
from pyd.log.formats import make_format
from pyd.log.handler import RouterHandler, mark_preformatted, set_fast_handler
from pyd.log.health import Health
from pyd.log.native import Done, close, sleep, start_new_thread
from pyd.log.plan import LogSetupError, RouteSpec, Target
from pyd.log.remote import RemoteSink
from pyd.log.routing import Channels, Route, Router
from pyd.log.sinks import StreamSink
from pyd.log.transport import HEADER, STOP, DirectWriter, Dispatcher, WorkerWriter, make_channel

STOP_TIMEOUT = 3.0
REOPEN_TIMEOUT = 2.0


class MasterLog:
    def __init__(self) -> None:
        self.health = Health(self._report)
        self.housekeeper = Housekeeper(self.health)
        self.targets: dict[int, object] = {}  # id -> Sink (only grows while the master lives)
        self.ids: dict[str, int] = {}  # key -> id of the current target for that key
        self.retired: list[int] = []
        self.next_id = 1
        # The master's own channel: only it can say STOP (no child keeps this end).
        control, self.control_fd = make_channel()
        self.dispatcher = Dispatcher(control, self.targets, self.health)
        self.forking: tuple[int, int] | None = None  # the channel of the child being forked
        self.channel = -1  # in a child: its end of its own channel
        self.dispatched = Done()
        self.handler: RouterHandler | None = None
        self.started = False
        self.stopped = False
        self.pid = os.getpid()

    # -- setup ----------------------------------------------------------------------------------

    def apply(self, specs: list[RouteSpec]) -> RouterHandler:
        """Open what is new (all or nothing), build the router, install the handler."""
        opened: dict[str, object] = {}
        try:
            for spec in specs:
                t = spec.target
                if t.key in self.ids or t.key in opened:
                    continue
                opened[t.key] = self._open(t)
        except OSError as e:
            for sink in opened.values():
                sink.close()
            where = getattr(e, "filename", None) or t.label
            raise LogSetupError(f"cannot open the log {where}: {e.strerror or e}") from None
        for key, sink in opened.items():
            self.ids[key] = self.next_id
            self.targets[self.next_id] = sink
            self.next_id += 1
        keys = {spec.target.key for spec in specs}
        for key in [k for k in self.ids if k not in keys]:
            self.retired.append(self.ids.pop(key))
        hostname = os.uname().nodename
        routes = []
        for spec in specs:
            sink_id = self.ids[spec.target.key]
            sink = self.targets[sink_id]
            if isinstance(sink, FileSink):
                sink.configure(*spec.target.rotation)
                self.housekeeper.resume(sink.path, sink.compress, sink.keep)
            transport = getattr(spec.target.endpoint, "scheme", "")
            fmt = make_format(spec.format, spec.target.kind, transport, spec.facility,
                              spec.colour, hostname)
            if spec.format == "gelf" and transport == "udp":
                sink.chunker = fmt.gelf.gelf_chunker
            routes.append(Route(Channels(spec.channels), spec.level, sink_id, fmt,
                                spec.propagate, spec.main, spec.label))
        handler = RouterHandler(Router(routes), DirectWriter(self.targets, self.stop),
                                os.getpid())
        self._install(handler)
        self._start()
        return handler

    def _open(self, t: Target):
        if t.kind == "file":
            return FileSink(t.key, t.label, self.health, t.path, rotate_size=t.rotate_size,
                            rotate_every=t.rotate_every, keep=t.rotate_keep,
                            compress=t.compress, housekeeper=self.housekeeper)
        if t.kind in ("stdout", "stderr", "tty"):
            return StreamSink(t.key, t.label, self.health, 1 if t.kind == "stdout" else 2)
        return RemoteSink(t.key, t.label, self.health, t.endpoint)

    def _install(self, handler: RouterHandler) -> None:
        root = logging.getLogger()
        if self.handler is not None:
            root.removeHandler(self.handler)
        self.handler = handler
        root.addHandler(handler)
        root.setLevel(handler.router.level)
        mark_preformatted()
        set_fast_handler(handler)

    def _start(self) -> None:
        for sink in self.targets.values():
            sink.start()
        self.housekeeper.start()
        if not self.started:
            self.started = True
            start_new_thread(self.dispatcher.run, (self.dispatched,))

    # -- while running --------------------------------------------------------------------------

    def reopen(self) -> None:
        """`pyd reopenlog`: every file reopens its path; returns once they did (or 2s passed),
        so an external logrotate may compress the old file right after."""
        for sink_id in self.retired:
            self.targets[sink_id].stop()
        self.retired.clear()
        waits = [self.targets[i].request_reopen() for i in self.ids.values()]
        deadline = time.monotonic() + REOPEN_TIMEOUT
        for done in waits:
            done.wait(deadline - time.monotonic())

    def _report(self, message: str) -> None:
        if self.handler is not None and not self.stopped:
            record = logging.LogRecord("pyd.log", logging.WARNING, __file__, 0, message, None,
                                       None)
            self.handler.handle(record)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """The master exits: what workers sent is written, every target flushed and closed."""
        if self.stopped or not self.started or os.getpid() != self.pid:
            return  # (a worker closing a handler it inherited must not stop the master's)
        self.stopped = True
        deadline = time.monotonic() + timeout
        stop = HEADER.pack(0, STOP)
        while time.monotonic() < deadline:
            try:
                os.write(self.control_fd, stop)
                break
            except BlockingIOError:
                sleep(0.01)
            except OSError:
                break
        self.dispatched.wait(deadline - time.monotonic())
        for sink in self.targets.values():
            sink.stop()
        self.housekeeper.stop()
        for sink in self.targets.values():
            sink.done.wait(deadline - time.monotonic())
        self.health.report()

    # -- forks ----------------------------------------------------------------------------------

    def before_fork(self) -> None:
        """In the master, right before a fork: the new child's channel."""
        try:
            self.forking = make_channel()
        except OSError:  # (out of descriptors) the child then logs nothing
            self.forking = None

    def after_fork_in_parent(self) -> None:
        """The child's end leaves the master at once, before the next fork could inherit it."""
        pair, self.forking = self.forking, None
        if pair is not None:
            close(pair[1])
            self.dispatcher.add(pair[0])

    def become_worker(self) -> None:
        """Right after fork, in the child: records go to the master through the child's own
        channel; nothing else of the log (targets, the master's ends, other children's
        channels) stays open where app code runs."""
        pid = os.getpid()
        pair, self.forking = self.forking, None
        for sink in self.targets.values():
            sink.close_in_child()
        self.dispatcher.close_in_child()
        close(self.control_fd)
        self.control_fd = -1
        if pair is not None:
            close(pair[0])
            self.channel = pair[1]
        if self.handler is not None:
            self.handler.forked(WorkerWriter(self.channel), pid)

"""Logging for every pyd process: channels routed to files, streams, syslog and GELF; `pyd log`.

The master builds the routes and opens every target, as root, before it forks; a worker formats
its own records and sends them to the master, the one writer, as datagrams (transport.py says
why). plan: config to routes; routing: channels; formats; handler: the root handler and the
access log's fast path; transport: worker to master; runtime: the master's side; sinks, files,
compress, remote: the targets; health: degraded logging; follow: `pyd log`.
"""

from __future__ import annotations

import logging
import os

from pyd.log.plan import LEVELS, LogSetupError

__all__ = ["LEVELS", "LogSetupError", "reopen", "setup"]

_master = None  # runtime.MasterLog: in the master, and (as a sender) in its workers
_role = "none"  # none, stderr, master, worker


def setup(config, tty: bool = False) -> None:
    """Route every channel as `config` says; None: everything at info to stderr (no master).

    In the master: before any fork, as root. Everything a worker will need to log is imported
    here, since a worker running as nobody or in a chroot may not be able to import it later.
    Raises LogSetupError (nothing changed) when a target cannot be opened.
    """
    global _master, _role
    if config is None:
        _setup_stderr()
        return
    from pyd.log import runtime
    from pyd.log.plan import plan

    specs = plan(config, tty)
    _preload(specs)
    if _master is None:
        _master = runtime.MasterLog()
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork)
    _master.apply(specs)
    _role = "master"


def reopen() -> None:
    """The master reopens every file (returning once done); a worker flushes what it holds."""
    if _role == "master" and _master is not None:
        _master.reopen()
    else:
        for handler in logging.getLogger().handlers:
            handler.flush()


def _before_fork() -> None:
    if _role == "master" and _master is not None:
        _master.before_fork()


def _after_fork_in_parent() -> None:
    if _role == "master" and _master is not None:
        _master.after_fork_in_parent()


def _after_fork() -> None:
    global _role
    if _master is None or _role not in ("master", "worker"):
        return
    if _role == "master":
        _master.become_worker()
        _role = "worker"
    elif _master.handler is not None:  # a worker's own child: its channel, an empty buffer
        from pyd.log.transport import WorkerWriter

        _master.handler.forked(WorkerWriter(_master.channel), os.getpid())


def _setup_stderr() -> None:
    global _role
    from pyd.log.formats import TextFormat
    from pyd.log.handler import RouterHandler, mark_preformatted, set_fast_handler
    from pyd.log.routing import Channels, Route, Router
    from pyd.log.transport import StderrWriter

    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "router", None) is not None:
            root.removeHandler(h)
    colour = os.isatty(2) and "NO_COLOR" not in os.environ
    route = Route(Channels(("*",)), logging.INFO, 0, TextFormat(colour=colour), main=True)
    handler = RouterHandler(Router([route]), StderrWriter(), os.getpid())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    mark_preformatted()
    set_fast_handler(handler)
    _role = "stderr"


def _preload(specs) -> None:
    """Import, as root and before forking, what logging may need in a worker."""
    import errno  # noqa: F401
    import json  # noqa: F401
    import struct  # noqa: F401
    import traceback  # noqa: F401
    import zlib  # noqa: F401

    import gevent.hub  # noqa: F401

    if any(s.format == "gelf" for s in specs):
        import logging.handlers  # noqa: F401

        import graypy  # noqa: F401
    if any(s.target.compress == "zstd" for s in specs):
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise LogSetupError("compress zstd needs the zstandard package "
                                "(pip install pyd[compress])") from None
    import time

    time.localtime()  # reads the time zone now: a chrooted worker could not later

"""The one logging handler pyd installs on the root logger, and the access log's fast path.

Every record is looked up in the Router (cached per channel and level), formatted once per
route and handed to the writer: the master's DirectWriter or a worker's WorkerWriter.

The access log writes one finished line per request, the hottest logging in pyd. A standard
`Logger.info` would build a LogRecord, look up its caller's frame and take a lock for a string
that needs none of it; `PreformattedChannel` (given to such channels' loggers) skips that when
only pyd's handler is listening and every target can take a bare line, and falls back to the
standard path otherwise (arguments, filters, another handler, a GELF target). The access log
goes further: it gathers its requests and has their lines built in a batch when the worker
flushes its log (info_later, info_many), away from the requests.
"""

from __future__ import annotations

import logging
import time

from pyd.log.formats import LINES
from pyd.log.native import RLock
from pyd.log.routing import Router

PREFORMATTED = ("pyd.http.access",)  # channels whose messages are finished lines
_INFO = logging.INFO
_time = time.time


class RouterHandler(logging.Handler):
    def __init__(self, router: Router, writer, pid: int):
        super().__init__(logging.NOTSET)
        self.router = router
        self.writer = writer
        self.pid = pid
        self._alone = [self]  # the root's handlers when pyd's is the only one
        self._makers: dict[str, tuple | bool] = {}  # channel -> fast-path line makers, or
        # False: a target wants a real record

    def createLock(self) -> None:
        # A real reentrant lock: the master's threads emit too, and a worker's SIGABRT handler
        # (request-timeout) logs while the code it interrupted may be inside emit().
        self.lock = RLock()

    def _at_fork_reinit(self) -> None:
        self.lock = RLock()

    def forked(self, writer, pid: int) -> None:
        """In a new child process: a fresh writer and lock, lines made with the new pid."""
        self.writer, self.pid = writer, pid
        self._makers.clear()
        self._at_fork_reinit()

    def emit(self, record: logging.LogRecord) -> None:
        routes = self.router.routes_for(record.name, record.levelno)
        if not routes:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not cost the record
            message = f"{record.msg!r} % {record.args!r}"
        writer = self.writer
        for sink, fmt in routes:
            try:
                out = fmt.format(record, message)
            except Exception:
                self.handleError(record)  # the standard answer: a traceback on stderr
                continue
            if fmt.kind == LINES:
                writer.put_line(sink, out)
            else:
                writer.put_message(sink, out)

    def fast_makers(self, logger: logging.Logger) -> tuple | None:
        """The fast path's line makers for this logger (empty: nobody wants its info lines);
        None when a real record is needed: a filter, a handler other than pyd's up the chain,
        a target that formats records (GELF, syslog)."""
        if not logger.isEnabledFor(_INFO):
            return ()
        if logger.filters or logger.disabled:
            return None
        node = logger
        while node.parent is not None:
            if node.handlers or not node.propagate:
                return None
            node = node.parent
        if node.handlers != self._alone:
            return None
        name = logger.name
        makers = self._makers.get(name)
        if makers is None:
            makers = self.router.line_makers(name, _INFO, self.pid)
            if makers is None and not self.router.routes_for(name, _INFO):
                makers = ()  # nobody takes it: the fast path drops it
            self._makers[name] = makers if makers is not None else False
        return makers if makers is not False else None

    def flush(self) -> None:
        with self.lock:
            self.writer.flush()

    def close(self) -> None:
        try:
            drain = getattr(self.writer, "drain", None)
            (drain or self.writer.flush)()
        finally:
            super().close()


_fast: RouterHandler | None = None


def set_fast_handler(handler: RouterHandler | None) -> None:
    global _fast
    _fast = handler


class PreformattedChannel(logging.Logger):
    """A logger whose info() messages are finished lines: see the module docstring.

    What the fast path may do (levels, filters, other handlers, targets) is checked again
    every second, not for every line: a handler an app adds takes effect within a second.
    """

    _pyd_fast: tuple | None = None  # (second, writer, makers or None) of the last check

    def info(self, msg, *args, **kwargs) -> None:
        if not args and not kwargs and msg.__class__ is str:
            self.info_at(msg, _time())
        else:
            logging.Logger.info(self, msg, *args, **kwargs)

    def info_later(self, fn) -> None:
        """Call fn() when this process next flushes its log (at once where nothing is
        buffered): fn logs, with info_many(), the lines it gathered meanwhile."""
        handler = _fast
        later = getattr(handler.writer, "before_flush", None) if handler is not None else None
        if later is None:
            fn()
        else:
            later(fn)

    def info_at(self, msg: str, created: float) -> None:
        """info(msg) for a finished line, as if logged at `created` (time.time())."""
        makers = self._fast_makers(created) if msg.__class__ is str else None
        if makers is None:
            logging.Logger.info(self, msg)
            return
        put = _fast.writer.put_line  # no lock: see WorkerWriter
        for sink, make in makers:
            put(sink, make(msg, created))

    def info_many(self, items: list[tuple[str, float]]) -> None:
        """info_at() for many finished lines, (line, created) in order: the fast path's
        checks once for them all, and one hand-over per target."""
        if not items:
            return
        makers = self._fast_makers(items[0][1])
        if makers is None:
            for msg, _ in items:
                logging.Logger.info(self, msg)
            return
        writer = _fast.writer
        put_lines = getattr(writer, "put_lines", None)
        for sink, make in makers:
            lines = [make(msg, created) for msg, created in items]
            if put_lines is not None:
                put_lines(sink, lines)
            else:
                for line in lines:
                    writer.put_line(sink, line)

    def _fast_makers(self, created: float) -> tuple | None:
        """The line makers of this channel's targets (checked again each second); None: the
        standard path (no pyd handler, a filter, another handler, a target wanting records)."""
        handler = _fast
        if handler is None:
            return None
        writer = handler.writer
        state = self._pyd_fast
        if state is None or state[0] != int(created) or state[1] is not writer:
            state = self._pyd_fast = (int(created), writer, handler.fast_makers(self))
        return state[2]


def mark_preformatted(names: tuple[str, ...] = PREFORMATTED) -> None:
    """Give these channels' loggers the fast path (whoever already holds them keeps the same
    object: accesslog.py looked its logger up at import)."""
    for name in names:
        logger = logging.getLogger(name)
        if type(logger) is logging.Logger:
            logger.__class__ = PreformattedChannel

"""Logging for every pyd process: the main log file, the terminal in development, reopening.

The master opens the files (as root) before forking; workers write through what they inherit.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"
_handlers: list[logging.Handler] = []


class _FileHandler(logging.FileHandler):
    """Append-only file handler whose reopen() follows an external logrotate."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def setup(config, tty: bool = False, owner: tuple[int, int] | None = None) -> None:
    """Route pyd's and the apps' logging to the main log file (and the terminal if tty)."""
    root = logging.getLogger()
    for h in _handlers:
        root.removeHandler(h)
    _handlers.clear()
    formatter = logging.Formatter(FORMAT)
    if config is not None and config.log_file:
        os.makedirs(os.path.dirname(config.log_file) or ".", mode=0o755, exist_ok=True)
        handler = _FileHandler(config.log_file, encoding="utf-8")
        if owner is not None:
            try:
                os.chown(config.log_file, *owner)
            except OSError:
                pass
        handler.setFormatter(formatter)
        _handlers.append(handler)
    if tty or config is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        _handlers.append(stream)
    for h in _handlers:
        root.addHandler(h)
    level = (config.log_level if config is not None else "info").upper()
    root.setLevel(getattr(logging, level))


def reopen() -> None:
    for h in _handlers:
        if isinstance(h, _FileHandler):
            h.reopen()

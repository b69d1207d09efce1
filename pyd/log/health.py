"""Counting what logging could not deliver, and saying so: at once, then at most once a minute.

A full disk, a deleted directory or an unreachable server must never stop serving: targets
drop what they cannot write and count it here; the master reports the counts on stderr and in
the log itself (channel `pyd.log`), so an operator learns about it without a flood.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pyd.log.native import allocate_lock

REPORT_EVERY = 60.0


class Health:
    def __init__(self, on_report: Callable[[str], None] | None = None):
        self._lock = allocate_lock()
        self._pending: dict[str, list] = {}  # target -> [lost, errors, last error]
        self.totals: dict[str, int] = {}  # target -> lines or messages lost since start
        self.last_report = 0.0
        self.on_report = on_report

    def lost(self, target: str, count: int, error: BaseException | str | None = None) -> None:
        """`count` lines or messages for `target` are gone (0: an error that lost nothing)."""
        why = _why(error)
        with self._lock:
            entry = self._pending.setdefault(target, [0, 0, ""])
            entry[0] += count
            entry[1] += 1 if error is not None else 0
            if why:
                entry[2] = why
            self.totals[target] = self.totals.get(target, 0) + count

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return bool(self._pending) and (not self.last_report
                                        or now - self.last_report >= REPORT_EVERY)

    def report(self, now: float | None = None) -> str | None:
        """The pending counts as one message (and clears them) when a report is due."""
        now = time.monotonic() if now is None else now
        if not self.due(now):
            return None
        with self._lock:
            pending, self._pending = self._pending, {}
        self.last_report = now
        parts = []
        for target, (lost, errors, why) in sorted(pending.items()):
            what = f"{lost} lost" if lost else "no loss"
            parts.append(f"{target}: {what}" + (f" ({why})" if why else "")
                         + (f", {errors} errors" if errors > 1 else ""))
        message = "logging degraded: " + "; ".join(parts)
        try:
            os.write(2, f"pyd: {message}\n".encode("utf-8", "replace"))
        except OSError:
            pass
        if self.on_report is not None:
            self.on_report(message)
        return message


def _why(error: BaseException | str | None) -> str:
    if error is None or isinstance(error, str):
        return error or ""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

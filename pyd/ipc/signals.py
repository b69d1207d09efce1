"""Stop kinds and the signals that carry them: one table for the CLI, the master and the service.

As in nginx and gunicorn, QUIT asks for a graceful stop and TERM (or INT, Ctrl-C) a fast one.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

GRACEFUL, FAST, HARD, UPGRADE = "graceful", "fast", "hard", "upgrade"


@dataclass(frozen=True)
class StopSignals:
    """The signal each pyd process is sent for one kind of stop."""

    master: signal.Signals | None  # by the CLI, when the control socket is gone
    service: signal.Signals  # by the master, to the service process
    worker: signal.Signals  # by the master, to each worker


STOPS: dict[str, StopSignals] = {
    GRACEFUL: StopSignals(signal.SIGQUIT, signal.SIGQUIT, signal.SIGQUIT),
    # The old master of an upgrade drains as in a graceful stop; only the master starts it.
    UPGRADE: StopSignals(None, signal.SIGQUIT, signal.SIGQUIT),
    FAST: StopSignals(signal.SIGTERM, signal.SIGTERM, signal.SIGTERM),
    # The master has no signal of its own for a hard stop (INT is Ctrl-C, a fast stop): its
    # shorter deadlines need the control socket; by signal the nearest is a fast stop.
    HARD: StopSignals(signal.SIGTERM, signal.SIGINT, signal.SIGTERM),
}

# What a stop signal means to the process that receives it.
MASTER_RECEIVES: dict[signal.Signals, str] = {
    signal.SIGQUIT: GRACEFUL, signal.SIGTERM: FAST, signal.SIGINT: FAST}
SERVICE_RECEIVES: dict[signal.Signals, str] = {
    signal.SIGQUIT: GRACEFUL, signal.SIGTERM: FAST, signal.SIGINT: HARD}

"""Stop kinds, the signals that carry them and how long each may take: one table for the CLI,
the master and the service.

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


# -- how long a stop may take ---------------------------------------------------------------------

SERVICE_HARD_STOP = 3.0  # the service process on a hard stop, then SIGKILL
SERVICE_STOP_MARGIN = 9.0  # beyond its programs and jobs: a run's kill grace twice, the sweep
WORKERS_STOP = {FAST: 5.0, HARD: 2.0}  # graceful and upgrade: graceful-timeout + 1s
STOP_MARGIN = 15.0  # the CLI waits this beyond both: SIGKILLs repeated, the master's shutdown


@dataclass(frozen=True)
class StopDeadlines:
    """How long each part of a stop may take before the master kills what is left."""

    service: float  # the service process (supervised programs, then job runs), stopped first
    workers: float  # then the workers

    @property
    def total(self) -> float:
        """How long the CLI waits for the master to be gone."""
        return self.service + self.workers + STOP_MARGIN


def stop_deadlines(config, how: str) -> StopDeadlines:
    """The deadlines of a stop of kind `how` under `config` (its graceful-timeout and its
    Process sections' stop-timeout)."""
    drains = how in (GRACEFUL, UPGRADE)
    if how == HARD:
        service = SERVICE_HARD_STOP
    else:
        programs = max((s.settings["stop-timeout"] for s in config.of_kind("Process")),
                       default=0.0)
        service = programs + (config.graceful_timeout if drains else 0.0) + SERVICE_STOP_MARGIN
    workers = config.graceful_timeout + 1.0 if drains else WORKERS_STOP[how]
    return StopDeadlines(service, workers)

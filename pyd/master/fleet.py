"""The fleet policy: from the workers the master knows, what they wrote in their slots, the
target and the clock, to actions (spawn a successor, drain, kill, change the target).

No I/O: no fork, no kill, no clock, no shared memory. The policy keeps its books (each
worker's phase, successor links, backoff, scaling timers) and the master does what the actions
say. Tests drive it with a fake clock and fake slots (tests/unit/test_fleet.py).

A worker's life: booting -> serving -> retiring (it asked, or a reload/update made it old)
-> draining (its successor serves; SIGQUIT) -> gone. A retiring worker gets its successor
first and drains only once the successor serves, so no connection is refused.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyd.ipc import scoreboard as sb
from pyd.system import backoff
from pyd.worker.main import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, EXIT_TIMEOUT

LIMIT_REASONS = (sb.R_REQUESTS, sb.R_MEMORY, sb.R_IDLE, sb.R_BAD_REPORT)  # under max-recycling
BOOT_TIMEOUT = 60.0  # a worker that does not serve within this is killed
ABORT_GRACE = 3.0  # after SIGABRT (request-timeout), SIGKILL
KILL_AGAIN = 5.0  # a killed worker not yet reaped is killed again after this
MAX_BACKOFF = 60.0
SCALE_UP_AFTER = 3.0  # every serving worker busy for this long: one more
SCALE_DOWN_AFTER = 30.0  # two or more idle for this long: one less
BEAT_GRACE = 1.0  # the hub ticks once a second: silence past request-timeout + this is a block


@dataclass(eq=False)
class WorkerInfo:
    """What the master knows of one worker process."""

    pid: int
    slot: int
    number: int
    generation: int
    spawned: float
    spawned_wall: float = 0.0
    phase: str = "booting"  # booting -> serving -> retiring -> draining
    reason: int = sb.R_NONE  # why it retires or drains
    deadline: float = 0.0  # draining: SIGKILL after this
    aborted: bool = False
    successor: WorkerInfo | None = None
    predecessor: WorkerInfo | None = None
    # The heartbeat as the master last saw it, and when (its own clock) it last changed: a
    # worker cannot make the master think another's hub is stuck, nor can a clock step.
    beat: float = 0.0
    beat_seen: float = 0.0
    lied: bool = False  # it wrote something no worker may write; it is being replaced


class Backoff(backoff.Backoff):
    """A worker number whose boot failed: when it may be spawned again, and why it failed."""

    def __init__(self):
        super().__init__(0.5, MAX_BACKOFF)
        self.message = ""


# -- actions --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spawn:
    number: int
    predecessor: WorkerInfo | None = None


@dataclass(frozen=True)
class Kill:
    worker: WorkerInfo
    signal: int


@dataclass(frozen=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True)
class Target:
    workers: int


@dataclass(frozen=True)
class Limits:
    """The directives the policy follows."""

    max_recycling: int = 1
    graceful_timeout: float = 30.0
    request_timeout: float = 0.0
    min_workers: int | None = None
    max_workers: int | None = None

    @classmethod
    def of(cls, config) -> Limits:
        return cls(config.max_recycling, config.graceful_timeout, config.request_timeout or 0.0,
                   config.min_workers, config.max_workers)


@dataclass
class Fleet:
    """The policy's books and its verbs; each verb returns the actions it decided."""

    limits: Limits = field(default_factory=Limits)
    backoff: dict[int, Backoff] = field(default_factory=dict)
    busy_since: float | None = None
    idle_since: float | None = None

    # -- what the workers wrote ---------------------------------------------------------------

    def sync(self, workers: Iterable[WorkerInfo], slots: Mapping[int, sb.SlotView],
             generation: int, generation_reason: int, now: float) -> list:
        """Phases from what workers wrote: serving, retiring (asked, or of an older
        generation); a state no worker may write gets that worker replaced."""
        actions: list = []
        for w in list(workers):
            slot = slots[w.slot]
            state = slot.state
            if state not in sb.WORKER_STATES and not (state == sb.STARTING
                                                      and w.phase == "booting"):
                if w.phase != "draining" and not w.lied:
                    actions += self.distrust(w, state, now)
                continue
            if w.lied:
                continue
            if w.phase == "booting" and state in (sb.IDLE, sb.BUSY, sb.RETIRING):
                w.phase = "serving"
                self.backoff.pop(w.number, None)
                if w.predecessor is not None:
                    old = w.predecessor
                    actions += self.drain(old, old.reason, now)
            if w.phase == "serving" and state == sb.RETIRING:
                w.phase, w.reason = "retiring", slot.retire_reason
            elif w.phase == "serving" and w.generation < generation:
                w.phase, w.reason = "retiring", generation_reason
        return actions

    def distrust(self, w: WorkerInfo, state: int, now: float) -> list:
        """w wrote garbage into its slot: replace it (a successor first when it served)."""
        w.lied = True
        actions: list = [Log(logging.ERROR, f"worker {w.number} (pid {w.pid}) wrote an invalid "
                                            f"state ({state}) into its scoreboard slot; "
                                            "replacing it")]
        if w.phase == "booting":
            unlink(w)
            actions += self.drain(w, sb.R_BAD_REPORT, now)
        elif w.phase == "serving" or (w.phase == "retiring" and w.successor is None):
            w.phase, w.reason = "retiring", sb.R_BAD_REPORT
        return actions

    # -- keeping the count --------------------------------------------------------------------

    def manage(self, workers: Iterable[WorkerInfo], target: int, now: float) -> list:
        """Keep `target` workers serving; give every retiring worker a successor first (at
        most max-recycling at a time for limits); scale down; kill the late."""
        workers = list(workers)
        actions: list = []
        holders = {w.number: w for w in workers
                   if w.phase in ("serving", "retiring")
                   or (w.phase == "booting" and w.predecessor is None)}
        recycling = sum(1 for w in workers
                        if (w.phase == "booting" and w.predecessor is not None
                            and w.predecessor.reason in LIMIT_REASONS)
                        or (w.phase == "draining" and w.reason in LIMIT_REASONS))
        for number in range(1, target + 1):
            w = holders.get(number)
            b = self.backoff.get(number)
            if b is not None and b.waiting(now):
                continue
            if w is None:
                actions.append(Spawn(number))
            elif w.phase == "retiring" and w.successor is None:
                if w.reason in LIMIT_REASONS:
                    if recycling >= self.limits.max_recycling:
                        continue
                    recycling += 1
                actions.append(Spawn(number, w))
        for number, w in holders.items():
            if number > target:
                actions += self.drain(w, sb.R_SCALE_DOWN, now)
        for w in workers:
            if w.phase == "booting" and now - w.spawned > BOOT_TIMEOUT:
                actions += [Log(logging.ERROR, f"worker {w.number} (pid {w.pid}) did not start "
                                               f"within {BOOT_TIMEOUT:.0f}s; killing it"),
                            Kill(w, signal.SIGKILL)]
            elif w.phase == "draining" and now > w.deadline:
                actions += [Log(logging.WARNING, f"worker {w.number} (pid {w.pid}) still "
                                                 "draining after graceful-timeout; killing it"),
                            Kill(w, signal.SIGKILL)]
                w.deadline = now + KILL_AGAIN
        return actions

    def drain(self, w: WorkerInfo, reason: int, now: float) -> list:
        """Tell a worker to stop accepting and finish what it has (graceful-timeout)."""
        if w.successor is not None:
            w.successor.predecessor = None
            w.successor = None
        w.phase, w.reason = "draining", reason
        w.deadline = now + self.limits.graceful_timeout + 1.0
        return [Kill(w, signal.SIGQUIT)]

    # -- request-timeout ----------------------------------------------------------------------

    def murder(self, workers: Iterable[WorkerInfo], slots: Mapping[int, sb.SlotView],
               now: float, wall: float) -> list:
        """request-timeout: a request (or a blocked hub) past the limit gets its worker
        SIGABRT (it logs every greenlet's stack), then SIGKILL after ABORT_GRACE.

        What a worker writes can earn only its own end: the oldest request's start is held
        within the worker's life, and silence is measured on the master's clock since the
        heartbeat last changed."""
        limit = self.limits.request_timeout
        actions: list = []
        for w in list(workers):
            slot = slots[w.slot]
            if slot.heartbeat != w.beat:
                w.beat, w.beat_seen = slot.heartbeat, now
            if not limit:
                continue
            if w.aborted:
                if now > w.deadline:
                    actions.append(Kill(w, signal.SIGKILL))
                    w.deadline = now + KILL_AGAIN
                continue
            if w.phase not in ("serving", "retiring", "draining"):
                continue
            oldest = min(max(slot.oldest_request, w.spawned_wall), wall)
            running = wall - oldest if slot.oldest_request else 0.0
            silent = now - w.beat_seen
            # A heartbeat that stopped means the hub itself is blocked (a CPU-bound request):
            # an idle worker's hub always ticks.
            if running > limit or silent > limit + BEAT_GRACE:
                actions += [Log(logging.ERROR, f"worker {w.number} (pid {w.pid}): a request has "
                                               f"run for {max(running, silent):.1f}s "
                                               f"(request-timeout {limit:g}s); the worker logs "
                                               "its stacks and is replaced"),
                            Kill(w, signal.SIGABRT)]
                if w.successor is not None:
                    w.successor.predecessor = None
                    w.successor = None
                w.phase, w.reason, w.aborted = "draining", sb.R_TIMEOUT, True
                w.deadline = now + ABORT_GRACE
        return actions

    # -- scaling ------------------------------------------------------------------------------

    def scale(self, workers: Iterable[WorkerInfo], slots: Mapping[int, sb.SlotView],
              target: int, now: float) -> list:
        """Between min-workers and max-workers: one more when all are busy for 3s, one less
        when two or more have been idle for 30s."""
        if self.limits.min_workers is None and self.limits.max_workers is None:
            return []
        serving = [slots[w.slot] for w in workers if w.phase == "serving"]
        if not serving:
            return []
        actions: list = []
        busy = sum(1 for s in serving if s.active)
        if busy == len(serving):
            self.busy_since = self.busy_since or now
            if now - self.busy_since >= SCALE_UP_AFTER:
                actions.append(Target(target + 1))
                self.busy_since = None
        else:
            self.busy_since = None
        if len(serving) - busy >= 2:
            self.idle_since = self.idle_since or now
            if now - self.idle_since >= SCALE_DOWN_AFTER:
                actions.append(Target(target - 1))
                self.idle_since = None
        else:
            self.idle_since = None
        return actions

    # -- a worker is gone ---------------------------------------------------------------------

    def exited(self, w: WorkerInfo, code: int, message: str, stopping: bool,
               now: float) -> tuple[int, list]:
        """Why w ended (a scoreboard reason) from its exit code (negative: a signal), and what
        to log; a failed boot backs off its number (0.5s, doubling, up to MAX_BACKOFF)."""
        unlink(w)
        if code in (EXIT_BOOT_ERROR, EXIT_APP_LOAD_ERROR) and w.phase == "booting":
            message = message or f"worker exited with status {code}"
            b = self.backoff.setdefault(w.number, Backoff())
            b.message = message
            delay = b.failed(now)
            return sb.R_BOOT_ERROR, [Log(logging.ERROR, f"worker {w.number} (pid {w.pid}) "
                                                        f"failed to start; next try in "
                                                        f"{delay:.1f}s:\n{message}")]
        if code == EXIT_TIMEOUT or w.aborted:
            return sb.R_TIMEOUT, []
        if w.phase == "draining" or stopping:
            logs = [Log(logging.WARNING, f"worker {w.number} (pid {w.pid}) killed by signal "
                                         f"{-code} while stopping")] if code < 0 else []
            reason = w.reason if 0 < w.reason < len(sb.REASONS) else sb.R_STOPPED
            return reason, logs
        if code < 0:
            return sb.R_KILLED, [Log(logging.ERROR, f"worker {w.number} (pid {w.pid}) killed by "
                                                    f"signal {-code}")]
        return sb.R_CRASHED, [Log(logging.ERROR, f"worker {w.number} (pid {w.pid}) exited "
                                                  f"unexpectedly with status {code}")]


def unlink(w: WorkerInfo) -> None:
    """w no longer replaces, nor is replaced by, anyone."""
    if w.successor is not None:
        w.successor.predecessor = None
        w.successor = None
    if w.predecessor is not None:
        w.predecessor.successor = None
        w.predecessor = None

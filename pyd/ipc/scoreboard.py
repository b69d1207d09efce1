"""The scoreboard: a fixed array of worker slots in shared memory, made before the first fork.

A slot belongs to a worker while it lives and is reused after it is reaped, so the scoreboard
never grows with the number of replacements. Each field has one writer: the master writes
pid/state on spawn and reap, the worker writes its own counters, state and boot message.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass

# Slot states.
FREE, STARTING, IDLE, BUSY, RETIRING, STOPPING = range(6)
STATE_NAMES = ("free", "starting", "idle", "busy", "retiring", "stopping")

# Why a worker retires or stopped; also its exit reason.
REASONS = ("", "requests", "memory", "idle", "reload", "update", "timeout", "killed",
           "crashed", "boot-error", "stopped", "scale-down", "orphaned")
(R_NONE, R_REQUESTS, R_MEMORY, R_IDLE, R_RELOAD, R_UPDATE, R_TIMEOUT, R_KILLED, R_CRASHED,
 R_BOOT_ERROR, R_STOPPED, R_SCALE_DOWN, R_ORPHANED) = range(len(REASONS))

# state, reason, last_exit, generation, pid, number, started, heartbeat, oldest request,
# requests, rss, connections, active requests; then a boot message of MESSAGE_SIZE bytes.
_HEAD = struct.Struct("=BBBBiIddd QQ II")
MESSAGE_SIZE = 1024
SLOT_SIZE = 64 * ((_HEAD.size + 2 + MESSAGE_SIZE + 63) // 64)

_OFF_STATE, _OFF_REASON, _OFF_LAST_EXIT = 0, 1, 2
_OFF_HEARTBEAT = struct.calcsize("=BBBBiId")
_OFF_OLDEST = _OFF_HEARTBEAT + 8
_OFF_REQUESTS = _OFF_OLDEST + 8
_COUNTERS = struct.Struct("=ddQQII")  # heartbeat .. active, written together by the worker
_MSG_LEN = struct.Struct("=H")
_OFF_MSG = _HEAD.size


@dataclass(frozen=True)
class SlotView:
    """A snapshot of one slot, as fullstatus and the master read it."""

    index: int
    state: int
    reason: int
    last_exit: int
    generation: int
    pid: int
    number: int
    started: float
    heartbeat: float
    oldest_request: float
    requests: int
    rss: int
    connections: int
    active: int

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state] if self.state < len(STATE_NAMES) else "?"

    @property
    def reason_name(self) -> str:
        return REASONS[self.reason] if self.reason < len(REASONS) else "?"


class Scoreboard:
    def __init__(self, slots: int):
        self.size = slots
        self.mem = mmap.mmap(-1, slots * SLOT_SIZE, flags=mmap.MAP_SHARED)
        # Workers write a byte here when they change state, so the master need not poll.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def notify(self) -> None:
        try:
            os.write(self.wake_w, b".")
        except OSError:
            pass  # the pipe is full: the master is awake anyway

    def _off(self, index: int) -> int:
        return index * SLOT_SIZE

    # -- the master -----------------------------------------------------------------------------

    def claim(self, number: int, generation: int) -> int | None:
        """A free slot for a new worker, marked STARTING; None if all are taken."""
        for i in range(self.size):
            if self.mem[self._off(i)] == FREE:
                last_exit = self.mem[self._off(i) + _OFF_LAST_EXIT]
                _HEAD.pack_into(self.mem, self._off(i), STARTING, R_NONE, last_exit,
                                generation & 0xFF, 0, number, time.time(), time.time(), 0.0,
                                0, 0, 0, 0)
                _MSG_LEN.pack_into(self.mem, self._off(i) + _OFF_MSG, 0)
                return i
        return None

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("=i", self.mem, self._off(index) + 4, pid)

    def release(self, index: int, exit_reason: int) -> None:
        """The worker is reaped: free its slot, keeping why it ended."""
        off = self._off(index)
        self.mem[off + _OFF_LAST_EXIT] = exit_reason
        self.mem[off + _OFF_STATE] = FREE

    # -- the worker and the master --------------------------------------------------------------

    def set_state(self, index: int, state: int, reason: int | None = None) -> None:
        off = self._off(index)
        if reason is not None:
            self.mem[off + _OFF_REASON] = reason
        self.mem[off + _OFF_STATE] = state

    def state(self, index: int) -> int:
        return self.mem[self._off(index)]

    def update(self, index: int, heartbeat: float, oldest_request: float, requests: int,
               rss: int, connections: int, active: int) -> None:
        """The worker's periodic report (once a second, and when it changes state)."""
        _COUNTERS.pack_into(self.mem, self._off(index) + _OFF_HEARTBEAT, heartbeat,
                            oldest_request, requests, rss, connections, active)

    def set_message(self, index: int, message: str) -> None:
        data = message.encode("utf-8", "replace")[:MESSAGE_SIZE]
        off = self._off(index) + _OFF_MSG
        self.mem[off + 2:off + 2 + len(data)] = data
        _MSG_LEN.pack_into(self.mem, off, len(data))

    def message(self, index: int) -> str:
        off = self._off(index) + _OFF_MSG
        (n,) = _MSG_LEN.unpack_from(self.mem, off)
        return bytes(self.mem[off + 2:off + 2 + min(n, MESSAGE_SIZE)]).decode("utf-8", "replace")

    def read(self, index: int) -> SlotView:
        return SlotView(index, *_HEAD.unpack_from(self.mem, self._off(index)))

    def slots(self) -> list[SlotView]:
        return [self.read(i) for i in range(self.size)]

    def live(self) -> list[SlotView]:
        return [s for s in self.slots() if s.state != FREE]

    def close(self) -> None:
        self.mem.close()
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

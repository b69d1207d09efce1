"""The scoreboard: a fixed array of worker slots in shared memory, made before the first fork.

A slot belongs to a worker while it lives and is reused after it is reaped, so the scoreboard
never grows with the number of replacements. Each field has one writer: the master writes
pid/state on spawn and reap, the worker writes its own counters, state and boot message.

Everything a worker writes is untrusted input to the master. Each slot is its own shared
mapping, and a forked worker unmaps every slot but its own (`keep_only`), so a worker can lie
only about itself; the master keeps its own record of which slots are taken, and reads values
through checks (`read` gives finite times, `valid_state`, `retire_reason`, `message` without
control characters).

After the head, page-aligned, each slot has a counters block of a size fixed when the
scoreboard is made (pyd/ipc/counters.py lays it out): the worker writes it through
`counters_buffer`, the master reads a copy of it with `counters_bytes`, and `claim` clears the
part in use, so a new worker never inherits its predecessor's counts.
"""

from __future__ import annotations

import math
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
           "crashed", "boot-error", "stopped", "scale-down", "orphaned", "bad-report")
(R_NONE, R_REQUESTS, R_MEMORY, R_IDLE, R_RELOAD, R_UPDATE, R_TIMEOUT, R_KILLED, R_CRASHED,
 R_BOOT_ERROR, R_STOPPED, R_SCALE_DOWN, R_ORPHANED, R_BAD_REPORT) = range(len(REASONS))

# What a worker may write: its state after STARTING (written by the master at spawn), and why
# it asks to retire. Anything else in its slot is a lie the master answers by replacing it.
WORKER_STATES = frozenset({IDLE, BUSY, RETIRING, STOPPING})
RETIRE_REASONS = (R_REQUESTS, R_MEMORY, R_IDLE)

# state, reason, last_exit, generation, pid, number, started, heartbeat, oldest request,
# requests, rss, connections, active requests; then a boot message of MESSAGE_SIZE bytes.
_HEAD = struct.Struct("=BBBBiIddd QQ II")
MESSAGE_SIZE = 1024
SLOT_SIZE = 64 * ((_HEAD.size + 2 + MESSAGE_SIZE + 63) // 64)
_MAP_SIZE = mmap.PAGESIZE * ((SLOT_SIZE + mmap.PAGESIZE - 1) // mmap.PAGESIZE)

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

    @property
    def retire_reason(self) -> int:
        """Why the worker asks to retire: one of RETIRE_REASONS, else R_BAD_REPORT."""
        return self.reason if self.reason in RETIRE_REASONS else R_BAD_REPORT


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _printable(text: str) -> str:
    """No terminal escapes or other control characters from a worker reach a log or a tty."""
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


class Scoreboard:
    def __init__(self, slots: int, counters: int = 0):
        self.size = slots
        # The counters block: its capacity, and how much of it the current layout uses (what
        # claim clears; untouched pages of the block cost no memory).
        self.counters_capacity = mmap.PAGESIZE * ((counters + mmap.PAGESIZE - 1)
                                                  // mmap.PAGESIZE)
        self.counters_used = 0
        # One mapping per slot: a forked worker keeps only its own (keep_only).
        self._maps: list[mmap.mmap | None] = [
            mmap.mmap(-1, _MAP_SIZE + self.counters_capacity, flags=mmap.MAP_SHARED)
            for _ in range(slots)]
        self._taken: set[int] = set()  # the master's own record; a worker can write FREE
        # Workers write a byte here when they change state, so the master need not poll.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def notify(self) -> None:
        try:
            os.write(self.wake_w, b".")
        except OSError:
            pass  # the pipe is full: the master is awake anyway

    def _mem(self, index: int) -> mmap.mmap:
        mem = self._maps[index]
        if mem is None:
            raise ValueError(f"scoreboard slot {index} is not mapped in this process")
        return mem

    def keep_only(self, index: int | None) -> None:
        """In a forked child: unmap every slot but `index` (None: all of them) and close the
        master's end of the pipe, so that nothing this process runs can write another's slot."""
        for i, mem in enumerate(self._maps):
            if i != index and mem is not None:
                mem.close()
                self._maps[i] = None
        self._taken = set() if index is None else {index}
        for fd in (self.wake_r,) if index is not None else (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the master -----------------------------------------------------------------------------

    def claim(self, number: int, generation: int) -> int | None:
        """A free slot for a new worker, marked STARTING; None if all are taken."""
        for i in range(self.size):
            if i in self._taken:
                continue
            mem = self._mem(i)
            last_exit = mem[_OFF_LAST_EXIT]
            now = time.time()
            _HEAD.pack_into(mem, 0, STARTING, R_NONE, last_exit, generation & 0xFF, 0, number,
                            now, now, 0.0, 0, 0, 0, 0)
            _MSG_LEN.pack_into(mem, _OFF_MSG, 0)
            used = min(self.counters_used, self.counters_capacity)
            if used:
                mem[_MAP_SIZE:_MAP_SIZE + used] = bytes(used)
            self._taken.add(i)
            return i
        return None

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("=i", self._mem(index), 4, pid)

    def release(self, index: int, exit_reason: int) -> None:
        """The worker is reaped: free its slot, keeping why it ended."""
        mem = self._mem(index)
        mem[_OFF_LAST_EXIT] = exit_reason
        mem[_OFF_STATE] = FREE
        self._taken.discard(index)

    def taken(self, index: int) -> bool:
        return index in self._taken

    # -- the worker and the master --------------------------------------------------------------

    def set_state(self, index: int, state: int, reason: int | None = None) -> None:
        mem = self._mem(index)
        if reason is not None:
            mem[_OFF_REASON] = reason
        mem[_OFF_STATE] = state

    def state(self, index: int) -> int:
        return self._mem(index)[_OFF_STATE]

    def valid_state(self, index: int) -> int | None:
        """The state a worker wrote, or None if it is not one a worker may write."""
        state = self.state(index)
        return state if state in WORKER_STATES or state == STARTING else None

    def update(self, index: int, heartbeat: float, oldest_request: float, requests: int,
               rss: int, connections: int, active: int) -> None:
        """The worker's periodic report (once a second, and when it changes state)."""
        _COUNTERS.pack_into(self._mem(index), _OFF_HEARTBEAT, heartbeat, oldest_request,
                            requests, rss, connections, active)

    def counters_buffer(self, index: int) -> memoryview:
        """The worker's own writable view of its counters block (it holds the mapping open)."""
        return memoryview(self._mem(index))[_MAP_SIZE:_MAP_SIZE + self.counters_capacity]

    def counters_bytes(self, index: int, size: int) -> bytes:
        """A copy of the first `size` bytes of a slot's counters block, for the master to
        check (what it checks cannot change under it)."""
        size = max(0, min(size, self.counters_capacity))
        return self._mem(index)[_MAP_SIZE:_MAP_SIZE + size]

    def set_message(self, index: int, message: str) -> None:
        data = message.encode("utf-8", "replace")[:MESSAGE_SIZE]
        mem = self._mem(index)
        mem[_OFF_MSG + 2:_OFF_MSG + 2 + len(data)] = data
        _MSG_LEN.pack_into(mem, _OFF_MSG, len(data))

    def message(self, index: int) -> str:
        mem = self._mem(index)
        (n,) = _MSG_LEN.unpack_from(mem, _OFF_MSG)
        data = bytes(mem[_OFF_MSG + 2:_OFF_MSG + 2 + min(n, MESSAGE_SIZE)])
        return _printable(data.decode("utf-8", "replace"))

    def read(self, index: int) -> SlotView:
        """A snapshot of the slot; its times are finite (0.0 for NaN or infinity)."""
        v = _HEAD.unpack_from(self._mem(index), 0)
        return SlotView(index, *v[:6], _finite(v[6]), _finite(v[7]), _finite(v[8]), *v[9:])

    def slots(self) -> list[SlotView]:
        return [self.read(i) for i in range(self.size) if self._maps[i] is not None]

    def live(self) -> list[SlotView]:
        """The slots the master has given out (not what their state bytes claim)."""
        return [self.read(i) for i in sorted(self._taken)]

    def close(self) -> None:
        for i, mem in enumerate(self._maps):
            if mem is not None:
                mem.close()
                self._maps[i] = None
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

"""Log targets in the master: a bounded queue and a real thread each, so no target waits for
another, and nobody waits for a target.

The master's own records and the dispatcher (what workers send) push bytes;
the target's thread writes them. A full queue drops and counts (health.py): logging degrades,
serving never blocks. Streams (stdout, stderr, the terminal) are here; files in files.py,
syslog and GELF servers in remote.py.
"""

from __future__ import annotations

import os
from collections import deque

from pyd.log.formats import LINES
from pyd.log.health import Health
from pyd.log.native import Done, Wakeup, allocate_lock, sleep, start_new_thread

QUEUE_LIMIT = 16 << 20  # bytes waiting for one target before it drops
ITEM_COST = 64  # one queued item beyond its bytes: a flood of tiny messages is bounded too
IDLE_TICK = 1.0


class Sink:
    """One target: push() from anywhere, deliver() in its own thread."""

    kind = LINES

    def __init__(self, key: str, label: str, health: Health):
        self.key, self.label, self.health = key, label, health
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._lock = allocate_lock()
        self._wakeup = Wakeup()
        self._stopping = False
        self._reopen: Done | None = None
        self.done = Done()
        self.started = False

    # -- any thread -----------------------------------------------------------------------------

    def push(self, data: bytes) -> None:
        with self._lock:
            size = len(data) + ITEM_COST
            if self._queued + size > QUEUE_LIMIT or self._stopping:
                lost = data.count(b"\n") if self.kind == LINES else 1
                self.health.lost(self.label, lost, "queue full: the target is too slow"
                                 if not self._stopping else "logging stopped")
                return
            self._queue.append(data)
            self._queued += size
        self._wakeup.set()

    def start(self) -> None:
        if not self.started:
            self.started = True
            start_new_thread(self._run, ())

    def stop(self) -> None:
        """Write what is queued, then close; wait with done.wait()."""
        self._stopping = True
        self._wakeup.set()
        if not self.started:
            self.close()
            self.done.set()

    def request_reopen(self) -> Done:
        done = Done()
        self._reopen = done
        self._wakeup.set()
        if not self.started:
            self.reopen()
            done.set()
        return done

    # -- the target's thread --------------------------------------------------------------------

    def _take(self) -> list[bytes]:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            self._queued = 0
        return items

    def _run(self) -> None:
        try:
            while True:
                self._wakeup.wait(self.timeout())
                if self._reopen is not None:
                    done, self._reopen = self._reopen, None
                    self.reopen()
                    done.set()
                items = self._take()
                if items:
                    try:
                        self.deliver(items)
                    except Exception as e:  # a bug must cost lines, not the thread
                        self.health.lost(self.label, self.count(items), e)
                self.tick()
                if self._stopping and not self._queue:
                    break
        finally:
            self.close()
            self.done.set()

    def count(self, items: list[bytes]) -> int:
        return sum(i.count(b"\n") for i in items) if self.kind == LINES else len(items)

    def timeout(self) -> float:
        return IDLE_TICK

    def deliver(self, items: list[bytes]) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called at least once a second: time-based work (rotation, reconnecting)."""

    def reopen(self) -> None:
        """`pyd reopenlog`: files reopen their path; others have nothing to do."""

    def close(self) -> None:
        pass

    def close_in_child(self) -> None:
        """In a freshly forked worker: let go of the descriptors, touch nothing else."""


def write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write everything; (bytes written, the error that stopped it)."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        try:
            done += os.write(fd, view[done:])
        except BlockingIOError as e:  # a non-blocking terminal or pipe: wait a little
            if getattr(e, "characters_written", 0):
                done += e.characters_written
            sleep(0.01)
        except InterruptedError:
            continue
        except OSError as e:
            return done, e
    return done, None


class DescriptorSink(Sink):
    """A target written through one descriptor of the master's: a file or a stream."""

    fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def close_in_child(self) -> None:
        self.close()


class StreamSink(DescriptorSink):
    """stdout, stderr or the terminal (verbose-tty) of the master."""

    def __init__(self, key: str, label: str, health: Health, fd: int):
        super().__init__(key, label, health)
        self.fd = os.dup(fd)  # ours: stays valid whatever else closes fd 1 or 2

    def deliver(self, items: list[bytes]) -> None:
        data = b"".join(items)
        done, error = write_all(self.fd, data)
        if error is not None:
            self.health.lost(self.label, data.count(b"\n", done) or 1, error)


"""Real OS threads, locks, sockets and descriptors for the log, even after gevent patched them.

Log targets block (a slow disk, a TCP server that stops reading): each gets its own real thread
so that neither the master's hub nor the other targets wait. gevent's patched primitives would
turn those threads back into greenlets, so the originals are used here.
"""

from __future__ import annotations

from gevent import monkey

start_new_thread = monkey.get_original("_thread", "start_new_thread")
allocate_lock = monkey.get_original("_thread", "allocate_lock")
RLock = monkey.get_original("_thread", "RLock")
get_ident = monkey.get_original("_thread", "get_ident")
socket = monkey.get_original("socket", "socket")
getaddrinfo = monkey.get_original("socket", "getaddrinfo")
sleep = monkey.get_original("time", "sleep")
close = monkey.get_original("os", "close")  # gevent's defers a socket's close to the loop
epoll = monkey.get_original("select", "epoll")
poll = monkey.get_original("select", "poll")


class Wakeup:
    """An auto-reset flag a real thread sleeps on; set() from any thread or greenlet."""

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()  # held: not set

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """True if set (and now cleared), False on timeout."""
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(0.0, timeout))


class Done:
    """A flag that stays set: a thread says it finished, others wait for it with a deadline."""

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()
        self.is_set = False

    def set(self) -> None:
        if not self.is_set:
            self.is_set = True
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        if self.is_set:
            return True
        if self._lock.acquire(timeout=max(0.0, timeout)):
            self._lock.release()
        return self.is_set

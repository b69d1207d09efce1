"""Becoming a daemon: our own fcntl-locked pidfile, python-daemon's DaemonContext, sd_notify.

The lock, not the pid written in the file, says whether a master runs: a pid left by a dead
master (or reused by an unrelated process) is stale and replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os


class PidfileError(Exception):
    """The pidfile cannot be taken: one line saying why."""


class Pidfile:
    """A pidfile held with a POSIX lock for the master's whole life.

    Usable as DaemonContext's `pidfile` (a context manager): it is taken in the daemon process
    itself, after the forks, since POSIX locks are not inherited by children.
    """

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        self.stale_pid: int | None = None

    def acquire(self) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise PidfileError(f"cannot write the pidfile {self.path}: {e.strerror}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                pid = read_pid(self.path)
                raise PidfileError(f"pyd is already running (pid {pid}, pidfile {self.path})"
                                   if pid else f"the pidfile {self.path} is locked by another "
                                               "process") from None
            raise PidfileError(f"cannot lock the pidfile {self.path}: {e.strerror}") from None
        old = os.read(fd, 64).strip()
        self.stale_pid = int(old) if old.isdigit() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def rewrite(self) -> None:
        """Write our pid again (after a fork changed it)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self, unlink: bool = True) -> None:
        if self.fd is None:
            return
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None

    # DaemonContext's protocol
    def __enter__(self) -> Pidfile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(path: str) -> int | None:
    """The pid of the master holding this pidfile's lock, or None when no master runs.

    Never call this (nor read_pid) in the master itself: closing any descriptor of a file drops
    the process's POSIX locks on it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # A shared lock conflicts with the master's exclusive one; taking it means nobody runs.
        # (Read-only descriptors allow only shared POSIX locks.)
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_pid(path)
    finally:
        os.close(fd)
    return None


def check_writable(path: str) -> None:
    """Fail early, in the foreground, when the pidfile could never be written."""
    directory = os.path.dirname(os.path.abspath(path))
    probe = directory
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    target = path if os.path.exists(path) else probe
    if not os.access(target, os.W_OK):
        raise PidfileError(f"cannot write the pidfile {path}: permission denied")


def daemon_context(preserve: list[int], cwd: str = "/"):
    """python-daemon's DaemonContext, leaving signals and our descriptors to us."""
    import daemon

    return daemon.DaemonContext(working_directory=cwd, umask=0o022, detach_process=True,
                                files_preserve=preserve, signal_map={}, prevent_core=False)


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    import socket

    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
        return True
    except OSError:
        return False

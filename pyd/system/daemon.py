"""Becoming a daemon: our own fcntl-locked pidfile, python-daemon's DaemonContext, sd_notify.

The lock, not the pid written in the file, says whether a master runs: a pid left by a dead
master (or reused by an unrelated process) is stale and replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from pyd.system.trust import open_nofollow

UPGRADE_FD_ENV = "PYD__UPGRADE_FD"  # the pipe a re-executed master reports READY on
# What only the master may hold: systemd's notify socket and watchdog, socket activation,
# and what `pyd upgrade` hands a new master. Scrubbed in every child right after the fork.
MASTER_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS",
                   "LISTEN_PID", "LISTEN_FDNAMES", UPGRADE_FD_ENV, "PYD__LISTENERS")


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
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise PidfileError(f"cannot write the pidfile {self.path}: "
                               f"{e.strerror or e}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise PidfileError(f"cannot write the pidfile {self.path}: it is not a plain file "
                               "(a device, a pipe, or a hard link to another file)")
        os.set_blocking(fd, True)
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
        fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def running_pid(path: str) -> int | None:
    """The pid of the master holding this pidfile's lock, or None when no master runs.

    Never call this (nor read_pid) in the master itself: closing any descriptor of a file drops
    the process's POSIX locks on it.
    """
    try:
        fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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


def scrub_environ(env: dict | None = None) -> None:
    """In a child of the master: drop what only the master may use (MASTER_ONLY_ENV)."""
    env = os.environ if env is None else env
    for name in MASTER_ONLY_ENV:
        env.pop(name, None)


def raise_nofile() -> tuple[int, int]:
    """The soft RLIMIT_NOFILE up to the hard one (root may not raise the hard one without
    asking: that is the unit's LimitNOFILE=); returns (soft, hard) as they are now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard_wanted = _nr_open()
    else:
        hard_wanted = hard
    if soft != resource.RLIM_INFINITY and soft < hard_wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard_wanted, hard))
            soft = hard_wanted
        except (ValueError, OSError):
            pass
    return soft, hard


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


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

"""Log files: the master's thread is their only writer; rotation by size and time; reopen.

Workers never open a log file: their lines reach the master as datagrams (transport.py), so
a file can be rotated or reopened by root while workers run as nobody or in a chroot, and
every write is a run of whole lines into the one current file. Rotation happens between two
writes: `pyd.log` becomes `pyd.log-20240501-120000`, a new `pyd.log` takes its place, and the
housekeeper (compress.py) compresses and prunes the old one off the request path.
"""

from __future__ import annotations

import math
import os
import stat
import time

from pyd.log.health import Health
from pyd.log.sinks import DescriptorSink, write_all
from pyd.system.trust import open_nofollow

FILE_MODE = 0o640  # access logs hold client addresses: not for every local user
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
RETRY_AFTER = 60.0  # a rotation that failed (rename refused, disk full) is tried again then


def next_boundary(now: float, every: float) -> float:
    """The next multiple of `every` in local time: 1d rotates at midnight, 1h on the hour."""
    offset = time.localtime(now).tm_gmtoff
    return (math.floor((now + offset) / every) + 1) * every - offset


def rotated_name(path: str, now: float) -> str:
    """`path-YYYYmmdd-HHMMSS`, with `-N` when that second already has one."""
    base = f"{path}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"
    name, n = base, 1
    while any(os.path.lexists(name + ext) for ext in ("", ".gz", ".zst")):
        n += 1
        name = f"{base}-{n}"
    return name


class FileSink(DescriptorSink):
    def __init__(self, key: str, label: str, health: Health, path: str, *,
                 rotate_size: int = 0, rotate_every: float = 0.0, keep: int = 7,
                 compress: str = "off", housekeeper=None):
        super().__init__(key, label, health)
        self.path = path
        self.fd = -1
        self.size = 0
        self.regular = True
        self.next_rotation: float | None = None
        self.retry_at = 0.0
        self.housekeeper = housekeeper
        self.configure(rotate_size, rotate_every, keep, compress)
        self.fd = self._open()  # raises: a log that cannot be opened at start is an error

    def configure(self, rotate_size: int, rotate_every: float, keep: int, compress: str) -> None:
        """Rotation settings; a config update changes them in place."""
        self.rotate_size, self.rotate_every = rotate_size, rotate_every
        self.keep, self.compress = keep, compress
        self._schedule()

    def _schedule(self) -> None:
        self.next_rotation = (next_boundary(time.time(), self.rotate_every)
                              if self.rotate_every else None)

    def _open(self) -> int:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        fd = open_nofollow(self.path, OPEN_FLAGS, FILE_MODE)
        st = os.fstat(fd)
        self.size, self.regular = st.st_size, stat.S_ISREG(st.st_mode)
        return fd

    # -- the thread -----------------------------------------------------------------------------

    def deliver(self, items: list[bytes]) -> None:
        data = b"".join(items)
        if not self._usable():
            self.health.lost(self.label, data.count(b"\n"), "the log file cannot be reopened")
            return
        if self.rotate_size and self.regular:
            self._write_rotating(data)
        else:
            self._write(data)

    def _usable(self) -> bool:
        """The file is still there; a deleted one (or its directory) is recreated."""
        try:
            deleted = os.fstat(self.fd).st_nlink == 0
        except OSError:
            deleted = True
        if deleted:
            self.reopen()
            try:
                return os.fstat(self.fd).st_nlink > 0
            except OSError:
                return False
        return True

    def _write(self, data: bytes) -> None:
        done, error = write_all(self.fd, data)
        if error is None:
            self.size += done
            return
        keep = data.rfind(b"\n", 0, done) + 1
        if keep < done:  # a line cut in two (disk full): take its head back out
            try:
                os.ftruncate(self.fd, os.fstat(self.fd).st_size - (done - keep))
            except OSError:
                pass
        self.size += keep
        self.health.lost(self.label, data.count(b"\n", keep), error)

    def _write_rotating(self, data: bytes) -> None:
        """Fill the file up to rotate-size with whole lines, rotate, go on with the rest."""
        while data:
            room = self.rotate_size - self.size
            if len(data) <= room:
                self._write(data)
                break
            cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self.size == 0:  # one line longer than rotate-size: it goes whole
                cut = data.find(b"\n") + 1 or len(data)
            if cut:
                self._write(data[:cut])
                data = data[cut:]
            if data and not self.rotate():
                self._write(data)
                break
        if self.size >= self.rotate_size:
            self.rotate()

    def tick(self) -> None:
        if self.next_rotation is not None and time.time() >= self.next_rotation:
            if self.size and self.regular:
                self.rotate()
            else:
                self._schedule()

    def rotate(self) -> bool:
        """Swap in a new file; the old one goes to the housekeeper. False if it cannot."""
        now = time.time()
        if self.fd < 0 or not self.regular or now < self.retry_at:
            return False
        target = rotated_name(self.path, now)
        fresh = f"{self.path}.{os.getpid()}.new"
        try:
            fd = os.open(fresh, OPEN_FLAGS | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        except OSError as e:
            return self._rotation_failed(e)
        try:
            os.rename(self.path, target)
        except OSError as e:
            os.close(fd)
            _unlink(fresh)
            return self._rotation_failed(e)
        try:
            os.rename(fresh, self.path)
        except OSError as e:  # unlikely once the first rename worked; reopen() repairs it
            self.health.lost(self.label, 0, e)
        old, self.fd, self.size = self.fd, fd, 0
        os.close(old)
        self._schedule()
        if self.housekeeper is not None:
            self.housekeeper.rotated(target, self.path, self.compress, self.keep)
        return True

    def _rotation_failed(self, error: OSError) -> bool:
        self.health.lost(self.label, 0, f"cannot rotate: {error.strerror or error}")
        self.retry_at = time.time() + RETRY_AFTER
        return False

    def reopen(self) -> None:
        """After an external rename (logrotate) or a deletion: open the path anew."""
        try:
            fd = self._open()
        except OSError as e:
            self.health.lost(self.label, 0, f"cannot reopen: {e.strerror or e}")
            return
        old, self.fd = self.fd, fd
        if old >= 0:
            os.close(old)



def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

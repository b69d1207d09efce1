"""The housekeeper: compresses rotated files (gzip or zstd), keeps `rotate-keep` of them, and
reports degraded logging; one real thread in the master, far from any request.

A rotated file is complete when it reaches the housekeeper (the file thread moved on to the
new file first), so compressing it cannot lose a line. `x` becomes `x.gz.tmp`, then `x.gz`;
only then is `x` removed: a crash in between leaves the uncompressed file, which the next
start picks up again.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
from collections import deque

from pyd.log.health import Health
from pyd.log.native import Done, Wakeup, allocate_lock, start_new_thread

SUFFIX = {"gzip": ".gz", "zstd": ".zst"}
CHUNK = 1 << 20


def rotated_pattern(path: str) -> re.Pattern:
    """Names the file thread gives rotated copies of `path` (files.rotated_name)."""
    base = re.escape(os.path.basename(path))
    return re.compile(base + r"-(\d{8}-\d{6})(?:-(\d+))?(\.gz|\.zst)?")


def compress_file(path: str, method: str) -> str:
    """Compress `path` beside itself and remove it; returns the compressed file's name."""
    dst = path + SUFFIX[method]
    tmp = dst + ".tmp"
    # Root does this in a directory the workers' user may be able to write: nothing here may
    # follow a link planted there. The rotated copy is opened without following one; the
    # temporary file is made anew (O_EXCL: a planted file or link there is removed first, never
    # written through) and its mode set on the descriptor.
    try:
        os.unlink(tmp)  # a leftover of a crash, or something planted: unlink does not follow
    except FileNotFoundError:
        pass
    src_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(src_fd).st_mode)
        raw_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
    except BaseException:
        os.close(src_fd)
        raise
    os.fchmod(raw_fd, mode)
    with os.fdopen(src_fd, "rb") as src, os.fdopen(raw_fd, "wb") as raw:
        if method == "gzip":
            with gzip.GzipFile(os.path.basename(path), "wb", 6, raw) as out:
                shutil.copyfileobj(src, out, CHUNK)
        else:
            import zstandard

            zstandard.ZstdCompressor(level=3).copy_stream(src, raw, read_size=CHUNK,
                                                          write_size=CHUNK)
    os.rename(tmp, dst)
    os.unlink(path)
    return dst


def prune(path: str, keep: int) -> list[str]:
    """Remove the oldest rotated copies of `path` beyond `keep` (0: keep them all)."""
    if keep <= 0:
        return []
    directory = os.path.dirname(path) or "."
    pattern = rotated_pattern(path)
    found = []
    for name in os.listdir(directory):
        m = pattern.fullmatch(name)
        if m:
            found.append(((m.group(1), int(m.group(2) or 1)), name))
    found.sort()
    removed = []
    for _, name in found[:-keep]:
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def leftovers(path: str) -> list[str]:
    """Rotated copies of `path` not compressed yet (a stop came first); stale .tmp removed."""
    directory = os.path.dirname(path) or "."
    pattern = rotated_pattern(path)
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        full = os.path.join(directory, name)
        if name.endswith(".tmp") and pattern.fullmatch(name[:-4]):
            try:
                os.unlink(full)
            except OSError:
                pass
        else:
            m = pattern.fullmatch(name)
            if m and not m.group(3):
                out.append(full)
    return out


class Housekeeper:
    def __init__(self, health: Health):
        self.health = health
        self._jobs: deque[tuple[str, str, str, int]] = deque()
        self._lock = allocate_lock()
        self._wakeup = Wakeup()
        self._stopping = False
        self.done = Done()
        self.started = False

    def rotated(self, rotated: str, path: str, method: str, keep: int) -> None:
        with self._lock:
            self._jobs.append((rotated, path, method, keep))
        self._wakeup.set()

    def resume(self, path: str, method: str, keep: int) -> None:
        """At setup: compress what a previous run rotated but did not get to."""
        if method == "off":
            return
        for rotated in leftovers(path):
            self.rotated(rotated, path, method, keep)

    def start(self) -> None:
        if not self.started:
            self.started = True
            start_new_thread(self._run, ())

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wakeup.wait(1.0)
                while self._jobs and not self._stopping:
                    with self._lock:
                        job = self._jobs.popleft()
                    self._do(*job)
                self.health.report()
        finally:
            self.done.set()

    def _do(self, rotated: str, path: str, method: str, keep: int) -> None:
        try:
            if method in SUFFIX and os.path.exists(rotated):
                compress_file(rotated, method)
            prune(path, keep)
        except Exception as e:  # the file stays as it is; the next rotation prunes again
            self.health.lost(rotated, 0, f"cannot compress: {getattr(e, 'strerror', None) or e}")

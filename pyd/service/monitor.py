"""Autoreload: which source files the workers run, watching them with inotify, asking for a reload.

Workers report the .py files of the modules they loaded (`report_modules`, once after boot) in
datagrams to the master, which passes them on to the service process. There `Monitor` watches
their directories (and `autoreload-paths`), waits for the changes to settle, compiles the changed
Python files and, if they all compile, asks the master for a graceful reload. A syntax error is
logged with its position and nothing is reloaded: the old workers keep serving.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("pyd.autoreload")

MAX_FILES = 50_000
DEBOUNCE = 0.25  # quiet time after the last change before acting...
DEBOUNCE_MAX = 1.0  # ...but no longer than this after the first (an editor saving in a loop)


# -- in the service process ----------------------------------------------------------------------

def check_syntax(path: str) -> str | None:
    """None if the file compiles, else `file:line:col: SyntaxError: message` and the line."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        return f"{path}: cannot read: {e.strerror}"
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f"{e.filename or path}:{e.lineno or 0}:{e.offset or 0}"
        text = f"\n    {e.text.rstrip()}" if e.text else ""
        return f"{where}: {type(e).__name__}: {e.msg}{text}"
    except ValueError as e:  # a NUL byte
        return f"{path}: {e}"
    return None


def readable_by(path: str, identity) -> bool:
    """Whether the workers' user may read the file: the service (root) watches and compiles
    only what the workers that reported it could read themselves."""
    if identity is None or not identity.switch or identity.uid == 0:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == identity.uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid in os.getgrouplist(identity.name, identity.gid):
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)


def _noise(name: str) -> bool:
    """Editors' temporary and swap files, bytecode: changes that change nothing."""
    return (name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".pyc", ".tmp"))
            or name == "4913" or "___jb_" in name)


class Monitor:
    """The inotify watches of autoreload and what a change does."""

    def __init__(self, on_change: Callable[[list[str]], None]):
        self.on_change = on_change
        self.inotify = None
        self.identity = None
        self.files: set[str] = set()  # reported source files
        self.trees: tuple[str, ...] = ()  # autoreload-paths: every file below them counts
        self.dirs: dict[int, str] = {}  # watch descriptor -> directory
        self.watched: dict[str, int] = {}
        self.pending: set[str] = set()
        self.first_change = self.last_change = 0.0
        self.greenlets: list = []
        self.settling = None

    @property
    def enabled(self) -> bool:
        return self.inotify is not None

    def configure(self, config) -> None:
        if not config.autoreload:
            self.close()
            return
        from pyd.system.privileges import PrivilegeError, resolve

        try:
            self.identity = resolve(config.user, config.group)
        except PrivilegeError:
            self.identity = None
        trees = tuple(config.autoreload_paths)
        if self.inotify is not None and trees == self.trees:
            return
        self.close()
        import gevent
        from inotify_simple import INotify

        self.inotify = INotify()
        self.trees = trees
        for tree in trees:
            self._watch_tree(tree)
        for path in self.files:
            self._watch(os.path.dirname(path))
        self.greenlets = [gevent.spawn(self._read)]
        log.info("autoreload: watching %d source files and %d directories", len(self.files),
                 len(trees))

    def add_files(self, paths: Iterable[str]) -> None:
        for path in paths:
            if path in self.files or len(self.files) >= MAX_FILES:
                continue
            if not readable_by(path, self.identity):
                continue
            self.files.add(path)
            if self.inotify is not None:
                self._watch(os.path.dirname(path))

    def close(self) -> None:
        import gevent

        gevent.killall(self.greenlets + ([self.settling] if self.settling else []), block=False)
        self.greenlets, self.settling = [], None
        if self.inotify is not None:
            self.inotify.close()
        self.inotify = None
        self.dirs.clear()
        self.watched.clear()

    # -- watching ---------------------------------------------------------------------------

    def _watch(self, directory: str) -> None:
        from inotify_simple import flags

        if directory in self.watched:
            return
        # Directories, not files: an editor that saves by renaming a new file over the old one
        # would leave a watch on the file itself pointing at the deleted copy.
        mask = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE
                | flags.DELETE | flags.ONLYDIR)
        try:
            wd = self.inotify.add_watch(directory, mask)
        except OSError as e:
            log.warning("autoreload: cannot watch %s: %s", directory, e.strerror)
            return
        self.dirs[wd] = directory
        self.watched[directory] = wd

    def _watch_tree(self, tree: str) -> None:
        for directory, subdirs, _ in os.walk(tree):
            subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
            self._watch(directory)

    def _in_tree(self, path: str) -> bool:
        return any(path == t or path.startswith(os.path.join(t, "")) for t in self.trees)

    def _read(self) -> None:
        from gevent.socket import wait_read

        inotify = self.inotify
        while True:
            wait_read(inotify.fileno())
            for event in inotify.read(timeout=0):
                self._event(event)

    def _event(self, event) -> None:
        from inotify_simple import flags

        if event.mask & flags.Q_OVERFLOW:  # events were lost: check everything
            self._changed(*self.files)
            return
        directory = self.dirs.get(event.wd)
        if directory is None:
            return
        if event.mask & flags.IGNORED:  # the directory is gone
            del self.dirs[event.wd]
            self.watched.pop(directory, None)
            return
        path = os.path.join(directory, event.name)
        if event.mask & flags.ISDIR:
            if event.mask & (flags.CREATE | flags.MOVED_TO) and self._in_tree(path):
                self._watch_tree(path)
            return
        if path in self.files or (self._in_tree(directory) and not _noise(event.name)):
            self._changed(path)

    # -- acting -----------------------------------------------------------------------------

    def _changed(self, *paths: str) -> None:
        import gevent

        now = time.monotonic()
        if not self.pending:
            self.first_change = now
        self.last_change = now
        self.pending.update(paths)
        if self.settling is None or self.settling.dead:
            self.settling = gevent.spawn(self._settle)

    def _settle(self) -> None:
        import gevent

        while True:
            act_at = min(self.last_change + DEBOUNCE, self.first_change + DEBOUNCE_MAX)
            if time.monotonic() >= act_at:
                break
            gevent.sleep(act_at - time.monotonic())
        changed, self.pending = sorted(self.pending), set()
        self.act(changed)

    def act(self, changed: list[str]) -> bool:
        """Reload for these changed files unless one of them does not compile; True if asked."""
        errors = [e for e in (check_syntax(p) for p in changed
                              if p.endswith(".py") and os.path.exists(p)) if e]
        if errors:
            log.error("autoreload: not reloading, the workers keep serving the code they "
                      "loaded:\n%s", "\n".join(errors))
            return False
        for path in changed:
            _forget_bytecode(path)
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5
                                          else "")
        log.info("autoreload: %s changed; reloading the workers", shown)
        self.on_change(changed)
        return True


def _forget_bytecode(path: str) -> None:
    """Remove the cached bytecode of a changed file: a change within the same second that keeps
    the size would otherwise be shadowed by it (the cache is checked by mtime and size only)."""
    if not path.endswith(".py"):
        return
    try:
        os.unlink(importlib.util.cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass

"""Can the workers' user read what they import from? Told from the files' modes, before a fork.

A worker drops to `user` before it imports the apps; if that user cannot reach the interpreter,
the virtualenv, `cwd` or a `pythonpath` directory, Python only says "No module named 'flask'".
`unreadable()` names the path and the directory that stops the user instead: search (x) on
every directory on the way, read on the path itself (and search, when it is a directory).
Owner, group and other bits, as the kernel checks them; ACLs are not read.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from collections.abc import Iterable


def interpreter_paths() -> list[str]:
    """What a worker imports from besides the app: the prefix and the site-packages."""
    import site

    paths = [sys.prefix]
    try:
        paths += site.getsitepackages()
    except AttributeError:  # pragma: no cover - old virtualenv's site module
        pass
    paths += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return _unique(p for p in paths if os.path.exists(p))


def worker_paths(config) -> list[str]:
    """The interpreter's paths, then the config's `cwd` and `pythonpath`."""
    return _unique([*interpreter_paths(), *([config.cwd] if config.cwd else []),
                    *(config.pythonpath or ())])


def unreadable(paths: Iterable[str], uid: int, gid: int, user: str | None = None) -> list[str]:
    """One line per path `uid` cannot read, naming the directory (or file) that stops it."""
    if uid == 0:
        return []
    name = user or _user_name(uid)
    try:
        groups = set(os.getgrouplist(name, gid))
    except (KeyError, OSError):
        groups = {gid}
    out = []
    for path in paths:
        why = denied(path, uid, groups)
        if why:
            out.append(f"user {name} cannot read {path}: {why}")
    return out


def denied(path: str, uid: int, groups: set[int]) -> str | None:
    """Why `uid` (with `groups`) cannot read `path`, or None when it can (or we cannot tell:
    a path that does not exist, or that this process may not look at)."""
    real = os.path.realpath(path)
    parts = [p for p in real.split("/") if p]
    prefix = "/"
    steps = ["/"] + ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]
    for prefix in steps:
        try:
            st = os.stat(prefix)
        except OSError:
            return None
        leaf = prefix == real
        is_dir = stat.S_ISDIR(st.st_mode)
        need = (4 | (1 if is_dir else 0)) if leaf else 1
        have = _bits(st, uid, groups)
        if have & need != need:
            what = "read" if leaf and not have & 4 else "search (x)"
            return (f"{prefix} is {stat.filemode(st.st_mode)} "
                    f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)}, no {what} permission "
                    f"for it")
    return None


def _bits(st: os.stat_result, uid: int, groups: set[int]) -> int:
    if st.st_uid == uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid in groups:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _unique(paths: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out

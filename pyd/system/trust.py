"""What root may import and run: its own sys.path, safe child interpreters, who can write a path.

Root imports only from the interpreter's own directories and what the operator put on
PYTHONPATH, never from the directory it was started in nor from the app directory; the
workers' side of the trust boundary adds those after it dropped privileges.
"""

# Imports only what the interpreter loaded before any of pyd ran (os, sys), and the rest where
# it is used: `python -m pyd` calls scrub_sys_path() before its directory is off sys.path.
import os
import stat
import sys


def untrusted_sys_path(path: "list[str] | None" = None, cwd: "str | None" = None) -> "list[str]":
    """The entries of sys.path that name the current directory: '', '.', or cwd itself.

    `python -m pyd` puts the directory it runs in first on sys.path; the interpreter's own
    directories are kept even when the process happens to run in one of them.
    """
    path = sys.path if path is None else path
    cwd = os.path.realpath(cwd or _getcwd() or "/")
    own = {os.path.realpath(p) for p in _interpreter_paths()}
    out = []
    for entry in path:
        if entry in ("", "."):  # the current directory, wherever the process goes
            out.append(entry)
        elif os.path.isabs(entry) and os.path.realpath(entry) == cwd and cwd not in own:
            out.append(entry)
    return out


def scrub_sys_path() -> list[str]:
    """Drop what untrusted_sys_path() names from sys.path (in place); returns what went."""
    gone = untrusted_sys_path()
    if gone:
        sys.path[:] = [p for p in sys.path if p not in gone]
    # A relative entry would follow the process into any directory it changes to.
    sys.path[:] = [p if os.path.isabs(p) else os.path.abspath(p) for p in sys.path]
    return gone


def _getcwd() -> "str | None":
    try:
        return os.getcwd()
    except OSError:
        return None


def _interpreter_paths() -> list[str]:
    """The standard library and the site directories under the interpreter's prefixes
    (without sysconfig or site: nothing may be imported before the scrub)."""
    stdlib = os.path.dirname(os.__file__)
    prefixes = tuple(os.path.realpath(p) + os.sep for p in {
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})
    sites = [p for p in sys.path if p and os.path.basename(p) in ("site-packages", "dist-packages")
             and os.path.realpath(p).startswith(prefixes)]
    return [stdlib, os.path.join(stdlib, "lib-dynload"), *sites]


class import_path:  # noqa: N801 - used as a `with` statement, like a function
    """`directories` first on sys.path for the imports in the block, and only for them.

    Modules imported in the block stay imported; the path goes, so that nothing root imports
    later (a stdlib module, a parser) can come from there.
    """

    def __init__(self, directories: "list[str] | tuple[str, ...]", last: bool = False):
        self.directories = list(directories)
        self.last = last  # after the interpreter's own directories, not before
        self.added: list[str] = []

    def __enter__(self) -> None:
        self.added = [d for d in self.directories if d not in sys.path]
        if self.last:
            sys.path.extend(self.added)
        else:
            sys.path[:0] = self.added

    def __exit__(self, *exc: object) -> None:
        for d in self.added:
            try:
                sys.path.remove(d)
            except ValueError:
                pass


# -- child interpreters -------------------------------------------------------------------------

def python_command(module: str, *args: str) -> list[str]:
    """argv for `python -m module` that never puts its working directory on sys.path (-P)."""
    return [sys.executable, "-P", "-m", module, *args]


def python_environ(env: dict[str, str]) -> dict[str, str]:
    """`env` for such a child: PYTHONPATH without empty or relative entries (each one names
    the child's working directory), and with the directory pyd itself came from unless it is
    one of the interpreter's own (a site directory on PYTHONPATH would reach every program)."""
    entries = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isabs(p)]
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    own = {os.path.realpath(p) for p in _interpreter_paths()}
    if home not in entries and os.path.realpath(home) not in own:
        entries.append(home)  # last: the interpreter's own modules win over anything there
    if not entries:
        return {k: v for k, v in env.items() if k != "PYTHONPATH"}
    return dict(env, PYTHONPATH=os.pathsep.join(entries))


# -- opening files as root ---------------------------------------------------------------------

def open_nofollow(path: str, flags: int, mode: int = 0o644) -> int:
    """os.open() that does not follow a symbolic link someone else may have planted at `path`
    (nginx's CVE-2016-1247). A link in a directory only root can write (/dev/stdout, one the
    administrator made) is followed; any other is an OSError saying why."""
    import errno

    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        why = writers(os.path.dirname(os.path.abspath(path)))
        if why is None:
            return os.open(path, flags, mode)
        raise OSError(e.errno, f"it is a symbolic link and {why} (pyd does not follow such "
                               "links in the files it opens as root)", path) from None


# -- who can write a path -----------------------------------------------------------------------

def writers(path: str, uid: "int | None" = None, gids: "tuple[int, ...] | list[int]" = ()) -> "str | None":
    """Why someone other than root can change `path` or any directory above it, or None.

    With `uid` (and its `gids`): only whether that user can; without, anyone but root and
    ourselves. A directory writable by others lets them swap what lies beneath it, files and
    links alike.
    """
    gids = set(gids)
    for p in _chain(os.path.abspath(path)):
        try:
            st = os.stat(p)
        except OSError:
            continue
        why = _writable(p, st, uid, gids)
        if why:
            return why
    return None


def _chain(path: str) -> list[str]:
    out = [path]
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return out
        out.append(parent)
        path = parent


def _writable(p: str, st: os.stat_result, uid: "int | None", gids: "set[int]") -> "str | None":
    what = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    if uid is None:
        if st.st_uid not in (0, os.geteuid()):
            return f"the {what} {p} is owned by {_user(st.st_uid)}"
        if st.st_mode & stat.S_IWGRP and st.st_gid not in (0, os.getegid()):
            return f"the {what} {p} is writable by group {_group(st.st_gid)}"
        if st.st_mode & stat.S_IWOTH and not _sticky_dir(st):
            return f"the {what} {p} is writable by everyone"
        return None
    if uid == 0:
        return None
    if st.st_uid == uid:
        return f"the {what} {p} is owned by {_user(uid)}"
    if st.st_mode & stat.S_IWGRP and st.st_gid in gids:
        return f"the {what} {p} is writable by group {_group(st.st_gid)}"
    if st.st_mode & stat.S_IWOTH and not _sticky_dir(st):
        return f"the {what} {p} is writable by everyone"
    return None


def _sticky_dir(st: os.stat_result) -> bool:
    """/tmp and its like: others may add names there but not replace ours."""
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_ISVTX)


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def groups_of(name: str, gid: int) -> list[int]:
    try:
        return os.getgrouplist(name, gid)
    except OSError:  # pragma: no cover
        return [gid]

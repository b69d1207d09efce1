"""/proc readers: a process's state and parent, its children, its memory, its descriptors.

Linux only, as pyd is. A process that is gone while it is read is simply not there.
"""

from __future__ import annotations

import os
from typing import NamedTuple

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Stat(NamedTuple):
    state: str  # R, S, D, Z (a zombie), T...
    ppid: int


def parse_stat(text: str) -> Stat:
    """The fields of /proc/PID/stat pyd needs. The command name, in parentheses, may hold
    spaces and parentheses itself: the fields start after the last ')'."""
    fields = text.rpartition(")")[2].split()
    return Stat(fields[0], int(fields[1]))


def stat(pid: int | str) -> Stat | None:
    """/proc/PID/stat; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    s = stat(pid)
    return s is not None and s.state != "Z"


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid`, zombies left out."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = stat(entry)
            if s is not None and s.ppid == pid and s.state != "Z":
                out.append(int(entry))
    return out


def rss(pid: int | str = "self") -> int:
    """Resident memory in bytes (/proc/PID/statm); 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def fds_to(prefixes: tuple[str, ...]) -> list[int]:
    """This process's descriptors whose /proc/self/fd link starts with one of `prefixes`
    (e.g. "anon_inode:[eventpoll]")."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(prefixes):
                fds.append(int(name))
        except OSError:
            pass
    return fds

"""Who workers run as: resolving `user`/`group` and dropping root (chroot, setgid, setuid).

The master stays root; each worker (and configtest's import check) calls drop() after fork.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


class PrivilegeError(Exception):
    """The configured identity cannot be taken; the message says why, in one line."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    name: str
    home: str
    switch: bool  # False: keep running as we are (not root, or nothing asked)
    warning: str | None = None


def resolve(user: str | None, group: str | None) -> Identity:
    """The identity workers will take, checked now so a typo fails before anything forks."""
    euid = os.geteuid()
    if euid != 0:
        me = pwd.getpwuid(euid)
        warning = None
        if (user is not None and _uid(user) != euid) or (
                group is not None and _gid(group) != os.getegid()):
            warning = (f'"user {user}"' if user else f'"group {group}"') + \
                " is ignored: pyd is not running as root"
        return Identity(euid, os.getegid(), me.pw_name, me.pw_dir, False, warning)
    if user is None:
        raise PrivilegeError("running as root with no user: workers will not run as root "
                             "unless the config says `user root;` (or name an unprivileged user)")
    entry = _passwd(user)
    gid = _gid(group) if group is not None else entry.pw_gid
    return Identity(entry.pw_uid, gid, entry.pw_name, entry.pw_dir, True)


def drop(identity: Identity, chroot: str | None = None) -> None:
    """Become `identity` for good: chroot, setgid, initgroups, setuid, in that order."""
    if chroot:
        if os.geteuid() != 0:
            raise PrivilegeError(f"cannot chroot to {chroot}: not running as root")
        os.chroot(chroot)
        os.chdir("/")
    if not identity.switch:
        return
    os.setgid(identity.gid)
    os.initgroups(identity.name, identity.gid)
    os.setuid(identity.uid)
    if identity.uid != 0 and (os.geteuid() == 0 or os.getuid() == 0):
        raise PrivilegeError("failed to drop root privileges")  # pragma: no cover
    os.environ["HOME"] = identity.home
    os.environ["USER"] = os.environ["LOGNAME"] = identity.name


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isascii() and user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"unknown user {user!r}") from None


def _uid(user: str) -> int:
    return _passwd(user).pw_uid


def _gid(group: str) -> int:
    try:
        return int(group) if group.isascii() and group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise PrivilegeError(f"unknown group {group!r}") from None

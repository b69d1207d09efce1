"""The master's checks at start of what the workers' user could reach root through.

Root's sys.path, the directories privileged code is imported from, the pidfile's and log
files' directories, the config files, and the descriptors each worker may need. docs/security.md
says what pyd expects; this says, in one log line each, where a machine differs.
"""

from __future__ import annotations

import logging
import os
import sys

from pyd.config import Config
from pyd.system import trust
from pyd.system.daemon import raise_nofile
from pyd.system.privileges import Identity

log = logging.getLogger("pyd.master")

FD_MARGIN = 64  # a worker's own descriptors besides its connections: listeners, logs, files


def check_sys_path() -> None:
    """Root imports only from the interpreter's own directories and PYTHONPATH: never from
    where it was started (dropped here, as `python -m` put it first), and it says so when
    anyone but root can write one of them."""
    gone = trust.scrub_sys_path()
    if gone:
        log.debug("dropped the current directory from sys.path: %s", ", ".join(map(repr, gone)))
    if os.geteuid() != 0:
        return
    for entry in sys.path:
        why = trust.writers(entry) if entry and os.path.isdir(entry) else None
        if why:
            log.warning("root imports Python modules from %s, but %s: whoever can write there "
                        "can run code as root", entry, why)


def privileged_problem(config: Config, identity: Identity, app_path: tuple[str, ...]) -> str | None:
    """Refuse privileged code from a directory the workers' user can write: it would be theirs
    to replace, and it runs as root."""
    wanted = any(s.settings.get("privileged") for s in (*config.apps, *config.pools))
    if not wanted or not identity.switch or identity.uid == 0:
        return None
    from pyd.apps import privileged_path_problem

    return privileged_path_problem(app_path, identity.uid,
                                   trust.groups_of(identity.name, identity.gid))


def check_files(config: Config, identity: Identity) -> None:
    """The pidfile and log files root opens, and the config files root reads: one warning per
    directory the workers' user (or anyone but root) can write."""
    if os.geteuid() != 0:
        return
    gids = trust.groups_of(identity.name, identity.gid) if identity.switch else []
    for what, path in _opened_files(config):
        directory = os.path.dirname(os.path.abspath(path))
        why = trust.writers(directory, identity.uid, gids) if identity.switch else None
        if why:
            log.warning("%s %s: %s, so the workers' user could put a link or another file "
                        "there; pyd opens it without following links, but keep it in a "
                        "directory only root can write", what, path, why)
    from pyd.config.loader import unsafe_sources

    for message in unsafe_sources(config.sources):
        log.warning("config: %s", message)


def _opened_files(config: Config) -> list[tuple[str, str]]:
    files = [("the pidfile", config.pidfile)]
    try:
        from pyd.log.plan import plan

        seen = set()
        for route in plan(config):
            path = route.target.path
            if route.target.kind == "file" and path and path not in seen:
                seen.add(path)
                files.append(("the log file", path))
    except Exception:  # the log's own setup reports a bad plan
        pass
    return files


def check_nofile(config: Config) -> None:
    """RLIMIT_NOFILE raised to its hard limit; a warning when a worker may need more."""
    soft, hard = raise_nofile()
    need = sum(s.settings.get("max-connections") or 0 for s in config.pools) + FD_MARGIN
    if soft < need:
        log.warning("open files limit (RLIMIT_NOFILE) is %d (hard %d), but each worker may "
                    "hold %d connections (the pools' max-connections) plus its own files: "
                    "raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower "
                    "max-connections", soft, hard, need - FD_MARGIN)

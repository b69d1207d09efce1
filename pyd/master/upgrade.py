"""`pyd upgrade` (SIGUSR2): re-execute the master without refusing a connection.

The old master forks and execs a new `pyd start` that inherits the listening sockets; once the
new master's workers serve, the old one drains its workers and exits, leaving it the pidfile.
"""

from __future__ import annotations

import logging
import os
import sys

import gevent.os

from pyd.ipc import startline
from pyd.net import listeners as lst
from pyd.system.daemon import UPGRADE_FD_ENV, sd_notify
from pyd.system.trust import python_command, python_environ

log = logging.getLogger("pyd.master")
UPGRADE_TIMEOUT = 90.0


def upgrade(m) -> tuple[bool, str]:
    if getattr(m, "upgrading", False):
        return False, "an upgrade is already in progress"
    if m.stopping:
        return False, "pyd is stopping"
    m.upgrading = True
    try:
        return _upgrade(m)
    finally:
        m.upgrading = False


def _upgrade(m) -> tuple[bool, str]:
    r, w = os.pipe()
    env = python_environ(dict(os.environ))
    env[lst.INHERIT_ENV] = lst.export(list(m.listeners.values()))
    env[UPGRADE_FD_ENV] = str(w)
    os.set_inheritable(w, True)
    overrides = list(m.argv_overrides)
    if m.config.cwd is None:  # the default, where pyd started: said, as the new one starts in /
        overrides.append(f"--cwd={os.getcwd()}")
    # -P and /: the new master, root, imports nothing from the directory it runs in.
    argv = python_command("pyd", "start", "--foreground", "-c", m.config_file, *overrides)
    log.info("upgrade: starting a new master: %s", " ".join(argv[1:]))
    pid = gevent.os.fork_and_watch(callback=lambda watcher: None)
    if pid == 0:
        try:
            os.chdir("/")
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    os.close(w)
    for listener in m.listeners.values():
        os.set_inheritable(listener.fileno(), False)
    try:
        answer = startline.wait(r, UPGRADE_TIMEOUT)
    except TimeoutError:
        answer = startline.StartLine(False, error="the new master did not report within the "
                                                  "time limit")
    except startline.StartLineError as e:
        answer = startline.StartLine(False, error=str(e))
    finally:
        os.close(r)
    if answer is not None and answer.ready:
        log.info("upgrade: the new master (pid %d) serves; this one drains and exits", pid)
        # systemd takes notifications from the main process only (NotifyAccess=main): the
        # old master names its successor, which no worker could do.
        sd_notify(f"MAINPID={pid}")
        m.stop("upgrade")
        return True, f"upgraded: the new master is pid {pid}"
    message = answer.error if answer is not None else "the new master exited before serving"
    log.error("upgrade failed; still serving with this master:\n%s", message)
    return False, f"upgrade failed; still serving with the old master:\n{message}"

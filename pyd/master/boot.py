"""The master's boot and config update: everything done as root before and between forks.

Order matters and follows the house plan: title, log, pidfile, identity check, listeners,
privileged preload, scoreboard, control socket, signals, then the first workers.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from pyd.net import listeners as lst
from pyd.ipc import scoreboard as sb
from pyd.config import Config
from pyd.ipc.control import ControlServer, socket_path
from pyd.system.daemon import Pidfile, PidfileError
from pyd.system.privileges import PrivilegeError, resolve
from pyd.worker.main import BootError, build_apps, build_pools, enter_cwd

log = logging.getLogger("pyd.master")

UPGRADE_FD_ENV = "PYD__UPGRADE_FD"


@dataclass
class StartResult:
    ok: bool
    message: str = ""


def boot_master(m) -> StartResult:
    from setproctitle import setproctitle

    from pyd import log as pydlog

    config: Config = m.config
    setproctitle(f"pyd: master {config.path}")
    try:
        identity = resolve(config.user, config.group)
    except PrivilegeError as e:
        return StartResult(False, str(e))
    try:
        pydlog.setup(config, tty=m.tty)
    except pydlog.LogSetupError as e:
        return StartResult(False, str(e))
    if identity.warning:
        log.warning("%s", identity.warning)
    preload_modules(config)
    m.pidfile = Pidfile(config.pidfile)
    try:
        m.pidfile.acquire()
    except PidfileError as e:
        if UPGRADE_FD_ENV not in os.environ:
            m.pidfile = None
            return StartResult(False, str(e))
        m.pidfile_pending = True  # the old master still holds it; taken when it is gone
    else:
        if m.pidfile.stale_pid:
            log.warning("replaced a stale pidfile %s (pid %d was not running)", config.pidfile,
                        m.pidfile.stale_pid)
    try:
        m.listeners = bind_listeners(config, lst.inherited(), {})
    except lst.ListenError as e:
        return StartResult(False, str(e))
    try:
        if not config.chroot:  # with chroot, cwd names a directory inside it
            enter_cwd(config)
        m.apps = build_apps(config, privileged=True)
        m.pools = build_pools(config, m.listeners, m.apps, privileged=True)
    except BootError as e:
        return StartResult(False, e.message)
    m.scoreboard = sb.Scoreboard(scoreboard_size(config))
    m.watch_workers()
    m.control = ControlServer(socket_path(config), m.command)
    try:
        m.control.start()
    except OSError as e:
        return StartResult(False, f"cannot create the control socket {m.control.path}: "
                                  f"{e.strerror}")
    m.install_signals()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    m.target = initial_target(config)
    for number in range(1, m.target + 1):
        m.spawn_worker(number)
    result = m.wait_for_workers()
    if result.ok:
        # Jobs and supervised programs start after the workers, and before `pyd start`
        # returns: a `pyd cron run` right after it finds the service process there.
        m.service.manage()
    else:
        m.stop("fast")
        while m.workers:
            m.wakeup.wait(0.1)
            m.wakeup.clear()
            m.reap()
            m.enforce_stop_deadline()
    return result


def preload_modules(config: Config) -> None:
    """Import pyd's own pool code now, as root: a worker that chroots or becomes a user who
    cannot read the Python installation could not import it later (and forked workers share
    these pages)."""
    import mimetypes

    from pyd.apps import import_ref
    from pyd.pools import POOL_TYPES

    mimetypes.init()
    for section in config.pools:
        if section.cls in POOL_TYPES:
            import_ref(POOL_TYPES[section.cls])


def scoreboard_size(config: Config) -> int:
    most = max(config.workers, config.max_workers or 0, config.min_workers or 0)
    return max(64, 4 * most + 8)


def initial_target(config: Config) -> int:
    n = config.workers
    if config.min_workers is not None:
        n = max(n, config.min_workers)
    if config.max_workers is not None:
        n = min(n, config.max_workers)
    return n


def bind_listeners(config: Config, inherited: dict, current: dict) -> dict[str, lst.Listener]:
    """Every address of every pool: reuse what we hold or inherited, bind the rest."""
    out: dict[str, lst.Listener] = {}
    try:
        for section in config.pools:
            mode = section.settings.get("socket-mode")
            owner = _socket_owner(section)
            for address in section.settings["listen"]:
                key = str(address)
                if key in out:
                    continue
                if key in current:
                    out[key] = current[key]
                elif key in inherited:
                    out[key] = lst.Listener(address, inherited.pop(key))
                else:
                    out[key] = lst.bind(address, mode=mode, owner=owner)
                    log.info("listening on %s for %s", key, section.header)
    except lst.ListenError:
        for key, listener in out.items():
            if key not in current:
                listener.close()
        raise
    for sock in inherited.values():
        sock.close()
    return out


def _socket_owner(section) -> tuple[int, int] | None:
    owner = section.settings.get("socket-owner")
    if not owner:
        return None
    import grp
    import pwd

    user = owner[0]
    uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    if len(owner) > 1:
        group = owner[1]
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    else:
        gid = pwd.getpwuid(uid).pw_gid
    return uid, gid


class ApplyError(Exception):
    pass


RESTART_ONLY = ("pidfile", "control-socket", "verbose-tty")


def apply_config(m, new: Config) -> list[str]:
    """Switch the master to a new, valid config: listeners, privileged apps, worker count.

    Raises ApplyError (nothing changed) when a new listener cannot be bound.
    """
    from pyd import log as pydlog
    from pyd.apps import class_settings, make_app

    old: Config = m.config
    warnings = []
    for name in RESTART_ONLY:
        if old.settings[name] != new.settings[name]:
            warnings.append(f"{name} changed: it takes effect when pyd restarts")
    try:
        listeners = bind_listeners(new, {}, m.listeners)
    except lst.ListenError as e:
        raise ApplyError(str(e)) from None
    for key in set(m.listeners) - set(listeners):
        m.listeners[key].close()
        log.info("closed listener %s", key)
    m.listeners = listeners
    for section in new.apps:
        if not section.settings["privileged"]:
            continue
        app = m.apps.get(section.name)
        if app is None:
            m.apps[section.name] = make_app(section)
            continue
        old_section = old.section(section.header)
        if old_section is None or _text(old_section) != _text(section):
            app.settings = class_settings(type(app), section)
            app.section = section
            app.on_config_updated()
    for name in [n for n in m.apps if new.section(f"App:{n}") is None]:
        m.apps.pop(name).on_shutdown(True)
    try:
        m.pools = build_pools(new, listeners, m.apps, privileged=True)
    except BootError as e:
        raise ApplyError(e.message) from None
    m.config = new
    try:
        pydlog.setup(new, tty=m.tty)  # before the new workers fork: they inherit the routes
    except pydlog.LogSetupError as e:
        warnings.append(f"logging unchanged: {e}")
    if new.min_workers is None and new.max_workers is None:
        m.set_target(new.workers)
    else:
        m.set_target(m.target)
    for w in warnings:
        log.warning("update: %s", w)
    return warnings


def _text(section) -> str:
    from pyd.config.printer import _section_conf

    lines: list[str] = []
    _section_conf(section, lines, "")
    return "\n".join(lines)

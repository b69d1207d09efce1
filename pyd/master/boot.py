"""The master's boot and config update: everything done as root before and between forks.

Order matters and follows the house plan: title, log, pidfile, identity check, listeners,
privileged preload, scoreboard, control socket, signals, then the first workers.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from pyd.config import Config, ConfigError
from pyd.ipc import scoreboard as sb
from pyd.ipc.control import ControlServer, socket_path
from pyd.master import trust
from pyd.net import listeners as lst
from pyd.system.daemon import UPGRADE_FD_ENV, Pidfile, PidfileError
from pyd.system.privileges import PrivilegeError, resolve
from pyd.worker.main import BootError, app_path, build_apps, build_pools

log = logging.getLogger("pyd.master")


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
    # What the workers' user could reach root through: see docs/security.md.
    trust.check_sys_path()
    trust.check_files(config, identity)
    trust.check_nofile(config)
    refused = trust.privileged_problem(config, identity, app_path(config))
    if refused:
        return StartResult(False, refused)
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
        # Root never puts cwd or pythonpath on sys.path: privileged apps and pools are imported
        # from there only while build_* import them (privileged_imports).
        m.apps = build_apps(config, privileged=True)
        m.pools = build_pools(config, m.listeners, m.apps, privileged=True)
    except BootError as e:
        return StartResult(False, e.message)
    m.scoreboard = sb.Scoreboard(scoreboard_size(config), counters=m.metrics.capacity(config))
    m.metrics.configure(config)
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
        m.metrics.start()
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
    except Exception:  # what this call bound is closed again; what we held stays
        for key, listener in out.items():
            if key not in current:
                listener.close()
        raise
    for sock in inherited.values():
        sock.close()
    return out


def _socket_owner(section) -> tuple[int, int] | None:
    """`socket-owner USER [GROUP]` as ids; ListenError (at the directive) when one is unknown."""
    ids, problem = _resolve_owner(section)
    if problem is not None:
        raise lst.ListenError(problem.format())
    return ids


def _resolve_owner(section):
    """(uid, gid) or None, and the Problem when the system does not know a name."""
    import grp
    import pwd

    from pyd.config.errors import Problem

    owner = section.settings.get("socket-owner")
    if not owner:
        return None, None
    pos = section.settings.origin("socket-owner").pos or section.pos

    def problem(message: str):
        return None, Problem(f'"socket-owner": {message}', pos)

    user = owner[0]
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            return problem(f"unknown user {user!r}")
        entry = None
    uid = int(user) if user.isdigit() else entry.pw_uid
    if len(owner) > 1:
        group = owner[1]
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            return problem(f"unknown group {group!r}")
    elif entry is not None:
        gid = entry.pw_gid
    else:
        return problem(f"uid {user} has no passwd entry: name a group too")
    return (uid, gid), None


def socket_owner_problems(config: Config) -> list:
    """The Problems of every `socket-owner` naming a user or group this system does not know
    (configtest reports them; start and update refuse them)."""
    return [p for section in config.pools for p in [_resolve_owner(section)[1]] if p]


class ApplyError(Exception):
    pass


RESTART_ONLY = ("pidfile", "control-socket", "verbose-tty")


def apply_config(m, new: Config) -> list[str]:
    """Switch the master to a new, valid config, as a transaction: bind the new listeners and
    build the new privileged apps and pools first, then switch to them all at once.

    On any failure what was built is undone (new listeners closed, new apps shut down) and
    ApplyError says why: the old listeners, apps, pools and config stay as they were, and the
    workers spawned from now on still use them.
    """
    from pyd import log as pydlog

    old: Config = m.config
    warnings = []
    for name in RESTART_ONLY:
        if old.settings[name] != new.settings[name]:
            warnings.append(f"{name} changed: it takes effect when pyd restarts")
    try:
        listeners = bind_listeners(new, {}, m.listeners)
    except lst.ListenError as e:
        raise ApplyError(str(e)) from None
    except Exception as e:
        raise ApplyError(f"cannot bind the new listeners: {type(e).__name__}: {e}") from None
    fresh = [lsn for key, lsn in listeners.items() if key not in m.listeners]
    made: dict = {}
    try:
        apps, changed = _privileged_apps(m.apps, old, new, made)
        pools = build_pools(new, listeners, apps, privileged=True)
    except Exception as e:
        for listener in fresh:
            listener.close()
        for name, app in made.items():
            _quietly(app.on_shutdown, False, what=f"app {name}: on_shutdown")
        raise ApplyError(e.message if isinstance(e, BootError)
                         else f"{type(e).__name__}: {e}") from None
    # The switch: nothing below fails the update.
    for key in set(m.listeners) - set(listeners):
        m.listeners[key].close()
        log.info("closed listener %s", key)
    for app, settings, section in changed:
        app.settings, app.section = settings, section
        _quietly(app.on_config_updated, what=f"app {app.name}: on_config_updated")
    for name in [n for n in m.apps if n not in apps]:
        _quietly(m.apps[name].on_shutdown, True, what=f"app {name}: on_shutdown")
    m.listeners, m.apps, m.pools, m.config = listeners, apps, pools, new
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


def _privileged_apps(current: dict, old: Config, new: Config, made: dict) -> tuple[dict, list]:
    """The master's apps under `new`: kept instances, new ones (built into `made`, which the
    caller undoes on failure) and, for kept ones whose section changed, their new settings."""
    from types import SimpleNamespace

    from pyd.apps import class_settings

    apps, changed, missing = {}, [], []
    for section in new.apps:
        if section.name in current:
            app = apps[section.name] = current[section.name]
            old_section = old.section(section.header)
            if section.settings["privileged"] and (
                    old_section is None or _text(old_section) != _text(section)):
                try:
                    changed.append((app, class_settings(type(app), section), section))
                except ConfigError as e:
                    raise BootError(e.format()) from None
        elif section.settings["privileged"]:
            missing.append(section)
    made.update(build_apps(SimpleNamespace(apps=missing), privileged=True))  # reads .apps only
    apps.update(made)
    return apps, changed


def _quietly(fn, *args, what: str) -> None:
    """An app's hook after the switch: its failure is the app's, logged, not the update's."""
    try:
        fn(*args)
    except Exception:
        log.exception("update: %s failed", what)


def _text(section) -> str:
    from pyd.config.printer import _section_conf

    lines: list[str] = []
    _section_conf(section, lines, "")
    return "\n".join(lines)

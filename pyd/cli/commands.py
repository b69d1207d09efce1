"""The lifecycle commands as the CLI runs them: start, stop and friends, status, runworker.

`start` daemonizes and waits until the workers serve (or prints why they do not); the others
talk to the running master over its control socket, falling back to signals where they can.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from pyd.cli import table
from pyd.cli.configtest import config_path, load_or_fail
from pyd.cli.errors import EXIT_FAIL, EXIT_OK, Failure
from pyd.config import Config, ConfigError, Override, load
from pyd.ipc import startline
from pyd.ipc.control import ControlError, request, socket_path
from pyd.ipc.signals import FAST, GRACEFUL, HARD, MASTER_RECEIVES, STOPS, stop_deadlines
from pyd.system import proc
from pyd.system.daemon import PidfileError, check_writable, running_pid

EXIT_NOT_RUNNING = 3  # `status` when pyd is not running, as LSB init scripts expect
START_TIMEOUT = 120.0
UPGRADE_HANDOVER = 30.0  # past graceful-timeout: the old master exits, the new one locks


def _say(message: str) -> None:
    print(f"pyd: {message}")


def _human_time(seconds: float) -> str:
    from pyd.config.values import Duration

    return Duration().format_one(float(int(seconds)))


def _argv_overrides(args: argparse.Namespace) -> list[str]:
    return [o.label if o.value is None else f"{o.label}={o.value}" for o in args.overrides]


# -- start ---------------------------------------------------------------------------------------

def start(args: argparse.Namespace) -> int:
    from pyd.master.arbiter import Master
    from pyd.master.boot import UPGRADE_FD_ENV
    from pyd.system.privileges import PrivilegeError, resolve

    upgrade_fd = os.environ.pop(UPGRADE_FD_ENV, None)
    config = load_or_fail(args)
    blocked = ""
    if upgrade_fd is None:
        pid = running_pid(config.pidfile)
        if pid:
            raise Failure(f"pyd is already running (pid {pid})")
        try:
            check_writable(config.pidfile)
            identity = resolve(config.user, config.group)
        except (PidfileError, PrivilegeError) as e:
            raise Failure(str(e)) from None
        if identity.warning:
            print(f"pyd: warning: {identity.warning}", file=sys.stderr)
        blocked = _unreadable(config, identity)
    if upgrade_fd is not None:
        os.environ[UPGRADE_FD_ENV] = upgrade_fd  # boot reads it: the pidfile may still be held
    foreground = args.foreground or config.verbose_tty or upgrade_fd is not None
    if foreground:
        if upgrade_fd is None:
            _say(f"starting in the foreground (config {config.path})")
            for line in where(config):
                _say(line)
            sys.stdout.flush()
        master = Master(config, args.overrides, _argv_overrides(args),
                        ready_fd=int(upgrade_fd) if upgrade_fd else None,
                        tty=config.verbose_tty)
        code = master.run()
        if code and master.start_error:
            print(f"pyd: start failed:\n{master.start_error}{blocked}", file=sys.stderr)
        return code
    return _start_daemon(config, args, blocked)


def where(config: Config) -> list[str]:
    """What `pyd start` says besides started: the addresses and the main log."""
    lines = []
    for section in config.pools:
        addresses = ", ".join(str(a) for a in section.settings.get("listen", ()) or ())
        if addresses:
            lines.append(f"listening on {addresses} ({section.header})")
    log_file = config.log_file
    lines.append(f"log: {log_file} (`pyd log -f` follows it)" if log_file else
                 "log: no log file (log-file is off)")
    return lines


def _unreadable(config: Config, identity) -> str:
    """Checked before the master forks a worker: what the workers' user cannot read of the
    interpreter, its site-packages, `cwd` and `pythonpath`, told with a failed start (where a
    worker's "No module named ..." would say nothing of it). Modules the master preloaded
    need no reading, so it is no error by itself."""
    from pyd.system.readable import unreadable, worker_paths

    if not identity.switch:
        return ""
    lines = unreadable(worker_paths(config), identity.uid, identity.gid, identity.name)
    return "".join(f"\n{line} (the workers import from there)" for line in lines)


def _start_daemon(config: Config, args: argparse.Namespace, blocked: str = "") -> int:
    from pyd.master.arbiter import Master
    from pyd.system.daemon import daemon_context

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # No os.close(r) here: gevent defers it to the loop's next turn, which comes after the
        # daemon context closed r itself and the master reused the number for something else.
        code = EXIT_FAIL
        try:
            # Keep the event loop's own descriptors: after the fork libev closes its epoll
            # and overwrites its wake-up descriptor by number, which would hit whatever the
            # master opened under those numbers had the daemon context closed them.
            with daemon_context([w, *_event_loop_fds()], cwd=os.getcwd()):
                code = Master(config, args.overrides, _argv_overrides(args), ready_fd=w).run()
        except BaseException as e:  # report anything to the waiting CLI, then go
            try:
                os.write(w, startline.error_line(f"the master failed: {type(e).__name__}: {e}"))
            except OSError:
                pass
        os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    try:
        answer = startline.wait(r, START_TIMEOUT)
    except TimeoutError:
        answer = None
    except startline.StartLineError as e:
        answer = startline.StartLine(False, error=str(e))
    os.close(r)
    if answer is not None and answer.ready:
        _say(f"started (pid {answer.pid}, {answer.workers} workers, config {config.path})")
        for line in where(config):
            _say(line)
        return EXIT_OK
    if answer is not None:
        print(f"pyd: start failed:\n{answer.error}{blocked}", file=sys.stderr)
    else:
        print(f"pyd: the master exited while starting; see the log {config.log_file}",
              file=sys.stderr)
    return EXIT_FAIL


def _event_loop_fds() -> list[int]:
    return proc.fds_to(("anon_inode:[eventpoll]", "anon_inode:[eventfd]"))


# -- talking to a running master -----------------------------------------------------------------

def _config_for_control(args: argparse.Namespace, quiet: bool = False) -> Config:
    """The config, for its pidfile and socket; a broken one must not stop `pyd stop`.

    When the file has errors, its `pidfile` and `control-socket` are still taken if they can
    be read, so the running master is found (and, for `update`, tells what is wrong): from the
    parsed file when only its meaning is wrong, else line by line (`found_paths`), whatever
    syntax error the rest of the file has.
    """
    from pyd.config.loader import load_file
    from pyd.config.validate import build

    path = config_path(args)
    try:
        return load(path, args.overrides)
    except ConfigError as e:
        if not quiet:
            print(f"pyd: warning: {path} has errors ({e.first.message})", file=sys.stderr)
    try:
        nodes = [n for n in load_file(path) if not n.is_block
                 and n.key in ("pidfile", "control-socket")]
        return build(nodes, path, args.overrides)
    except ConfigError:
        pass
    found = [Override(name, value, "config file", name)
             for name, value in found_paths(path).items()]
    try:
        return build([], path, [*found, *args.overrides])
    except ConfigError:
        return build([], path, args.overrides)


_PATH_LINE = re.compile(r"""^[ \t]*(pidfile|control-socket)(?:[ \t]*:[ \t]*|[ \t]+)
                            ("[^"\n]*"|'[^'\n]*'|[^\s;#"']+)[ \t]*(;|\#|$)""", re.M | re.X)
_INCLUDE_LINE = re.compile(r"^[ \t]*include[ \t]+([^;#\n]+);", re.M)


def found_paths(path: str, _depth: int = 0) -> dict[str, str]:
    """`pidfile` and `control-socket` as the lines of a config (and the files it includes)
    say, absolute, without parsing the rest: a syntax error elsewhere must not hide them.
    Values with ${VARIABLES} are left out; the last one found wins, as when loading."""
    import glob

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return {}
    base = os.path.dirname(os.path.abspath(path))
    found: dict[str, str] = {}
    if path.endswith((".conf", ".cfg")) or not path.endswith((".yaml", ".yml")):
        for m in _INCLUDE_LINE.finditer(text):
            if _depth < 4 and "$" not in m.group(1):
                pattern = os.path.join(base, m.group(1).strip().strip("\"'"))
                for name in sorted(glob.glob(pattern)):
                    found.update(found_paths(name, _depth + 1))
    for m in _PATH_LINE.finditer(text):
        value = m.group(2).strip("\"'")
        if value and "$" not in value:
            found[m.group(1)] = os.path.normpath(os.path.join(base, value))
    return found


def _running(config: Config) -> int:
    pid = running_pid(config.pidfile)
    if not pid:
        raise Failure("pyd is not running")
    return pid


def _control(config: Config, cmd: str, timeout: float | None = 60.0) -> dict:
    try:
        return request(socket_path(config), cmd, timeout=timeout, on_progress=_say)
    except ControlError as e:
        raise Failure(str(e)) from None


def _wait_gone(config: Config, pid: int, timeout: float) -> bool:
    """Until the master let go of the pidfile and its process is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(config.pidfile) != pid and not proc.alive(pid):
            return True
        time.sleep(0.05)
    return False


def _stop(args: argparse.Namespace, cmd: str, sig: int, what: str) -> int:
    config = _config_for_control(args)
    pid = _running(config)
    how = {"stop": FAST, "graceful-stop": GRACEFUL, "hard-stop": HARD}[cmd]
    try:
        answer = request(socket_path(config), cmd, timeout=10.0)
        if not answer.get("ok"):
            raise Failure(answer.get("message", f"{cmd} failed"))
    except ControlError as e:
        if "permission" in str(e):
            raise Failure(str(e)) from None
        os.kill(pid, sig)  # the socket is gone but the master lives: signals still work
        how = MASTER_RECEIVES[sig]  # what the master makes of the signal
    if not _wait_gone(config, pid, stop_deadlines(config, how).total):
        raise Failure(f"pyd (pid {pid}) did not stop in time")
    _say(f"{what} (pid {pid})")
    return EXIT_OK


def stop(args: argparse.Namespace) -> int:
    return _stop(args, "stop", STOPS[FAST].master, "stopped")


def graceful_stop(args: argparse.Namespace) -> int:
    return _stop(args, "graceful-stop", STOPS[GRACEFUL].master, "stopped gracefully")


def hard_stop(args: argparse.Namespace) -> int:
    return _stop(args, "hard-stop", STOPS[HARD].master, "stopped")


def restart(args: argparse.Namespace) -> int:
    config = _config_for_control(args)
    if running_pid(config.pidfile):
        graceful_stop(args)
    return start(args)


def _simple(args: argparse.Namespace, cmd: str, timeout: float | None = None,
            config: Config | None = None) -> int:
    if config is None:
        config = _config_for_control(args, quiet=cmd == "update")
        _running(config)
    answer = _control(config, cmd, timeout=timeout)
    if not answer.get("ok"):
        print(f"pyd: {answer.get('message', cmd + ' failed')}", file=sys.stderr)
        return EXIT_FAIL
    if answer.get("message"):
        _say(answer["message"])
    return EXIT_OK


def reload(args: argparse.Namespace) -> int:
    """New workers on the loaded config; never silently beside a config file edited since."""
    config = _config_for_control(args)
    _running(config)
    stale = _edited_since_loaded(args, config)
    if stale:
        print(f"pyd: warning: {stale}", file=sys.stderr)
    return _simple(args, "reload", timeout=None, config=config)


def _edited_since_loaded(args: argparse.Namespace, config: Config) -> str | None:
    """What to say when the config file on disk is not the configuration the master runs."""
    from pyd.cli.main import _overrides

    try:
        data = request(socket_path(config), "status", timeout=10.0)["data"]
        digest = data["config_digest"]
        overrides = _overrides(data.get("overrides", []))
    except Exception:
        return None  # an older master, or none to ask: reload itself will tell
    path = config_path(args)
    try:
        on_disk = load(path, overrides)
    except ConfigError as e:
        return (f"{path} has errors ({e.first.message}): reload keeps the configuration pyd "
                f"runs; `pyd configtest` shows them, `pyd update` applies the file once valid")
    from pyd.ipc.configdigest import config_digest

    if config_digest(on_disk) != digest:
        return (f"{path} differs from the configuration pyd runs: reload replaces the workers "
                f"on the running configuration; `pyd update` applies the file")
    return None


def update(args: argparse.Namespace) -> int:
    return _simple(args, "update", timeout=None)


def upgrade(args: argparse.Namespace) -> int:
    """Returns once the new master holds the pidfile and answers on the control socket, so
    `pyd upgrade && pyd status` sees it; the old one drains its workers first."""
    config = _config_for_control(args)
    old = _running(config)
    answer = _control(config, "upgrade", timeout=None)
    if not answer.get("ok"):
        print(f"pyd: {answer.get('message', 'upgrade failed')}", file=sys.stderr)
        return EXIT_FAIL
    deadline = time.monotonic() + config.graceful_timeout + UPGRADE_HANDOVER
    new, said = None, False
    while time.monotonic() < deadline:
        holder = running_pid(config.pidfile)
        try:
            pid = request(socket_path(config), "status", timeout=5.0)["data"]["pid"]
        except (ControlError, KeyError, TypeError):
            pid = None
        if pid and pid != old:
            new = pid
            if holder == pid:
                _say(answer.get("message") or f"upgraded: the new master is pid {pid}")
                return EXIT_OK
            if not said:
                _say(f"the new master (pid {pid}) serves; the old one (pid {old}) drains its "
                     "workers, then hands over the pidfile")
                said = True
        time.sleep(0.05)
    who = f"the new master (pid {new})" if new else "a new master"
    raise Failure(f"{who} did not take over the pidfile {config.pidfile} and the control "
                  f"socket in time; see the log {config.log_file}")


def reopenlog(args: argparse.Namespace) -> int:
    return _simple(args, "reopenlog", timeout=10.0)


def status(args: argparse.Namespace) -> int:
    config = _config_for_control(args)
    pid = running_pid(config.pidfile)
    if not pid:
        _say("pyd is not running")
        return EXIT_NOT_RUNNING
    try:
        data = request(socket_path(config), "status", timeout=10.0)["data"]
    except ControlError as e:
        _say(f"pyd is running (pid {pid}); {e}")
        return EXIT_OK
    _say(f"pyd is running (pid {data['pid']}, uptime {_human_time(data['uptime'])}, "
         f"{data['workers']} workers, config {data['config']})")
    return EXIT_OK


def fullstatus(args: argparse.Namespace) -> int:
    config = _config_for_control(args)
    if not running_pid(config.pidfile):
        _say("pyd is not running")
        return EXIT_NOT_RUNNING
    data = _control(config, "fullstatus", timeout=10.0)["data"]
    _say(f"pyd is running (pid {data['pid']}, uptime {_human_time(data['uptime'])}, "
         f"{data['workers']} workers of {data['target']}, config {data['config']})")
    rows = [("worker", "pid", "state", "requests", "rss", "conns", "active", "uptime", "note")]
    for s in sorted(data["slots"], key=lambda s: (s["number"], s["uptime"])):
        note = s["reason"] if s["state"] in ("retiring", "stopping") else ""
        rows.append((str(s["number"]), str(s["pid"]), s["state"], str(s["requests"]),
                     f"{s['rss'] / 1048576:.1f}M", str(s["connections"]), str(s["active"]),
                     _human_time(s["uptime"]), note))
    for line in table.render(rows):
        print(line)
    exits = ", ".join(f"{k} {v}" for k, v in sorted(data["exits"].items()))
    print(f"restarts by reason: {exits or 'none'}")
    print(f"listeners: {', '.join(data['listeners']) or 'none'}")
    for item in data.get("extra_lines", []):  # a line, or a table (the service's) as rows
        for line in ([item] if isinstance(item, str) else table.render(item)):
            print(line)
    return EXIT_OK


# -- the service process: cron and process -------------------------------------------------------

def _service_command(args: argparse.Namespace, cmd: str) -> int:
    config = _config_for_control(args)
    _running(config)
    if args.action in ("run", "restart") and not args.name:
        raise Failure(f"{cmd} {args.action} needs a NAME")
    try:
        answer = request(socket_path(config), cmd, {"action": args.action, "name": args.name},
                         timeout=None if args.action in ("run", "restart") else 30.0,
                         on_progress=_say)
    except ControlError as e:
        raise Failure(str(e)) from None
    if not answer.get("ok"):
        print(f"pyd: {answer.get('message', cmd + ' failed')}", file=sys.stderr)
        return EXIT_FAIL
    for line in table.render(answer.get("data", {}).get("table", [])):
        print(line)
    if answer.get("message"):
        _say(answer["message"])
    return EXIT_OK


def cron(args: argparse.Namespace) -> int:
    return _service_command(args, "cron")


def process(args: argparse.Namespace) -> int:
    return _service_command(args, "process")


# -- runworker -----------------------------------------------------------------------------------

def runworker(args: argparse.Namespace) -> int:
    """One worker in the foreground, no master: for debugging an app or a pool."""
    from pyd import log as pydlog
    from pyd.ipc import scoreboard as sb
    from pyd.master.boot import bind_listeners
    from pyd.net.listeners import ListenError
    from pyd.worker.main import BootError, Worker, build_apps, build_pools

    config = load_or_fail(args)
    pydlog.setup(None)
    try:
        listeners = bind_listeners(config, {}, {})
        apps = build_apps(config, privileged=True)
        pools = build_pools(config, listeners, apps, privileged=True)
    except (ListenError, BootError) as e:
        raise Failure(getattr(e, "message", str(e))) from None
    board = sb.Scoreboard(1)
    slot = board.claim(1, 1)
    board.set_pid(slot, os.getpid())
    Worker(config, 1, slot, board, listeners, apps=apps, pools=pools).run()
    return EXIT_OK  # pragma: no cover - run() exits the process

"""Directives: the service process: `Cron:` jobs, `Process:` programs, autoreload."""

from __future__ import annotations

from pyd.config.directives.scopes import (
    APP,
    FASTCGI,
    HTTP,
    LOCATION,
    METRICS,
    NAME,
    USER_POOL,
)
from pyd.config.registry import REGISTRY
from pyd.config.values import (
    Boolean,
    Choice,
    Duration,
    Integer,
    ListOf,
    Path,
    Ref,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

# -- the service process: Cron jobs, supervised Process programs, autoreload -------------------
# One process forked by the master runs them all (pyd/service.py), never one per worker.

CRON = "Cron"
PROCESS = "Process"
ENV = "env"
STOP_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2")

directive("autoreload", Boolean(), False, example="on",
          help="Development: when a source file of a loaded app (or a file under "
               "`autoreload-paths`) changes, reload the workers gracefully. A Python file with a "
               "syntax error is reported in the log and the old workers keep serving.")
directive("autoreload-paths", ListOf(Path()), (), example="/srv/shop/templates",
          help="More directories `autoreload` watches, with their subdirectories (any file).")

section("Cron", None, scope=CRON,
        example='Cron:cleanup { schedule "*/5 * * * *"; run shop.tasks:cleanup; timeout 5m; }',
        help="A scheduled job, run by the service process (once per tick, whatever the number "
             "of workers) as the top-level `user`. Each run is logged to channel `cron.NAME` "
             "with its duration and outcome; `pyd cron list` shows them, `pyd cron run NAME` "
             "runs one now.")
directive("schedule", String(join=True, expected='a cron expression such as "*/5 * * * *"',
                             example='"*/5 * * * *"'), None, scopes=CRON,
          help="When to run, in cron syntax (minute hour day month weekday, or @hourly, "
               "@daily ...), in `timezone`. A time skipped by a daylight-saving change runs at "
               "the change; a repeated one runs once (twice when the hour field is `*`).")
directive("every", Duration(min=1), None, scopes=CRON, example="30s",
          help="Run at this fixed interval instead of a `schedule`, counted from when the "
               "job was scheduled.")
directive("run", Ref(), None, scopes=CRON, example="shop.tasks:cleanup",
          help="The Python callable to run (no arguments), imported afresh for each run in a "
               "new process, after dropping privileges.")
directive("command", String(join=True, example='"/usr/bin/backup --quick"'), None, scopes=CRON,
          help="A shell command to run instead of `run` (with /bin/sh -c).")
directive("timezone", String(expected="a time zone name such as Europe/Berlin",
                             example="Europe/Berlin"), None, scopes=CRON,
          help="The time zone of `schedule`; default: the system's.")
directive("jitter", Duration(), 0.0, scopes=CRON, example="10s",
          help="Each run starts after a random delay of up to this, so a fleet does not fire "
               "at once.")
directive("timeout", Duration(), 0.0, scopes=CRON, example="5m",
          help="A run still going after this is killed (its whole process group) and logged "
               "as failed; 0: no limit.")
directive("overlap", Choice("skip", "queue", "allow"), "skip", scopes=CRON,
          help="When a tick comes while the last run still goes: skip it, queue it (at most "
               "one waits), or allow runs side by side.")

section("Process", None, scope=PROCESS,
        example='Process:queue { command "celery -A shop worker -l info"; numprocs 2; }',
        help="An external program kept running by the service process, in its own process "
             "group; stopping it stops the whole group. Its output goes to channel "
             "`process.NAME`; `pyd fullstatus` lists it, `pyd process restart NAME` restarts "
             "it.")
directive("command", String(join=True, example='"celery -A shop worker -l info"'), None,
          scopes=PROCESS, required=True,
          help="The program and its arguments, split like a shell would (quotes work) but "
               "run without one; write `sh -c '...'` for pipes and redirections.")
directive("numprocs", Integer(min=1, max=256), 1, scopes=PROCESS, example="2",
          help="How many copies to run; each gets PYD_PROCESS_NUMBER (1, 2, ...) in its "
               "environment.")
directive("user", String(expected="a user name or uid", example="www-data"), None,
          scopes=PROCESS, help="The user the program runs as; default: the top-level `user`.")
directive("group", String(expected="a group name or gid", example="www-data"), None,
          scopes=PROCESS, help="The group the program runs as; default: the primary group of "
                               "its user (or the top-level `group`).")
directive("cwd", Path(), None, scopes=PROCESS, example="/srv/shop",
          help="The program's working directory; default: the top-level `cwd`.")
block(ENV, scopes=PROCESS, inner=ENV, free_form=True, multiple=False,
      example="env { DJANGO_SETTINGS_MODULE shop.settings; }",
      help="Environment variables added to the program's (pyd's own environment, plus HOME, "
           "USER and LOGNAME of its user).")
directive("restart", Choice("always", "on-failure", "never"), "always", scopes=PROCESS,
          help="When the program exits: restart it always, only after a failure (a non-zero "
               "status or a signal), or never.")
directive("restart-delay", Duration(min=0.001), 1.0, scopes=PROCESS, example="1s",
          help="The wait before a restart; doubled after each quick crash (a run shorter than "
               "`min-uptime`), up to `restart-delay-max`.")
directive("restart-delay-max", Duration(min=0.001), 60.0, scopes=PROCESS, example="1m",
          help="The ceiling of the doubled `restart-delay`.")
directive("min-uptime", Duration(), 10.0, scopes=PROCESS, example="10s",
          help="A run at least this long is not a quick crash: the restart delay starts over.")
directive("stop-signal", Choice(*STOP_SIGNALS), "TERM", scopes=PROCESS, example="INT",
          help="The signal sent to the program's process group to stop it.")
directive("stop-timeout", Duration(), 10.0, scopes=PROCESS, example="10s",
          help="How long the program may take to stop after `stop-signal`; then its whole "
               "process group is killed (SIGKILL).")


@REGISTRY.check(CRON)
def _cron_job(get, at):
    if (get("schedule") is None) == (get("every") is None):
        yield at(None), "a Cron section needs schedule or every (one of them)"
    if (get("run") is None) == (get("command") is None):
        yield at(None), "a Cron section needs run (a Python callable) or command (one of them)"
    if get("schedule") is not None:
        from croniter import croniter

        if not croniter.is_valid(get("schedule")):
            yield at("schedule"), f'invalid cron expression "{get("schedule")}"'
    if get("timezone") is not None:
        if get("every") is not None and get("schedule") is None:
            yield at("timezone"), "timezone applies to schedule, not to every"
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(get("timezone"))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            yield at("timezone"), f'unknown time zone "{get("timezone")}"'


@REGISTRY.check(PROCESS)
def _process_section(get, at):
    if get("command") is not None:
        import shlex

        try:
            if not shlex.split(get("command")):
                yield at("command"), "an empty command"
        except ValueError as e:
            yield at("command"), f"cannot split the command into words: {e}"
    if get("restart-delay-max") < get("restart-delay"):
        yield at("restart-delay-max"), "restart-delay-max is less than restart-delay"


__all__ = ["REGISTRY", "NAME", "HTTP", "FASTCGI", "METRICS", "USER_POOL", "APP", "LOCATION"]

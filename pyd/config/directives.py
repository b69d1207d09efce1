"""Every directive, block and section kind of pyd, declared once.

This table drives the parser's validation, defaults, `pyd configtest`, `--name=value` overrides,
`PYD_NAME` environment overrides and docs/config.md (`python -m pyd.config.docs` regenerates it).
"""

from __future__ import annotations

import ipaddress

from pyd.config.endpoint import SYSLOG_FACILITIES, EndpointType
from pyd.config.registry import MAIN, REGISTRY
from pyd.config.values import (
    AddressType,
    Boolean,
    Choice,
    Count,
    Duration,
    FileMode,
    Integer,
    ListOf,
    Network,
    Path,
    Ref,
    Size,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

HTTP = "Pool:HTTPServer"
FASTCGI = "Pool:FastCGI"
METRICS = "Pool:Metrics"
USER_POOL = "Pool"
APP = "App"
LOCATION = "location"
POOLS = (HTTP, FASTCGI, USER_POOL)
WEB_POOLS = (HTTP, FASTCGI)

NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"

# -- the process: who runs, where ----------------------------------------------------------------

directive("user", String(expected="a user name or uid", example="www-data"), None, reload=False,
          help="The user workers run as. Started as root with no `user`, workers refuse to run: "
               "write `user root;` to really mean it. Ignored (with a warning) when not root.")
directive("group", String(expected="a group name or gid", example="www-data"), None, reload=False,
          help="The group workers run as; default: the primary group of `user`.")
directive("chroot", Path(), None, reload=False, example="/srv/jail",
          help="Workers chroot here before dropping privileges.")
directive("cwd", Path(), None, reload=False, example="/srv/shop",
          help="Workers change into this directory and import apps from it; default: the "
               "directory `pyd start` ran in.")
directive("pythonpath", ListOf(Path()), (), reload=False, example="/srv/shop/src",
          help="More directories put at the front of `sys.path` before apps are imported.")
directive("pidfile", Path(), "/run/pyd/pyd.pid", reload=False, example="/run/pyd/pyd.pid",
          help="The master's pid, locked with fcntl while it runs; a stale one is replaced.")
directive("control-socket", Path(), None, reload=False, example="/run/pyd/pyd.sock",
          help="The master's unix control socket for the CLI; default: the pidfile's name "
               "with `.sock`.")

# -- workers and recycling -----------------------------------------------------------------------

directive("workers", Count(), Count().parse_one("auto", None), example="4",
          help="How many workers the master keeps; `auto` is the number of CPUs.")
directive("min-workers", Integer(min=1, max=4096), None, example="2",
          help="With `max-workers`: the least the master scales down to when idle; "
               "default: `workers`.")
directive("max-workers", Integer(min=1, max=4096), None, example="8",
          help="With `min-workers`: the most the master scales up to when workers are busy; "
               "default: `workers`.")
directive("max-requests", Integer(min=0), 0, example="10000",
          help="A worker retires gracefully after this many requests (plus jitter); 0: never.")
directive("max-requests-jitter", Integer(min=0), 0, example="1000",
          help="A random 0..N added to `max-requests` per worker, so workers do not retire "
               "together.")
directive("max-memory-usage", Size(), 0, example="256M",
          help="A worker whose RSS stays above this for several samples in a row retires "
               "gracefully; 0: no limit.")
directive("max-idle", Duration(), 0.0, example="1h",
          help="A worker that served nothing for this long retires (and is replaced); 0: never.")
directive("max-recycling", Integer(min=1), 1, example="1",
          help="At most this many workers retire at once, whatever their limits say.")
directive("graceful-timeout", Duration(), 30.0, example="30s",
          help="How long a retiring or stopping worker may drain in-flight requests before it "
               "is killed.")
directive("request-timeout", Duration(), 0.0, example="60s",
          help="A request running longer is logged with every greenlet's stack, then its worker "
               "is replaced; 0: no limit.")

# -- logging -------------------------------------------------------------------------------------

directive("log-file", Path(), "/var/log/pyd/pyd.log", example="/var/log/pyd/pyd.log",
          help="The main log; `pyd log` follows it.")
directive("log-level", Choice("debug", "info", "warning", "error", "critical"), "info",
          help="The least severity written to the main log.")
directive("verbose-tty", Boolean(), False, reload=False, example="on",
          help="Stay attached to the terminal and copy the log there (development mode, "
               "as `pyd start --verbose-tty=1`).")

# -- Log sections: routes of channels to files, streams, syslog and GELF (pyd/log) ------------
# The main log's rotation is the log-rotate-* and log-compress top-level directives.

LOG = "Log"
_LEVEL = Choice("debug", "info", "warning", "error", "critical")

section("Log", None, scope=LOG,
        example="Log:errors { channels pyd.*, shop.*; level warning; "
                "file /var/log/pyd/error.log; format json; }",
        help="A route for log records: the channels it takes from a level on, one target "
             "(`file`, `stdout`, `stderr`, `syslog` or `gelf`) and a format. Its records also "
             "reach the main log unless `propagate off`.")
directive("channels", ListOf(String(pattern=r"[A-Za-z0-9_.*?\[\]!-]+",
                                    expected="a channel name or glob such as pyd.* or shop",
                                    example="pyd.*")),
          ("*",), scopes=LOG, example="pyd.*, shop.*",
          help="Logger names this route takes: a plain name takes that logger and its children "
               "(`shop` takes `shop.views`), a glob matches whole names (`pyd.*`, `cron.*`, "
               "`*`). Channels: `pyd.master`, `pyd.worker`, `pyd.pool.NAME`, `pyd.http`, "
               "`pyd.http.access`, `pyd.wsgi.errors`, `pyd.fastcgi`, `app.NAME`, `cron.NAME`, "
               "`process.NAME`, `pyd.log`, and any `logging.getLogger()` name of your apps.")
directive("level", _LEVEL, "info", scopes=LOG, example="warning",
          help="The least severity this route takes.")
directive("file", Path(), None, scopes=LOG, example="/var/log/pyd/error.log",
          help="Target: append to this file (the master writes it for every process; its "
               "directory is created).")
directive("stdout", Boolean(), False, scopes=LOG, example="",
          help="Target: the master's standard output.")
directive("stderr", Boolean(), False, scopes=LOG, example="",
          help="Target: the master's standard error.")
directive("syslog", EndpointType(514, unix=True), None, scopes=LOG, example="unix:/dev/log",
          help="Target: a syslog server (RFC 3164 messages), over the local socket, UDP or TCP "
               "(newline-framed).")
directive("facility", Choice(*SYSLOG_FACILITIES), "user", scopes=LOG, example="local0",
          help="The syslog facility of the messages.")
directive("gelf", EndpointType(12201, unix=False), None, scopes=LOG,
          example="udp://graylog.example.com:12201",
          help="Target: a Graylog GELF input, over UDP (compressed, chunked) or TCP; records' "
               "`extra` fields (request_id, ...) become GELF fields, with the pid, file and line.")
directive("format", Choice("text", "json", "gelf", "message"), None, scopes=LOG,
          example="json",
          help="text: time, level, pid, channel, message (the main log's format); json: one "
               "object a line; gelf: GELF JSON; message: the message alone (an access log in "
               "`combined` or `json`, as nginx writes it). Default: gelf for gelf targets, else "
               "text.")
directive("propagate", Boolean(), True, scopes=LOG, example="off",
          help="off: what this route takes is not also written to the main log (an access "
               "log of its own).")
directive("rotate-size", Size(), 0, scopes=LOG, example="100M",
          help="Rotate the file when it reaches this size; the old one is renamed "
               "`NAME-YYYYmmdd-HHMMSS`. 0: never.")
directive("rotate-every", Duration(), 0.0, scopes=LOG, example="1d",
          help="Rotate the file at every multiple of this interval in local time (1d: at "
               "midnight, 1h: on the hour); an empty file is left as it is. 0: never.")
directive("rotate-keep", Integer(min=0), 7, scopes=LOG, example="14",
          help="How many rotated files to keep; older ones are deleted. 0: keep them all.")
directive("compress", Choice("gzip", "zstd", "off"), "gzip", scopes=LOG, example="zstd",
          help="How rotated files are compressed, by the master, away from requests (zstd "
               "needs the `zstandard` package: `pip install pyd[compress]`).")
directive("log-rotate-size", Size(), 0, example="100M",
          help="`rotate-size` for the main log (or rotate it with logrotate and `pyd "
               "reopenlog`: init/logrotate).")
directive("log-rotate-every", Duration(), 0.0, example="1d",
          help="`rotate-every` for the main log.")
directive("log-rotate-keep", Integer(min=0), 7, example="14",
          help="`rotate-keep` for the main log.")
directive("log-compress", Choice("gzip", "zstd", "off"), "gzip", example="zstd",
          help="`compress` for the main log's rotated files.")


@REGISTRY.check(LOG)
def _log_target(get, at):
    targets = [n for n in ("file", "stdout", "stderr", "syslog", "gelf") if get(n)]
    if not targets:
        yield at(None), "a Log section needs a target: file, stdout, stderr, syslog or gelf"
        return
    for extra in targets[1:]:
        yield at(extra), f"a Log section has one target: {targets[0]} or {extra}, not both"
    target, fmt = targets[0], get("format")
    if target == "gelf" and fmt not in (None, "gelf"):
        yield at("format"), f"a gelf target takes format gelf, not {fmt}"
    if target == "syslog" and fmt == "gelf":
        yield at("format"), "a syslog target takes format text, json or message"
    if target != "file":
        for name in ("rotate-size", "rotate-every", "rotate-keep", "compress"):
            if get(name) != REGISTRY.directives_in(LOG)[name].default:
                yield at(name), f"{name} applies to file targets only"
    if target != "syslog" and get("facility") != "user":
        yield at("facility"), "facility applies to syslog targets only"
    if target == "file" and get("compress") == "zstd" and not _have("zstandard"):
        yield at("compress"), ("compress zstd needs the zstandard package "
                               "(pip install pyd[compress])")


@REGISTRY.check(MAIN)
def _main_log_compress(get, at):
    if get("log-compress") == "zstd" and not _have("zstandard"):
        yield at("log-compress"), ("log-compress zstd needs the zstandard package "
                                   "(pip install pyd[compress])")


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- pools and apps ------------------------------------------------------------------------------

section("Pool", "HTTPServer", scope=HTTP, impl="pyd.pools.http:HTTPServerPool", example="Pool:HTTPServer { listen 127.0.0.1:8080; "
        "app shop.wsgi:application; }",
        help="An HTTP/1.1 server for WSGI apps; `Pool:HTTPServer:name` for more than one.")
section("Pool", "FastCGI", scope=FASTCGI, impl="pyd.pools.fastcgi:FastCGIPool", example="Pool:FastCGI { listen 127.0.0.1:9000; "
        "app shop.wsgi:application; }",
        help="A FastCGI server for WSGI apps behind nginx (`fastcgi_pass`).")
section("Pool", "Metrics", scope=METRICS, served_by="master",
        example="Pool:Metrics { listen 127.0.0.1:9100; }",
        help="Metrics and health, served by the master itself (no app code, no worker): "
             "`GET /metrics` in the Prometheus text format (OpenMetrics when the scraper's "
             "Accept asks), `GET /health` (200 while the master's loop turns) and `GET /ready` "
             "(200 while every worker the master keeps serves; 503 from the moment a stop "
             "begins). One request per connection.")
section("Pool", None, scope=USER_POOL, extra=True,
        example="Pool:echo { class examples.echo:EchoPool; listen 127.0.0.1:7000; }",
        help="A network pool of your own: `class` gets each accepted connection. Other "
             "directives in the section are its settings.")
section("App", None, scope=APP, extra=True,
        example="App:shop { class shop.app:Shop; privileged; }",
        help="An application instance (a `pyd.AppInstance` subclass). Other directives in "
             "the section are its settings.")

directive("listen", AddressType(), (), scopes=POOLS + (METRICS,), multiple=True, required=True,
          reload=True, example="127.0.0.1:8080",
          help="Addresses to accept connections on. The master binds them before forking and "
               "keeps them open across reloads.")
directive("privileged", Boolean(), False, scopes=POOLS + (APP,), reload=False,
          example="",
          help="Load this in the master as root, before workers drop privileges.")
directive("app", Ref(allow_name=True), None, scopes=WEB_POOLS + (LOCATION,),
          example="shop.wsgi:application",
          help="The WSGI application: `module:attribute`, `module:factory()`, or the name of an "
               "`App:` section.")
directive("class", Ref(), None, scopes=(USER_POOL, APP), required=True, reload=False,
          example="examples.echo:EchoPool",
          help="The Python class of a user pool or an `App:` section, as `module:Class`.")

block("location", scopes=WEB_POOLS, inner=LOCATION,
      arg=String(pattern=r"/[^\x00-\x1f\x7f]*", example="/static/",
                 expected="a path prefix starting with /, without control characters"),
      example="location /static/ { root /srv/static; }",
      help="Requests whose path starts with this prefix (the longest wins) go to this app or "
           "these files.")
directive("root", Path(), None, scopes=LOCATION, example="/srv/www",
          help="Serve files from this directory: the request path is appended to it.")
directive("alias", Path(), None, scopes=LOCATION, example="/srv/static",
          help="Serve files from this directory: the path after the location prefix is appended.")
directive("index", ListOf(String()), ("index.html",), scopes=LOCATION, example="index.html",
          help="Files to serve for a request that names a directory.")
directive("allow-dotfiles", Boolean(), False, scopes=LOCATION, example="on",
          help="Serve files and directories whose name starts with `.` (`.git/`, `.env`); "
               "off: they are answered 404, as if absent (`/.well-known/` is served either "
               "way).")


# -- Pool:HTTPServer (and what FastCGI shares with it) -----------------------------------------

directive("keepalive-timeout", Duration(), 75.0, scopes=WEB_POOLS, example="75s",
          help="How long an idle keep-alive connection waits for its next request.")
directive("client-header-timeout", Duration(min=0.001), 60.0, scopes=HTTP, example="10s",
          help="A request's head must arrive whole within this, or the answer is 408 "
               "(slowloris).")
directive("client-body-timeout", Duration(min=0.001), 60.0, scopes=WEB_POOLS, example="60s",
          help="The longest wait between two reads of a request body; then 408.")
directive("send-timeout", Duration(min=0.001), 60.0, scopes=HTTP, example="60s",
          help="The longest wait for the client to take more of a response; then the "
               "connection closes.")
directive("client-max-body-size", Size(), 1 << 20, scopes=WEB_POOLS, example="10M",
          help="Larger request bodies are refused with 413; 0: no limit.")
directive("request-buffering", Boolean(), False, scopes=HTTP, example="on",
          help="Read the whole request body before the app runs (slow uploads then hold no "
               "app resources); off: the app reads it from the connection as it arrives.")
directive("client-body-buffer-size", Size(min=1024), 65536, scopes=HTTP, example="1M",
          help="With request-buffering: bodies up to this size stay in memory, larger ones go "
               "to a temporary file.")
directive("client-body-temp-path", Path(), None, scopes=HTTP, example="/var/tmp/pyd",
          help="Where request-buffering puts large bodies; default: the system's temporary "
               "directory.")
directive("max-request-line", Size(min=256), 8192, scopes=HTTP, example="8K",
          help="A longer request-target is refused with 414.")
directive("max-header-size", Size(min=1024), 65536, scopes=HTTP, example="64K",
          help="Request header fields larger than this in total are refused with 431.")
directive("max-headers", Integer(min=1, max=10000), 100, scopes=HTTP, example="100",
          help="More request header fields than this are refused with 431.")
directive("max-connections", Integer(min=1), 10000, scopes=POOLS, example="10000",
          help="Per worker: at this many open connections accepting pauses, and resumes below.")
directive("real-ip-from", Network(), (), scopes=HTTP, multiple=True, example="10.0.0.0/8",
          help="Trusted proxies: from these peers, X-Forwarded-For gives REMOTE_ADDR and "
               "X-Forwarded-Proto the URL scheme.")
directive("access-log", Choice("combined", "json", "off"), "combined", scopes=HTTP,
          example="json", help="The access log's format, written to channel pyd.http.access "
                               "(see `access-log-target`); off: none.")
directive("access-log-target", String(pattern=r"Log:[^\s:]+", expected="a Log section such as "
                                     "Log:access", example="Log:access"),
          None, scopes=HTTP,
          help="Write this pool's access log to that Log section's target (in its format; "
               "`message`, the bare line, by default) instead of the main log, on channel "
               "`pyd.http.access.NAME`. A Log section named here takes no other channels "
               "unless it says `channels` itself.")
directive("server-tokens", Boolean(), True, scopes=HTTP, example="off",
          help="Show pyd's version in the Server header (off: just `pyd`).")
directive("gzip", Boolean(), False, scopes=HTTP, example="on",
          help="Compress responses on the fly with the best coding the client accepts "
               "(Accept-Encoding q-values): gzip always, brotli and zstd when the `brotli` and "
               "`zstandard` packages are installed (`pip install pyd[compress]`). Only "
               "`compress-types` above `compress-min-length`; never ranges, HEAD, 204/304, "
               "bodies already encoded or marked `Cache-Control: no-transform`.")
directive("compress-types", ListOf(String()), ("text/*", "application/json",
                                               "application/javascript", "application/xml",
                                               "image/svg+xml"),
          scopes=HTTP, example="text/* application/json",
          help="Content types `gzip` compresses; `type/*` matches a whole family.")
directive("compress-min-length", Size(), 1024, scopes=HTTP, example="1K",
          help="Responses known to be shorter are sent as they are; a streamed response of "
               "unknown length is compressed.")
directive("compress-level", Integer(min=1, max=9), 4, scopes=HTTP, example="4",
          help="1 (fastest) to 9 (smallest): the level of gzip, the quality of brotli and the "
               "level of zstd.")


# -- Pool:FastCGI ---------------------------------------------------------------------------------

directive("allowed-clients", Network(), (ipaddress.ip_network("127.0.0.0/8"),
                                         ipaddress.ip_network("::1/128")),
          scopes=(FASTCGI, METRICS), multiple=True, example="10.0.0.0/8",
          help="Only these peers may connect over TCP; others are closed (FastCGI logs them) "
               "(unix sockets are guarded by socket-mode and socket-owner).")
directive("socket-mode", FileMode(), None, scopes=POOLS + (METRICS,), reload=False, example="0660",
          help="The permissions of the pool's unix socket listeners.")
directive("socket-owner", ListOf(String()), None, scopes=POOLS + (METRICS,), reload=False,
          example="www-data www-data",
          help="The owner (user, optionally group) of the pool's unix socket listeners, so "
               "that nginx can connect.")


@REGISTRY.check(MAIN)
def _worker_counts(get, at):
    lo, hi, n = get("min-workers"), get("max-workers"), get("workers")
    if lo is not None and hi is not None and lo > hi:
        yield at("min-workers"), f"min-workers {lo} is more than max-workers {hi}"
    if lo is not None and hi is None and n < lo:
        yield at("min-workers"), f"min-workers {lo} is more than workers {n}"
    if hi is not None and lo is None and n > hi:
        yield at("max-workers"), f"max-workers {hi} is less than workers {n}"


@REGISTRY.check(LOCATION)
def _location_target(get, at):
    if get("root") is not None and get("alias") is not None:
        yield at("alias"), "a location takes root or alias, not both"
    if get("root") is None and get("alias") is None and get("app") is None:
        yield at(None), "a location needs app, root or alias"


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

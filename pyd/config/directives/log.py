"""Directives: the main log and `Log:` sections (routes to files, streams, syslog, GELF)."""

from __future__ import annotations

from pyd.config.endpoint import SYSLOG_FACILITIES, EndpointType
from pyd.config.registry import MAIN, REGISTRY
from pyd.config.values import (
    Boolean,
    Choice,
    Duration,
    Integer,
    ListOf,
    Path,
    Size,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

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

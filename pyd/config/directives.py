"""Every directive, block and section kind of pyd, declared once.

This table drives the parser's validation, defaults, `pyd configtest`, `--name=value` overrides,
`PYD_NAME` environment overrides and docs/config.md (`python -m pyd.config.docs` regenerates it).
"""

from __future__ import annotations

import ipaddress

from .registry import MAIN, REGISTRY
from .values import (
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

# -- pools and apps ------------------------------------------------------------------------------

section("Pool", "HTTPServer", scope=HTTP, example="Pool:HTTPServer { listen 127.0.0.1:8080; "
        "app shop.wsgi:application; }",
        help="An HTTP/1.1 server for WSGI apps; `Pool:HTTPServer:name` for more than one.")
section("Pool", "FastCGI", scope=FASTCGI, example="Pool:FastCGI { listen 127.0.0.1:9000; "
        "app shop.wsgi:application; }",
        help="A FastCGI server for WSGI apps behind nginx (`fastcgi_pass`).")
section("Pool", None, scope=USER_POOL, extra=True,
        example="Pool:echo { class examples.echo:EchoPool; listen 127.0.0.1:7000; }",
        help="A network pool of your own: `class` gets each accepted connection. Other "
             "directives in the section are its settings.")
section("App", None, scope=APP, extra=True,
        example="App:shop { class shop.app:Shop; privileged; }",
        help="An application instance (a `pyd.AppInstance` subclass). Other directives in "
             "the section are its settings.")

directive("listen", AddressType(), (), scopes=POOLS, multiple=True, required=True,
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


# -- Pool:HTTPServer (and what FastCGI shares with it) -----------------------------------------

directive("keepalive-timeout", Duration(), 75.0, scopes=WEB_POOLS, example="75s",
          help="How long an idle keep-alive connection waits for its next request.")
directive("client-header-timeout", Duration(min=0.001), 60.0, scopes=HTTP, example="10s",
          help="A request's head must arrive whole within this, or the answer is 408 "
               "(slowloris).")
directive("client-body-timeout", Duration(min=0.001), 60.0, scopes=WEB_POOLS, example="60s",
          help="The longest wait between two reads of a request body; then 408.")
directive("send-timeout", Duration(min=0.001), 60.0, scopes=WEB_POOLS, example="60s",
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
directive("real-ip-from", Network(), (), scopes=WEB_POOLS, multiple=True, example="10.0.0.0/8",
          help="Trusted proxies: from these peers, X-Forwarded-For gives REMOTE_ADDR and "
               "X-Forwarded-Proto the URL scheme.")
directive("access-log", Choice("combined", "json", "off"), "combined", scopes=HTTP,
          example="json", help="The access log's format, written to channel pyd.http.access; "
                               "off: none.")
directive("server-tokens", Boolean(), True, scopes=WEB_POOLS, example="off",
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
          scopes=FASTCGI, multiple=True, example="10.0.0.0/8",
          help="Only these peers may connect over TCP; others are closed and logged "
               "(unix sockets are guarded by socket-mode and socket-owner).")
directive("socket-mode", FileMode(), None, scopes=POOLS, reload=False, example="0660",
          help="The permissions of the pool's unix socket listeners.")
directive("socket-owner", ListOf(String()), None, scopes=POOLS, reload=False,
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


__all__ = ["REGISTRY", "NAME", "HTTP", "FASTCGI", "USER_POOL", "APP", "LOCATION"]

"""Directives: `Pool:HTTPServer`, and what FastCGI shares with it."""

from __future__ import annotations

from pyd.config.directives.scopes import (
    HTTP,
    POOLS,
    WEB_POOLS,
)
from pyd.config.registry import REGISTRY
from pyd.config.values import (
    Boolean,
    Choice,
    Duration,
    Integer,
    ListOf,
    Network,
    Path,
    Size,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

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

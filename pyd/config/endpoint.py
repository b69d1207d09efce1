"""Where a remote log target is: `udp://host:port`, `tcp://host:port`, `unix:/dev/log`.

The value types of the `syslog`, `gelf` and `facility` directives; config vocabulary, so the
log package reads them from here and the registry needs nothing of `log`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyd.config.values import BadValue, ParseContext, ValueType, _q

SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
                     "cron", "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4",
                     "local5", "local6", "local7")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Endpoint:
    """A syslog or GELF server: scheme udp, tcp or unix; host and port, or a socket path."""

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"{self.scheme}://{host}:{self.port}"


class EndpointType(ValueType):
    """`udp://host:port`, `tcp://host:port`, a bare `host[:port]` (UDP) or `unix:/path`."""

    def __init__(self, default_port: int, unix: bool):
        self.default_port = default_port
        self.unix = unix
        self.example = f"udp://127.0.0.1:{default_port}"
        self.expected = ("udp://host[:port], tcp://host[:port]"
                         + (" or unix:/path" if unix else "")
                         + f" (port {default_port} if not given)")

    def parse_one(self, text: str, ctx: ParseContext) -> Endpoint:
        if text.startswith("unix:"):
            if not self.unix:
                raise BadValue(f"invalid target {_q(text)}: expected {self.expected}")
            path = text[5:].removeprefix("//")
            if not path or "\0" in path:
                raise BadValue(f"invalid unix socket {_q(text)}: expected unix:/path")
            return Endpoint("unix", path=os.path.normpath(os.path.join(ctx.base_dir, path)))
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "udp", text
        scheme = scheme.lower()
        if scheme not in ("udp", "tcp"):
            raise BadValue(f"invalid scheme {_q(scheme)} in {_q(text)}: expected "
                           f"{self.expected}")
        if rest.startswith("["):
            host, sep, tail = rest[1:].partition("]")
            if not sep or ":" not in host or (tail and not tail.startswith(":")):
                raise BadValue(f"invalid address {_q(text)}: an IPv6 host is written [::1]")
            port_text = tail[1:]
        else:
            host, _, port_text = rest.partition(":")
            if not _HOST.fullmatch(host):
                raise BadValue(f"invalid host {_q(host)} in {_q(text)}: expected "
                               f"{self.expected}")
        port = self.default_port
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise BadValue(f"invalid port {_q(port_text)} in {_q(text)}: expected 1 to "
                               "65535")
            port = int(port_text)
        return Endpoint(scheme, host, port)

    def format_one(self, value: Endpoint) -> str:
        return str(value)

"""The access log of the HTTP and FastCGI pools: `combined` or `json`, every value escaped.

A header can never forge a field: in `combined` quotes, backslashes and control characters
are escaped as nginx does; in `json` the encoder escapes everything.
"""

from __future__ import annotations

import json
import logging
import time

_log = logging.getLogger("pyd.http.access")
_clock = [0, ""]


def _now() -> str:
    now = int(time.time())
    if now != _clock[0]:
        _clock[0] = now
        _clock[1] = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
    return _clock[1]


def _escape(value: bytes | str | None) -> str:
    """nginx's escaping for quoted fields: `"`, `\\` and bytes outside printable ASCII."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if all(0x20 <= b < 0x7F and b not in (0x22, 0x5C) for b in value):
        return value.decode("ascii")
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}"
                   for b in value)


def _header(req, name: bytes) -> bytes | None:
    for key, value in req.headers:
        if key.lower() == name:
            return value
    return None


class AccessLog:
    def __init__(self, fmt: str, pool: str, logger: logging.Logger = _log):
        self.fmt = fmt
        self.pool = pool
        self.logger = logger

    @classmethod
    def create(cls, fmt: str | None, pool: str) -> AccessLog | None:
        if not fmt or fmt == "off":
            return None
        return cls(fmt, pool)

    def log(self, conn, req, started: float) -> None:
        status = conn.status[:3] if conn.status else "-"
        duration = time.monotonic() - started
        if self.fmt == "json":
            line = json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "remote_addr": conn.remote_addr, "method": req.method,
                "uri": req.target.decode("latin-1"), "protocol": f"HTTP/{req.version}",
                "status": int(status) if status.isdigit() else None,
                "body_bytes": conn.body_bytes,
                "referer": (_header(req, b"referer") or b"").decode("latin-1") or None,
                "user_agent": (_header(req, b"user-agent") or b"").decode("latin-1") or None,
                "duration": round(duration, 6), "pool": self.pool,
            }, ensure_ascii=True)
        else:
            line = (f'{conn.remote_addr or "-"} - - [{_now()}] '
                    f'"{_escape(req.method)} {_escape(req.target)} HTTP/{req.version}" '
                    f'{status} {conn.body_bytes} "{_escape(_header(req, b"referer"))}" '
                    f'"{_escape(_header(req, b"user-agent"))}" {duration:.3f}')
        self.logger.info(line)

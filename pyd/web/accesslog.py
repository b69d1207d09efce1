"""The access log of the HTTP pool: `combined` or `json`, every value escaped; an observer of
the pool's exchanges, fed a RequestRecord per response.

(FastCGI requests are in the access log of nginx, which answers the client.)

A header can never forge a field: in `combined` quotes, backslashes and control characters
are escaped as nginx does; in `json` the encoder escapes everything.
"""

from __future__ import annotations

import json
import logging
import time

_log = logging.getLogger("pyd.http.access")
_json = json.encoder.encode_basestring_ascii  # a str as a JSON string, quoted and escaped
_clock = [0, "", ""]  # the second, and it as combined and json write it
BATCH_MAX = 512  # lines gathered before they are built, whatever the time


def _stamp(wall: float, iso: bool = False) -> str:
    """The time of a request as combined (or json) writes it; computed once a second."""
    second = int(wall)
    if second != _clock[0]:
        local = time.localtime(second)
        _clock[:] = (second, time.strftime("%d/%b/%Y:%H:%M:%S %z", local),
                     time.strftime("%Y-%m-%dT%H:%M:%S%z", local))
    return _clock[2] if iso else _clock[1]


_SAFE = bytes(b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C))  # kept as they are


def _escape(value: bytes | str | None) -> str:
    """nginx's escaping for quoted fields: `"`, `\\` and bytes outside printable ASCII."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if not value.translate(None, _SAFE):  # nothing but safe bytes (in C, not a byte loop)
        return value.decode("ascii")
    return "".join(chr(b) if b in _SAFE else f"\\x{b:02X}" for b in value)


def _header(req, name: bytes) -> bytes | None:
    for key, value in req.headers:
        if key.lower() == name:
            return value
    return None


class AccessLog:
    def __init__(self, fmt: str, pool: str, logger: logging.Logger = _log):
        self.fmt = fmt
        self.pool = pool
        self.pool_json = _json(pool)
        self.logger = logger
        self.pending: list[tuple] = []  # what the lines not built yet need

    @classmethod
    def create(cls, fmt: str | None, pool: str, channel: str = _log.name) -> AccessLog | None:
        if not fmt or fmt == "off":
            return None
        if channel == _log.name:
            return cls(fmt, pool)
        from pyd.log.handler import mark_preformatted

        mark_preformatted((channel,))
        return cls(fmt, pool, logging.getLogger(channel))

    def __call__(self, record) -> None:
        """Log one response (an observer of the pool's exchanges, fed a RequestRecord); a
        request that could not be read has no method: its request field is `-`, as nginx
        writes it.

        The records wait; the lines are built in a batch when the worker next flushes its log
        (every 50 ms): code run many times in a row runs warm, at about a third of its cost
        between two requests, and the request path keeps one append."""
        pending = self.pending
        pending.append(record)
        if len(pending) == 1:
            later = getattr(self.logger, "info_later", None)
            if later is None:  # a plain logger (not pyd's fast path): no batches
                self.write()
            else:
                later(self.write)
        elif len(pending) >= BATCH_MAX:
            self.write()

    def write(self) -> None:
        """Build and log the lines gathered since the last time."""
        pending, self.pending = self.pending, []
        line, logger = self.line, self.logger
        info_many = getattr(logger, "info_many", None)
        if info_many is not None:
            info_many([(line(record), record.time) for record in pending])
        else:
            for record in pending:
                logger.info(line(record))

    def line(self, record) -> str:
        client, body_bytes, duration, wall = (record.client, record.bytes_out, record.duration,
                                              record.time)
        status = record.status[:3] if record.status else "-"
        req = record if record.method else None
        if self.fmt == "json":
            # Written out rather than json.dumps(dict): the same text at a third of the cost,
            # every string still escaped by json's own (C) encoder.
            if req is None:
                request = '"method": null, "uri": null, "protocol": null'
                referer = agent = None
            else:
                request = (f'"method": {_json(req.method)}, '
                           f'"uri": {_json(req.target.decode("latin-1"))}, '
                           f'"protocol": "HTTP/{req.version}"')
                referer, agent = _header(req, b"referer"), _header(req, b"user-agent")
            return (f'{{"time": "{_stamp(wall, iso=True)}", "remote_addr": {_json(client)}, '
                    f'{request}, "status": {status if status.isdigit() else "null"}, '
                    f'"body_bytes": {body_bytes}, '
                    f'"referer": {_json(referer.decode("latin-1")) if referer else "null"}, '
                    f'"user_agent": {_json(agent.decode("latin-1")) if agent else "null"}, '
                    f'"duration": {round(duration, 6)!r}, "pool": {self.pool_json}}}')
        if req is None:
            return f'{client or "-"} - - [{_stamp(wall)}] "-" {status} {body_bytes} "-" "-" 0.000'
        # One pass over the headers, one safety check for the three fields that need it.
        referer = agent = None
        for name, value in req.headers:
            if len(name) in (7, 10):
                name = name.lower()
                if name == b"referer" and referer is None:
                    referer = value
                elif name == b"user-agent" and agent is None:
                    agent = value
        target = req.target
        if (target + (referer or b"") + (agent or b"")).translate(None, _SAFE):
            fields = _escape(target), _escape(referer), _escape(agent)
        else:  # nothing to escape (the method is a token: always safe)
            fields = (target.decode("ascii"), referer.decode("ascii") if referer else "-",
                      agent.decode("ascii") if agent else "-")
        return (f'{client or "-"} - - [{_stamp(wall)}] "{req.method} {fields[0]} '
                f'HTTP/{req.version}" {status} {body_bytes} "{fields[1]}" '
                f'"{fields[2]}" {duration:.3f}')

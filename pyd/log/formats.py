"""How a record is written: text, json, gelf, message, the coloured terminal and syslog framing.

A format turns a LogRecord into what one target takes: a finished line (str, ending with a
newline) for files and streams, or one datagram (bytes) for syslog and GELF servers. Formats
that can also build a line from a bare message have `line_maker()`: the access log's fast path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

from pyd.config.endpoint import SYSLOG_FACILITIES

LINES = "lines"  # the target takes whole lines, concatenated (files, stdout, the terminal)
MESSAGES = "messages"  # the target takes one message at a time (syslog, GELF)

LEVEL_TAGS = {logging.DEBUG: "DEBUG  ", logging.INFO: "INFO   ", logging.WARNING: "WARNING",
              logging.ERROR: "ERROR  ", logging.CRITICAL: "CRITICAL"}
_COLOURS = {logging.DEBUG: "2", logging.INFO: "32", logging.WARNING: "33",
            logging.ERROR: "31", logging.CRITICAL: "1;31"}
SYSLOG_SEVERITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                   logging.CRITICAL: 2}
_FACILITY_CODES = {name: (16 + i - 12 if name.startswith("local") else i)
                   for i, name in enumerate(SYSLOG_FACILITIES)}
_MILLIS = tuple(f",{ms:03d}" for ms in range(1000))  # ",007": formatting it costs more
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Attributes every LogRecord has; anything else came from `extra=` and is written as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}

# Control characters would let a message forge a line or drive the terminal: escaped. Newlines
# are kept (tracebacks) but every continuation line is indented, so a record always starts at
# column 0 and nothing inside a message can pass for one.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _hex(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


def escape_text(text: str) -> str:
    """One record's message for a text line: controls escaped, continuation lines indented."""
    if text.isprintable():
        return text
    text = _CONTROL.sub(_hex, text.rstrip("\n"))
    return text.replace("\n", "\n  ")


def level_tag(levelno: int) -> str:
    return LEVEL_TAGS.get(levelno) or logging.getLevelName(levelno)[:8].ljust(7)


class Clock:
    """The local time of the current second as text, computed once a second."""

    __slots__ = ("fmt", "sec", "text")

    def __init__(self, fmt: str):
        self.fmt, self.sec, self.text = fmt, -1, ""

    def __call__(self, created: float) -> str:
        sec = int(created)
        if sec != self.sec:
            local = time.localtime(sec)
            text = time.strftime(self.fmt, local)
            if "%z" in self.fmt:  # ISO 8601 wants +02:00, strftime gives +0200
                text = text[:-2] + ":" + text[-2:]
            self.sec, self.text = sec, text
        return self.text


def _full_message(record: logging.LogRecord, message: str) -> str:
    """The message with its traceback and stack, as the standard Formatter adds them."""
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if record.stack_info:
        message = f"{message}\n{record.stack_info}"
    return message


def extra_fields(record: logging.LogRecord) -> dict:
    """What the caller passed with `extra=` (request_id, pool, ...)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormat:
    """`2024-05-01 12:00:00,123 INFO    [4242] pyd.master: message`: the main log's format."""

    kind = LINES

    def __init__(self, colour: bool = False):
        self.clock = Clock("%Y-%m-%d %H:%M:%S")
        self.colour = colour

    def _tag(self, levelno: int) -> str:
        tag = level_tag(levelno)
        if self.colour:
            colour = _COLOURS.get(levelno, "0")
            return f"\x1b[{colour}m{tag}\x1b[0m"
        return tag

    def format(self, record: logging.LogRecord, message: str) -> str:
        created = record.created
        text = escape_text(_full_message(record, message))
        return (f"{self.clock(created)},{int(created * 1000) % 1000:03d} "
                f"{self._tag(record.levelno)} [{record.process}] {record.name}: {text}\n")

    def line_maker(self, name: str, levelno: int, pid: int):
        """make(message, created) -> the line: the fast path's work, minus what never changes."""
        tail = f" {self._tag(levelno)} [{pid}] {name}: "
        clock = self.clock

        def make(message: str, created: float) -> str:
            if not message.isprintable():
                message = escape_text(message)
            stamp = clock.text if int(created) == clock.sec else clock(created)
            return "".join((stamp, _MILLIS[int(created * 1000) % 1000], tail, message, "\n"))

        return make


class MessageFormat:
    """The message alone, one line: an access log as nginx writes it (combined or json)."""

    kind = LINES

    def format(self, record: logging.LogRecord, message: str) -> str:
        return escape_text(_full_message(record, message)) + "\n"

    def line_maker(self, name: str, levelno: int, pid: int):
        def make(message: str, created: float) -> str:
            if not message.isprintable():
                message = escape_text(message)
            return message + "\n"

        return make


class JsonFormat:
    """One JSON object a line; ensure_ascii escapes every control and non-ASCII character."""

    kind = LINES

    def __init__(self) -> None:
        self.clock = Clock("%Y-%m-%dT%H:%M:%S%z")

    def _time(self, created: float) -> str:
        text = self.clock(created)
        return f"{text[:-6]}.{int(created * 1000) % 1000:03d}{text[-6:]}"

    def format(self, record: logging.LogRecord, message: str) -> str:
        obj = {"time": self._time(record.created), "level": record.levelname.lower(),
               "pid": record.process, "channel": record.name, "message": message}
        _full_message(record, "")
        if record.exc_text:
            obj["exception"] = record.exc_text
        if record.stack_info:
            obj["stack"] = record.stack_info
        for key, value in extra_fields(record).items():
            obj.setdefault(key, value)
        return json.dumps(obj, ensure_ascii=True, default=repr) + "\n"

    def line_maker(self, name: str, levelno: int, pid: int):
        level = logging.getLevelName(levelno).lower()
        dumps = json.dumps

        def make(message: str, created: float) -> str:
            return dumps({"time": self._time(created), "level": level, "pid": pid,
                          "channel": name, "message": message}, ensure_ascii=True) + "\n"

        return make


class GelfFormat:
    """GELF as graypy builds it (extra fields, pid, file and line): compressed for UDP,
    NUL-terminated for TCP, one JSON object a line for files and streams."""

    def __init__(self, transport: str, hostname: str):
        import graypy

        self.transport = transport
        self.kind = MESSAGES if transport in ("udp", "tcp") else LINES
        if transport == "tcp":
            self.gelf = graypy.GELFTCPHandler("localhost", localname=hostname)
        else:  # graypy's UDP default port is 12202; ours is 12201, and only the master sends
            self.gelf = graypy.GELFUDPHandler("localhost", 12201, localname=hostname)

    def _dict(self, record: logging.LogRecord) -> dict:
        gelf = self.gelf._make_gelf_dict(record)
        gelf["_channel"] = record.name
        return gelf

    def format(self, record: logging.LogRecord, message: str):
        packed = self.gelf._pack_gelf_dict(self._dict(record))
        if self.transport == "udp":
            import zlib

            return zlib.compress(packed)
        if self.transport == "tcp":
            return packed + b"\0"
        return packed.decode("utf-8") + "\n"


class SyslogFormat:
    """RFC 3164 messages: `<PRI>May  1 12:00:00 host pyd[4242]: channel: message`.

    The unix socket gets no host (the local syslog adds it); newlines become #012 as rsyslog
    writes them, so TCP's newline framing holds.
    """

    kind = MESSAGES

    def __init__(self, body: str, facility: str, transport: str, hostname: str):
        self.body = body  # text, json or message
        self.facility = _FACILITY_CODES[facility]
        self.transport = transport
        self.host = "" if transport == "unix" else hostname + " "
        self.json = JsonFormat() if body == "json" else None
        self.clock = Clock("%H:%M:%S")

    def _stamp(self, created: float) -> str:
        local = time.localtime(created)
        return f"{_MONTHS[local.tm_mon - 1]} {local.tm_mday:2d} {self.clock(created)}"

    def format(self, record: logging.LogRecord, message: str) -> bytes:
        if self.json is not None:
            text = self.json.format(record, message).rstrip("\n")
        else:
            text = _CONTROL.sub(_hex, _full_message(record, message).rstrip("\n"))
            if self.body == "text":
                text = f"{record.name}: {text}"
        text = text.replace("\n", "#012")
        pri = self.facility * 8 + SYSLOG_SEVERITY.get(record.levelno, 6)
        out = f"<{pri}>{self._stamp(record.created)} {self.host}pyd[{record.process}]: {text}"
        if self.transport == "tcp":
            out += "\n"
        return out.encode("utf-8", "backslashreplace")


def make_format(name: str, target: str, transport: str = "", facility: str = "user",
                colour: bool = False, hostname: str | None = None):
    """The format object for a route: `name` from the config, `target` file/stream/syslog/gelf."""
    hostname = hostname or os.uname().nodename
    if target == "syslog":
        return SyslogFormat(name, facility, transport, hostname)
    if name == "gelf":
        return GelfFormat(transport if target == "gelf" else "file", hostname)
    if name == "json":
        return JsonFormat()
    if name == "message":
        return MessageFormat()
    return TextFormat(colour=colour)

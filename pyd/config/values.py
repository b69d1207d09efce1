"""Value types of the config language: text in, typed value out, and back to canonical text.

Each type parses the words a directive was given and formats a value so that parsing the
formatted text gives the same value again (the round-trip `configtest --print` relies on).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any


def _q(text: str) -> str:
    """Quote a value for a message: double quotes, unprintable characters escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return '"' + "".join(out) + '"'


class BadValue(Exception):
    """A value does not fit its type; `index` says which word (None: the whole directive)."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.index = index


@dataclass(frozen=True)
class ParseContext:
    """What a value needs to know about where it was written: relative paths resolve here."""

    base_dir: str


# How many words a type takes.
ONE = "one"  # exactly one word
JOIN = "join"  # one or more words, joined by spaces ("1h 30m", an unquoted command)
LIST = "list"  # one or more items; bare words may also be split on commas and blanks
FLAG = "flag"  # no word means on; else one word


class ValueType:
    """Base class: subclasses set `expected`, `example` and implement parse_one/format_one."""

    arity = ONE
    expected = "a value"
    example = "value"

    def parse(self, words: list[str], ctx: ParseContext) -> Any:
        if self.arity == FLAG and not words:
            return True
        if not words:
            raise BadValue(f"expected {self.expected}, got no value")
        if self.arity in (ONE, FLAG):
            if len(words) > 1:
                raise BadValue(f"expected one value ({self.expected}), got {len(words)}", 1)
            return self.parse_one(words[0], ctx)
        if self.arity == JOIN:
            return self.parse_one(" ".join(words), ctx)
        items = []
        for i, word in enumerate(words):
            try:
                items.append(self.parse_one(word, ctx))
            except BadValue as e:
                raise BadValue(e.message, i) from None
        return tuple(items)

    def format(self, value: Any) -> list[str]:
        if self.arity == LIST:
            return [self.format_one(v) for v in value]
        return [self.format_one(value)]

    def parse_one(self, text: str, ctx: ParseContext) -> Any:
        raise NotImplementedError

    def format_one(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        """One phrase for docs and error messages."""
        return self.expected


class String(ValueType):
    expected = "a string"
    example = "text"

    def __init__(self, join: bool = False, nonempty: bool = True, pattern: str | None = None,
                 expected: str | None = None, example: str | None = None):
        self.arity = JOIN if join else ONE
        self.nonempty = nonempty
        self.pattern = re.compile(pattern) if pattern else None
        if expected:
            self.expected = expected
        if example:
            self.example = example

    def parse_one(self, text: str, ctx: ParseContext) -> str:
        if self.nonempty and not text:
            raise BadValue(f"expected {self.expected}, got an empty string")
        if self.pattern and not self.pattern.fullmatch(text):
            raise BadValue(f"invalid value {_q(text)}: expected {self.expected}")
        return text


class Path(ValueType):
    """A filesystem path; a relative one is taken relative to the file that names it."""

    expected = "a path"
    example = "/var/run/pyd.pid"

    def parse_one(self, text: str, ctx: ParseContext) -> str:
        if not text:
            raise BadValue("expected a path, got an empty string")
        if "\0" in text:
            raise BadValue("a path cannot contain a NUL byte")
        return os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(text)))


_INT = re.compile(r"([+-]?[0-9]+)([kKmM]?)")


class Integer(ValueType):
    expected = "an integer"
    example = "100"

    def __init__(self, min: int | None = None, max: int | None = None, example: str = "100"):
        self.min, self.max = min, max
        self.example = example
        if min is not None and max is not None:
            self.expected = f"an integer from {min} to {max}"
        elif min is not None:
            self.expected = f"an integer of at least {min}"

    def parse_one(self, text: str, ctx: ParseContext) -> int:
        m = _INT.fullmatch(text)
        if not m:
            raise BadValue(f"invalid integer {_q(text)}: expected {self.expected}")
        n = int(m.group(1)) * {"": 1, "k": 1000, "m": 1000_000}[m.group(2).lower()]
        return self.check_range(n, text)

    def check_range(self, n: int, text: str) -> int:
        if self.min is not None and n < self.min:
            raise BadValue(f"{text} is out of range: expected {self.expected}")
        if self.max is not None and n > self.max:
            raise BadValue(f"{text} is out of range: expected {self.expected}")
        return n


class AutoCount(int):
    """`auto`: the number of CPUs, remembered as `auto` so printing keeps it."""

    def __new__(cls) -> AutoCount:
        return super().__new__(cls, os.cpu_count() or 1)

    def __reduce__(self):
        return (AutoCount, ())  # the CPU count where it is unpickled

    def __repr__(self) -> str:
        return f"auto({int(self)})"

    def __str__(self) -> str:  # in messages: the number it stands for
        return str(int(self))


class Count(Integer):
    """A positive integer or `auto` (the number of CPUs): `workers 4;`, `workers auto;`."""

    def __init__(self, min: int = 1, max: int | None = 4096, example: str = "4"):
        super().__init__(min, max, example)
        self.expected = f"an integer from {min} to {max} or \"auto\""

    def parse_one(self, text: str, ctx: ParseContext) -> int:
        if text.lower() == "auto":
            return AutoCount()
        return super().parse_one(text, ctx)

    def format_one(self, value: int) -> str:
        return "auto" if isinstance(value, AutoCount) else str(value)


_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class Size(ValueType):
    """Bytes with binary multiples, case-insensitive as in nginx: 512, 64K, 128M, 1G."""

    expected = "a size such as 512, 64K, 128M or 1G"
    example = "128M"

    def __init__(self, min: int = 0, max: int | None = None, example: str = "128M"):
        self.min, self.max, self.example = min, max, example

    def parse_one(self, text: str, ctx: ParseContext) -> int:
        m = _SIZE.fullmatch(text)
        if not m:
            raise BadValue(f"invalid size {_q(text)}: expected {self.expected}")
        n = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
        if n < self.min or (self.max is not None and n > self.max):
            hi = self.format_one(self.max) if self.max is not None else "no limit"
            raise BadValue(f"{text} is out of range: expected {self.format_one(self.min)} to {hi}")
        return n

    def format_one(self, value: int) -> str:
        for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if value and value % mult == 0:
                return f"{value // mult}{unit}"
        return str(value)


_DURATION_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# One blank-separated part: a bare number (seconds), or units from largest to smallest, written
# together as nginx allows (1h30m) or apart (1h 30m).
_DURATION_WORD = re.compile(rf"{_DURATION_NUMBER}|(?:{_DURATION_NUMBER}(?:ms|s|m|h|d|w))+")
_DURATION_PIECE = re.compile(rf"({_DURATION_NUMBER})(ms|s|m|h|d|w)?")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                "w": 604_800_000, None: 1000}
# Beyond this a float of seconds no longer holds every millisecond, and no timeout means it.
MAX_DURATION = 36500 * 86_400


class Duration(ValueType):
    """A time span in seconds (float): 250ms, 10s, 5m, 1h 30m, 2d; a bare number is seconds."""

    arity = JOIN
    expected = "a duration such as 250ms, 10s, 5m, 1h 30m or 2d"
    example = "30s"

    def __init__(self, min: float = 0, max: float | None = None, example: str = "30s"):
        self.min, self.max, self.example = min, max, example

    def parse_one(self, text: str, ctx: ParseContext) -> float:
        parts = text.replace(",", " ").split()
        if not parts:
            raise BadValue(f"expected {self.expected}, got an empty value")
        total_ms = 0  # exact integer arithmetic (and no decimal module in every process)
        for part in parts:
            if not _DURATION_WORD.fullmatch(part):
                raise BadValue(f"invalid duration {_q(text)}: expected {self.expected}")
            for number, unit in _DURATION_PIECE.findall(part):
                whole, _, fraction = number.partition(".")
                scaled = int(whole + fraction) * _DURATION_MS[unit or None]
                ms, rest = divmod(scaled, 10 ** len(fraction))
                if rest:
                    raise BadValue(f"{_q(text)} is finer than a millisecond")
                total_ms += ms
        hi = MAX_DURATION if self.max is None else min(self.max, MAX_DURATION)
        if total_ms < round(self.min * 1000) or total_ms > round(hi * 1000):
            raise BadValue(f"{text} is out of range: expected {self.format_one(self.min)} to "
                           f"{self.format_one(hi)}")
        return int(total_ms) / 1000

    def format_one(self, value: float) -> str:
        ms = round(value * 1000)
        if ms == 0:
            return "0s"
        parts = []
        for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                           ("ms", 1)):
            if ms >= size:
                parts.append(f"{ms // size}{unit}")
                ms %= size
        return " ".join(parts)


_TRUE = {"on", "yes", "true", "1"}
_FALSE = {"off", "no", "false", "0"}


class Boolean(ValueType):
    """on/off, yes/no, true/false, 1/0; a directive written alone is on."""

    arity = FLAG
    expected = "on or off"
    example = "on"

    def parse_one(self, text: str, ctx: ParseContext) -> bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise BadValue(f"invalid boolean {_q(text)}: expected on/off, yes/no or true/false")

    def format_one(self, value: bool) -> str:
        return "on" if value else "off"


class Choice(ValueType):
    """One word out of a fixed set, compared case-insensitively."""

    def __init__(self, *options: str):
        self.options = options
        self.expected = "one of " + ", ".join(options)
        self.example = options[0]

    def parse_one(self, text: str, ctx: ParseContext) -> str:
        low = text.lower()
        for option in self.options:
            if option.lower() == low:
                return option
        raise BadValue(f"invalid value {_q(text)}: expected {self.expected}")


@dataclass(frozen=True)
class Address:
    """Where a listener binds: TCP (host, port) or a unix socket path."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return "unix:" + self.path
        if self.host and ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_PORT = re.compile(r"[0-9]{1,5}")
_NUMERIC_TLD = re.compile(r"(^|\.)[0-9]+$")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


class AddressType(ValueType):
    """127.0.0.1:8080, [::1]:8080, *:80, 8080 (all IPv4 interfaces), unix:/run/pyd.sock."""

    arity = LIST
    expected = "an address such as 127.0.0.1:8080, [::1]:8080, *:80, 8080 or unix:/run/pyd.sock"
    example = "127.0.0.1:8080"

    def parse_one(self, text: str, ctx: ParseContext) -> Address:
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise BadValue("a unix socket address needs a path: unix:/run/pyd.sock")
            if "\0" in path:
                raise BadValue("a path cannot contain a NUL byte")
            full = os.path.normpath(os.path.join(ctx.base_dir, path))
            if len(full.encode()) > 107:
                raise BadValue(f"unix socket path too long ({len(full.encode())} bytes, at most 107)")
            return Address(path=full)
        if _PORT.fullmatch(text):
            return Address("0.0.0.0", self.port(text, text))
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise BadValue(f"invalid address {_q(text)}: an IPv6 address is written [::1]:8080")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise BadValue(f"invalid IPv6 address {_q(host)} in {_q(text)}") from None
            return Address(host, self.port(port, text))
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise BadValue(f"invalid address {_q(text)}: expected {self.expected}")
        if host == "*":
            host = "0.0.0.0"
        elif ":" in host:
            raise BadValue(f"invalid address {_q(text)}: write an IPv6 address in brackets, [::1]:8080")
        elif not _HOSTNAME.fullmatch(host):
            raise BadValue(f"invalid host {_q(host)} in {_q(text)}")
        elif _NUMERIC_TLD.search(host):  # not a name, so it must be a dotted quad
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise BadValue(f"invalid IPv4 address {_q(host)} in {_q(text)}") from None
        return Address(host, self.port(port, text))

    @staticmethod
    def port(text: str, whole: str) -> int:
        if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
            raise BadValue(f"invalid port {_q(text)} in {_q(whole)}: expected 1 to 65535")
        return int(text)


_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\(\))?")


class Ref(ValueType):
    """A Python object named `module.path:attribute`; `module:factory()` calls a factory.

    With `allow_name`, a bare name is accepted too: the name of an `App:` section.
    """

    expected = "a reference such as shop.wsgi:application"
    example = "shop.wsgi:application"

    def __init__(self, allow_name: bool = False):
        self.allow_name = allow_name
        if allow_name:
            self.expected = "a reference such as shop.wsgi:application, or an App: section's name"

    def parse_one(self, text: str, ctx: ParseContext) -> str:
        if _REF.fullmatch(text):
            return text
        if self.allow_name and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", text):
            return text
        raise BadValue(f"invalid reference {_q(text)}: expected module.path:attribute, "
                       "such as shop.wsgi:application")


class Network(ValueType):
    """IP networks in CIDR form (10.0.0.0/8, ::1); a bare address is a /32 or /128."""

    arity = LIST
    expected = "an IP network such as 10.0.0.0/8 or 127.0.0.1"
    example = "10.0.0.0/8"

    def parse_one(self, text: str, ctx: ParseContext):
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise BadValue(f"invalid network {_q(text)}: expected {self.expected}") from None


class ListOf(ValueType):
    """One or more values of another single-word type."""

    arity = LIST

    def __init__(self, item: ValueType):
        self.item = item
        self.expected = "one or more of: " + item.expected
        self.example = item.example

    def parse_one(self, text: str, ctx: ParseContext) -> Any:
        return self.item.parse_one(text, ctx)

    def format_one(self, value: Any) -> str:
        return self.item.format_one(value)


class FileMode(ValueType):
    """A permission mode in octal: 0660."""

    expected = "an octal file mode such as 0660"
    example = "0660"

    def parse_one(self, text: str, ctx: ParseContext) -> int:
        if not re.fullmatch(r"0?[0-7]{3,4}", text):
            raise BadValue(f"invalid file mode {_q(text)}: expected {self.expected}")
        return int(text, 8)

    def format_one(self, value: int) -> str:
        return f"0{value:03o}"


class Words(ValueType):
    """Free words kept as given (the values of a block's free-form entries)."""

    arity = JOIN
    expected = "a value"

    def parse(self, words: list[str], ctx: ParseContext) -> Any:
        if not words:
            raise BadValue("expected a value")
        return " ".join(words)

    def parse_one(self, text: str, ctx: ParseContext) -> str:
        return text

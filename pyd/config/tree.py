"""The tree both config languages parse into: positioned words and nodes, and ${VAR}
substitution.

Shared by language.py (the nginx-like grammar) and loader.py (YAML, files, `include`), so
neither needs the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pyd.config.errors import ConfigError, Position

RAW_TAG = "!raw"  # YAML: a string taken as written, no ${VARS} (as '...' in the language)
MAX_DEPTH = 16  # blocks inside blocks


@dataclass(eq=False)
class Word:
    """One value as written: its text after quotes, escapes and ${VARS}, and where it stands."""

    text: str
    pos: Position
    quoted: bool = False
    from_env: bool = False  # the text came (partly) from an environment variable


@dataclass(eq=False)
class Node:
    """A directive (`children is None`) or a block/section with its children."""

    name: str
    pos: Position
    args: list[Word]
    children: list[Node] | None = None
    depth: int = field(default=0, repr=False)

    @property
    def key(self) -> str:
        """The name as the registry knows it: case-insensitive, `_` the same as `-`."""
        return normalize_name(self.name)

    @property
    def is_block(self) -> bool:
        return self.children is not None


def normalize_name(name: str) -> str:
    return name.lower().replace("_", "-")


# -- substitution ------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}\n]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "$": "$", "'": "'"}


def substitute(raw: str, start: int, end: int, escapes: bool, env: Mapping[str, str],
               at: Callable[[int, int], Position]) -> tuple[str, bool]:
    """Process escapes (double quotes only) and ${VAR} in one pass over raw[start:end].

    Returns the text and whether a variable was used; `at(offset, length)` positions errors.
    """
    if "\\" not in raw and "${" not in raw:
        return raw[start:end], False
    out: list[str] = []
    i = start
    from_env = False
    while i < end:
        c = raw[i]
        if escapes and c == "\\":
            nxt = raw[i + 1] if i + 1 < end else ""
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", raw[i + 2:i + 4]):
                out.append(chr(int(raw[i + 2:i + 4], 16)))
                i += 4
                continue
            shown = "\\x" + raw[i + 2:i + 4] if nxt == "x" else "\\" + nxt
            raise ConfigError(f"unknown escape sequence {shown} in a string "
                              r'(known: \" \\ \n \t \r \$ \xHH)', at(i, 2))
        if c == "$" and raw.startswith("${", i):
            m = _VAR.match(raw, i)
            if not m or m.end() > end:
                raise ConfigError("unterminated ${...}: write ${NAME} or ${NAME:-default}",
                                  at(i, 2))
            out.append(_lookup(m.group(1), env, at(i, m.end() - i)))
            from_env = True
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out), from_env


def _lookup(spec: str, env: Mapping[str, str], pos: Position) -> str:
    name, sep, default = spec.partition(":-")
    if not _VAR_NAME.fullmatch(name):
        raise ConfigError(f"invalid variable name {name!r} in ${{{spec}}}: "
                          "write ${NAME} or ${NAME:-default}", pos)
    value = env.get(name)
    if value is None or (sep and value == ""):
        if sep:
            return default
        raise ConfigError(f"environment variable {name} is not set "
                          f"(give a default with ${{{name}:-value}})", pos)
    return value

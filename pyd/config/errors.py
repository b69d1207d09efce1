"""Positions in config sources and the one error type config loading raises.

Every problem names file:line:col, shows the line and a caret, and the include chain that led
there, in the style of a compiler.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Source:
    """One text a config came from: a file, the command line or the environment."""

    name: str  # as shown in messages: a path, "command line", "environment"
    text: str = field(repr=False)
    included_from: Position | None = field(default=None, repr=False)
    is_file: bool = True
    _lines: list[str] | None = field(default=None, repr=False)

    def line(self, number: int) -> str:
        if self._lines is None:
            self._lines = self.text.split("\n")
        if 1 <= number <= len(self._lines):
            return self._lines[number - 1].rstrip("\r")
        return ""


@dataclass(frozen=True, eq=False, repr=False)
class Position:
    """A place in a source, 1-based; `length` is how many characters the caret underlines."""

    source: Source
    line: int
    column: int
    length: int = 1

    def __str__(self) -> str:
        if not self.source.is_file:
            return self.source.name
        return f"{self.source.name}:{self.line}:{self.column}"

    __repr__ = __str__

    @property
    def short(self) -> str:
        """file:line, for tables."""
        if not self.source.is_file:
            return self.source.name
        return f"{self.source.name}:{self.line}"

    def excerpt(self) -> str:
        """The line and a caret under the position, indented by four spaces."""
        text = self.source.line(self.line)
        if not text and self.line > 1 and not self.source.text:
            return ""
        prefix = "".join("\t" if c == "\t" else " " for c in text[: self.column - 1])
        visible = text.replace("\r", "")
        width = max(1, min(self.length, max(1, len(visible) - self.column + 1)))
        return f"    {visible}\n    {prefix}^{'~' * (width - 1)}"

    def chain(self) -> list[Position]:
        """The include directives that led to this source, innermost first."""
        out = []
        pos = self.source.included_from
        while pos is not None:
            out.append(pos)
            pos = pos.source.included_from
        return out


@dataclass
class Problem:
    message: str
    pos: Position | None = None
    severity: str = "error"

    def format(self) -> str:
        where = f"{self.pos}: " if self.pos else ""
        lines = [f"{where}{self.severity}: {self.message}"]
        if self.pos is not None:
            excerpt = self.pos.excerpt()
            if excerpt:
                lines.append(excerpt)
            for inc in self.pos.chain():
                lines.append(f"  included from {inc}")
        return "\n".join(lines)


class ConfigError(Exception):
    """The config is not valid; carries every problem found, each with its position."""

    def __init__(self, problems: list[Problem] | str, pos: Position | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, pos)]
        self.problems = problems
        super().__init__(self.format())

    def __reduce__(self):
        return (ConfigError, (self.problems,))  # positions survive a pickle (load_apart)

    def format(self) -> str:
        return "\n".join(p.format() for p in self.problems)

    @property
    def first(self) -> Problem:
        return self.problems[0]

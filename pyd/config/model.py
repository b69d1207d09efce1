"""The validated, immutable configuration: typed settings, sections and where each value came from.

Everything after loading reads a Config; nothing writes to it. Two configs are equal when their
canonical text is (`canonical()`), whatever file, format or position they came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyd.config.errors import Position
from pyd.config.printer import print_conf
from pyd.config.registry import REGISTRY, Block, SectionKind


class Origin:
    """Where a value came from: a file position, the command line, the environment, the default."""

    __slots__ = ("kind", "pos", "label")

    def __init__(self, kind: str, pos: Position | None = None, label: str = ""):
        self.kind, self.pos, self.label = kind, pos, label

    def __str__(self) -> str:
        if self.kind == "file" and self.pos is not None:
            return self.pos.short
        return self.label or self.kind


DEFAULT = Origin("default")


class Settings:
    """The typed values of one scope, read as attributes (`max_requests`) or items."""

    __slots__ = ("_scope", "_values", "_origins")

    def __init__(self, scope: str, values: dict[str, Any], origins: dict[str, Origin]):
        object.__setattr__(self, "_scope", scope)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_origins", origins)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # not a directive; and copy/pickle probe before slots are set
            raise AttributeError(attr)
        try:
            return self._values[attr.replace("_", "-")]
        except KeyError:
            raise AttributeError(f"no directive {attr.replace('_', '-')!r} in {self._scope}") from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError("the configuration is read-only")

    def __reduce__(self) -> tuple:
        return Settings, (self._scope, self._values, self._origins)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def origin(self, name: str) -> Origin:
        return self._origins.get(name, DEFAULT)

    def is_set(self, name: str) -> bool:
        return name in self._origins

    def names(self) -> Iterator[str]:
        """Every directive of this scope, in declaration order."""
        return iter(self._values)

    def explicit(self) -> Iterator[tuple[str, Any]]:
        """The values that were written somewhere, in declaration order."""
        for name, value in self._values.items():
            if name in self._origins:
                yield name, value

    def __repr__(self) -> str:
        return f"Settings({self._scope}, {dict(self.explicit())!r})"


@dataclass(frozen=True, eq=False)
class Extra:
    """A directive a user's class declares (App:, user Pool:), kept as written until it loads."""

    name: str
    words: tuple[str, ...]
    pos: Position


@dataclass(frozen=True, eq=False)
class Section:
    """A top-level section (Pool:HTTPServer:admin, App:shop) or a block inside one (location /x/)."""

    spec: SectionKind | Block
    name: str | None  # the instance name (Pool:HTTPServer:admin), a Cron job's name, ...
    arg: Any  # a block's argument (location's prefix); None for sections
    settings: Settings
    children: tuple[Section, ...]
    extra: tuple[Extra, ...]
    pos: Position

    @property
    def kind(self) -> str:
        return self.spec.kind if isinstance(self.spec, SectionKind) else self.spec.name

    @property
    def cls(self) -> str | None:
        return self.spec.cls if isinstance(self.spec, SectionKind) else None

    @property
    def header(self) -> str:
        """As it would be written: Pool:HTTPServer:admin, App:shop, location /static/."""
        if isinstance(self.spec, Block):
            return self.spec.name + ("" if self.arg is None else f" {self.arg}")
        parts = [self.spec.kind] + [p for p in (self.spec.cls, self.name) if p]
        return ":".join(parts)

    @property
    def label(self) -> str:
        """The short name a pool or app goes by in titles and logs: HTTPServer, admin, shop."""
        return self.name or self.cls or self.kind

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.settings, attr)

    def blocks(self, name: str) -> list[Section]:
        return [c for c in self.children if c.kind == name]

    def extras(self) -> dict[str, tuple[str, ...]]:
        return {e.name: e.words for e in self.extra}


@dataclass(frozen=True, eq=False)
class Config:
    """The whole validated configuration of one pyd."""

    path: str
    settings: Settings
    sections: tuple[Section, ...]
    sources: tuple[str, ...] = field(default=())  # every file read, the main one first

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.settings, attr)

    def of_kind(self, kind: str) -> list[Section]:
        return [s for s in self.sections if s.kind == kind]

    @property
    def pools(self) -> list[Section]:
        return self.of_kind("Pool")

    @property
    def apps(self) -> list[Section]:
        return self.of_kind("App")

    def section(self, header: str) -> Section | None:
        for s in self.sections:
            if s.header.lower() == header.lower():
                return s
        return None

    def canonical(self) -> str:
        return print_conf(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.canonical() == other.canonical()

    def __hash__(self) -> int:
        return hash(self.canonical())


def declared(scope: str) -> list[str]:
    """The directives of a scope in declaration order."""
    return list(REGISTRY.directives_in(scope))

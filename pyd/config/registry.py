"""The machinery of the directive registry: what a directive, a block and a section kind are.

The declarations themselves live in directives/, one module per owner; every later part of pyd adds its own
directives there, and the parser, validation, configtest, --name=value and docs/config.md follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyd.config.values import ValueType

MAIN = "main"  # the top level of the file


@dataclass(frozen=True)
class Directive:
    """One directive, declared once: `name value ...;` inside the given scopes."""

    name: str
    type: ValueType
    default: Any
    scopes: tuple[str, ...]
    help: str
    reload: bool = True  # `pyd update` applies a change; False: it needs `pyd restart`
    multiple: bool = False  # may be repeated; the values accumulate in order
    required: bool = False
    example: str | None = None  # the value part of an example line: "4" for "workers 4;"

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    def example_line(self) -> str:
        value = self.example if self.example is not None else self.type.example
        return f"{self.name} {value};" if value else f"{self.name};"


@dataclass(frozen=True)
class Block:
    """A block inside a scope, with an optional argument: `location /static/ { ... }`."""

    name: str
    scopes: tuple[str, ...]
    inner: str  # the scope of its body
    help: str
    arg: ValueType | None = None
    free_form: bool = False  # body entries are `NAME value;` kept as written (env { ... })
    multiple: bool = True
    example: str = ""


@dataclass(frozen=True)
class SectionKind:
    """A top-level section: `Kind:Class[:instance] { ... }` or `Kind:name { ... }`.

    With `cls` set (Pool:HTTPServer) the header's second part names the class and a third part,
    optional, names the instance. Without it (Cron:cleanup) the second part is the name.
    """

    kind: str
    cls: str | None
    scope: str
    help: str
    extra: bool = False  # accepts directives it does not know (settings of a user's class)
    example: str = ""
    check: Callable | None = field(default=None, compare=False)
    impl: str = ""  # a built-in pool type's class, `module:attr`, imported only in a worker
    served_by: str = "worker"  # "master": the master serves it itself (Pool:Metrics)

    @property
    def title(self) -> str:
        return f"{self.kind}:{self.cls}" if self.cls else f"{self.kind}:name"


class Registry:
    def __init__(self) -> None:
        self.directives: dict[str, dict[str, Directive]] = {}  # scope -> name -> directive
        self.blocks: dict[str, dict[str, Block]] = {}
        self.sections: list[SectionKind] = []
        self.order: list[Directive | Block | SectionKind] = []
        self.checks: dict[str, list[Callable]] = {}

    # -- declaring ------------------------------------------------------------------------------

    def directive(self, name: str, type: ValueType, default: Any = None, *,
                  scopes: tuple[str, ...] | str = MAIN, help: str, **kw: Any) -> Directive:
        if isinstance(scopes, str):
            scopes = (scopes,)
        d = Directive(name, type, default, scopes, help, **kw)
        for scope in scopes:
            table = self.directives.setdefault(scope, {})
            if name in table or name in self.blocks.get(scope, {}):
                raise ValueError(f"directive {name} declared twice in {scope}")
            table[name] = d
        self.order.append(d)
        return d

    def block(self, name: str, *, scopes: tuple[str, ...] | str, inner: str, help: str,
              **kw: Any) -> Block:
        if isinstance(scopes, str):
            scopes = (scopes,)
        b = Block(name, scopes, inner, help, **kw)
        for scope in scopes:
            table = self.blocks.setdefault(scope, {})
            if name in table or name in self.directives.get(scope, {}):
                raise ValueError(f"block {name} declared twice in {scope}")
            table[name] = b
        self.order.append(b)
        return b

    def section(self, kind: str, cls: str | None = None, *, scope: str, help: str,
                **kw: Any) -> SectionKind:
        s = SectionKind(kind, cls, scope, help, **kw)
        self.sections.append(s)
        self.order.append(s)
        return s

    def check(self, scope: str) -> Callable[[Callable], Callable]:
        """Declare a cross-directive check for a scope: fn(settings, positions) -> [problems]."""

        def register(fn: Callable) -> Callable:
            self.checks.setdefault(scope, []).append(fn)
            return fn

        return register

    # -- looking up -----------------------------------------------------------------------------

    def directives_in(self, scope: str) -> dict[str, Directive]:
        return self.directives.get(scope, {})

    def blocks_in(self, scope: str) -> dict[str, Block]:
        return self.blocks.get(scope, {})

    def kinds(self) -> list[str]:
        seen: list[str] = []
        for s in self.sections:
            if s.kind not in seen:
                seen.append(s.kind)
        return seen

    def find_section(self, kind: str, second: str) -> SectionKind | None:
        """The section kind for `kind:second`; classes match case-insensitively."""
        generic = None
        for s in self.sections:
            if s.kind.lower() != kind.lower():
                continue
            if s.cls is None:
                generic = s
            elif s.cls.lower() == second.lower():
                return s
        return generic

    def scopes_of(self, name: str) -> list[str]:
        """Every scope where a directive or block of this name may appear."""
        out = [scope for scope, table in self.directives.items() if name in table]
        out += [scope for scope, table in self.blocks.items() if name in table and scope not in out]
        return out

    def all_names(self) -> set[str]:
        names = {n for table in self.directives.values() for n in table}
        names |= {n for table in self.blocks.values() for n in table}
        return names


REGISTRY = Registry()

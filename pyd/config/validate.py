"""Nodes to a typed Config, checked against the directive registry.

Collects every problem it can find in one pass (each with its position and, where it can guess,
a suggestion) and raises them together as one ConfigError.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyd.config import directives as _declarations  # noqa: F401  (fills the registry)
from pyd.config.errors import ConfigError, Position, Problem, Source
from pyd.config.loader import YAML_SUFFIXES, Node, Word, normalize_name
from pyd.config.model import Config, Extra, Origin, Section, Settings
from pyd.config.registry import MAIN, REGISTRY, Block, Directive
from pyd.config.values import LIST, BadValue, ParseContext

MAX_PROBLEMS = 20
_NAME = re.compile(_declarations.NAME)
_SPLIT = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class Override:
    """A top-level directive given outside the file: `--name=value` or PYD_NAME=value."""

    name: str
    value: str | None  # None: a bare flag (`--verbose-tty`)
    origin: str  # "command line" or "environment"
    label: str  # as the user wrote it: --workers=4, PYD_WORKERS


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Validator:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.sections_seen: dict[str, Position] = {}
        self.app_refs: list[tuple[str, Position]] = []

    def problem(self, pos: Position | None, message: str) -> None:
        self.problems.append(Problem(message, pos))
        if len(self.problems) >= MAX_PROBLEMS:
            raise ConfigError(self.problems + [Problem("too many errors, stopping here")])

    # -- scopes ---------------------------------------------------------------------------------

    def scope(self, nodes: list[Node], scope: str, *, owner: str, header: Position | None,
              extra_ok: bool) -> tuple[Settings, list[Section], list[Extra]]:
        """Validate the body of one scope: its directives, blocks and (at the top) sections."""
        directives = REGISTRY.directives_in(scope)
        blocks = REGISTRY.blocks_in(scope)
        values: dict = {}
        origins: dict = {}
        attempted: set[str] = set()  # written, valid or not: not "missing" when required
        blocks_seen: dict[tuple[str, str], Position] = {}
        children: list[Section] = []
        extra: list[Extra] = []
        extra_seen: dict[str, Position] = {}
        for node in nodes:
            key = node.key
            if node.is_block:
                if ":" in node.name:
                    if scope != MAIN:
                        self.problem(node.pos, f"section {node.name} belongs at the top level, "
                                               f"not inside {owner}")
                    else:
                        section = self.section(node)
                        if section is not None:
                            children.append(section)
                    continue
                spec = blocks.get(key)
                if spec is not None:
                    block = self.block(node, spec)
                    if block is not None:
                        ident = (spec.name, block.header)
                        if ident in blocks_seen and (spec.arg is not None or not spec.multiple):
                            self.problem(node.pos, f"duplicate {block.header} "
                                                   f"(first at {blocks_seen[ident].short})")
                            continue
                        blocks_seen.setdefault(ident, node.pos)
                        children.append(block)
                    continue
                if self.missing_semicolon(node, scope, failed=True):
                    continue
                if key in directives:
                    self.problem(node.pos, f"{quote(key)} is a directive, not a block: write "
                                           f"{directives[key].example_line()}")
                else:
                    self.unknown(node, scope, owner, "block")
                continue

            spec_d = directives.get(key)
            if spec_d is None:
                if key in blocks:
                    self.problem(node.pos, f"{quote(key)} needs a block: {blocks[key].example}")
                elif ":" in node.name and node.name.split(":")[0].lower() in _kinds():
                    self.problem(node.pos, f"section {node.name} needs a body: "
                                           f"{node.name} {{ ... }}")
                elif extra_ok:
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", node.name):
                        self.problem(node.pos, f"invalid setting name {quote(node.name)}")
                    elif key in extra_seen:
                        self.problem(node.pos, f"duplicate setting {quote(key)} "
                                               f"(first set at {extra_seen[key].short})")
                    else:
                        extra_seen[key] = node.pos
                        extra.append(Extra(key, tuple(w.text for w in node.args), node.pos))
                else:
                    self.unknown(node, scope, owner, "directive")
                continue
            if key in origins and not spec_d.multiple:
                self.problem(node.pos, f"duplicate directive {quote(key)} "
                                       f"(first set at {origins[key].pos.short})")
                continue
            attempted.add(key)
            try:
                value = self.value(spec_d, node.args, node.pos)
            except _Invalid as bad:
                if not self.missing_semicolon(node, scope, failed=True):
                    self.problem(bad.pos, bad.message)
                continue
            if self.missing_semicolon(node, scope, failed=False):
                continue
            if spec_d.multiple:
                value = value if spec_d.type.arity == LIST else (value,)
                values[key] = values.get(key, ()) + value
            else:
                values[key] = value
            origins[key] = Origin("file", node.pos)

        settings = self.settings(scope, values, origins, owner, header, attempted)
        return settings, children, extra

    def settings(self, scope: str, values: dict, origins: dict, owner: str,
                 header: Position | None, attempted: set[str]) -> Settings:
        directives = REGISTRY.directives_in(scope)
        full = {}
        for name, spec in directives.items():
            if name in values:
                full[name] = values[name]
            else:
                if spec.required and scope != MAIN and name not in attempted:
                    self.problem(header, f"{owner} needs {quote(name)}, as in: "
                                         f"{spec.example_line()}")
                full[name] = spec.default
        settings = Settings(scope, full, origins)
        if scope != MAIN:  # the top level is checked once, after the overrides (build())
            self.run_checks(scope, settings, header)
        return settings

    def run_checks(self, scope: str, settings: Settings, header: Position | None) -> None:
        def at(name: str | None) -> Position | None:
            if name is None or not settings.is_set(name):
                return header
            return settings.origin(name).pos or header

        for check in REGISTRY.checks.get(scope, []):
            for pos, message in check(settings.get, at):
                self.problem(pos, message)

    # -- values ---------------------------------------------------------------------------------

    def value(self, spec: Directive, words: list[Word], pos: Position):
        """The typed value of a directive's words; raises _Invalid at the offending word."""
        texts, where = [], []
        for w in words:
            if spec.type.arity == LIST and not w.quoted and _SPLIT.search(w.text):
                parts = [p for p in _SPLIT.split(w.text) if p]
                texts += parts
                where += [w] * len(parts)
            else:
                texts.append(w.text)
                where.append(w)
        try:
            return spec.type.parse(texts, ParseContext(_base_dir(pos)))
        except BadValue as e:
            if e.index is not None and e.index < len(where):
                at = where[e.index].pos
            elif where:
                at = _span(where[0].pos, where[-1].pos)
            else:
                at = pos
            raise _Invalid(f"{quote(spec.name)}: {e.message} (example: {spec.example_line()})",
                           at) from None

    # -- sections and blocks --------------------------------------------------------------------

    def section(self, node: Node) -> Section | None:
        parts = node.name.split(":")
        kind = _kinds().get(parts[0].lower())
        if kind is None:
            known = ", ".join(REGISTRY.kinds())
            hint = _suggest(parts[0], REGISTRY.kinds())
            self.problem(node.pos, f"unknown section kind {quote(parts[0])}"
                                   + (f" (did you mean {quote(hint)}?)" if hint else "")
                                   + f"; known kinds: {known}")
            return None
        if len(parts) < 2 or not all(parts[1:]):
            self.problem(node.pos, f"a section header is Kind:Name, as in {kind}:"
                                   f"{_example_name(kind)}")
            return None
        spec = REGISTRY.find_section(kind, parts[1])
        if spec is None:  # pragma: no cover - every kind has a generic or class form
            self.problem(node.pos, f"unknown section {node.name}")
            return None
        if spec.cls is not None:
            if len(parts) > 3:
                self.problem(node.pos, f"a section header is {spec.title}[:instance]")
                return None
            name = parts[2] if len(parts) == 3 else None
        else:
            if len(parts) > 2:
                self.problem(node.pos, f"a {kind} section header is {kind}:name")
                return None
            name = parts[1]
        if name is not None and not _NAME.fullmatch(name):
            self.problem(node.pos, f"invalid section name {quote(name)}: use letters, digits, "
                                   "'_', '-' and '.'")
            return None
        if node.args:
            self.problem(node.args[0].pos, f"a section header takes no arguments: {node.name} {{")
            return None
        header = ":".join([spec.kind] + [p for p in (spec.cls, name) if p])
        seen = self.sections_seen.get(header.lower())
        if seen is not None:
            self.problem(node.pos, f"duplicate section {header} (first at {seen.short})")
            return None
        self.sections_seen[header.lower()] = node.pos
        if spec.kind == "Pool" and spec.cls is None and not _has(node, "class"):
            classes = [s.cls for s in REGISTRY.sections if s.kind == "Pool" and s.cls]
            hint = _suggest(parts[1], classes)
            self.problem(node.pos, f"unknown pool class {quote(parts[1])}"
                                   + (f" (did you mean {quote(hint)}?)" if hint else "")
                                   + f"; known: {', '.join(classes)}; a pool of your own needs "
                                     "class module:Class")
            return None
        settings, children, extra = self.scope(node.children, spec.scope, owner=header,
                                               header=node.pos, extra_ok=spec.extra)
        self.collect_app_refs(settings, children)
        return Section(spec, name, None, settings, tuple(children), tuple(extra), node.pos)

    def block(self, node: Node, spec: Block) -> Section | None:
        arg = None
        if spec.arg is not None:
            if len(node.args) != 1:
                self.problem(node.pos, f"{quote(spec.name)} takes one argument: {spec.example}")
                return None
            try:
                arg = spec.arg.parse([node.args[0].text], ParseContext(_base_dir(node.pos)))
            except BadValue as e:
                self.problem(node.args[0].pos, f"{quote(spec.name)}: {e.message} "
                                               f"(example: {spec.example})")
                return None
        elif node.args:
            self.problem(node.args[0].pos, f"{quote(spec.name)} takes no argument: {spec.example}")
            return None
        owner = spec.name + (f" {arg}" if arg is not None else "")
        if spec.free_form:
            extra = []
            for child in node.children:
                if child.is_block:
                    self.problem(child.pos, f"{spec.name} {{ ... }} holds NAME value; entries, "
                                            "not blocks")
                elif not child.args:
                    self.problem(child.pos, f"{quote(child.name)} needs a value")
                else:
                    extra.append(Extra(child.name, tuple(w.text for w in child.args), child.pos))
            return Section(spec, None, arg, Settings(spec.inner, {}, {}), (), tuple(extra),
                           node.pos)
        settings, children, extra = self.scope(node.children, spec.inner, owner=owner,
                                               header=node.pos, extra_ok=False)
        return Section(spec, None, arg, settings, tuple(children), tuple(extra), node.pos)

    def collect_app_refs(self, settings: Settings, children: Iterable[Section]) -> None:
        if "app" in settings and settings.is_set("app") and ":" not in settings["app"]:
            self.app_refs.append((settings["app"], settings.origin("app").pos))
        for child in children:
            self.collect_app_refs(child.settings, child.children)

    # -- diagnosis ------------------------------------------------------------------------------

    def unknown(self, node: Node, scope: str, owner: str, what: str) -> None:
        key = node.key
        elsewhere = [s for s in REGISTRY.scopes_of(key) if s != scope]
        if elsewhere:
            where = ", ".join("the top level" if s == MAIN else s for s in elsewhere)
            here = "at the top level" if scope == MAIN else f"in {owner}"
            self.problem(node.pos, f"{quote(key)} is not allowed {here}; it belongs in {where}")
            return
        kind = _kinds().get(key)
        if kind is not None and what == "block":
            self.problem(node.pos, f"a section header is Kind:Name, as in {kind}:"
                                   f"{_example_name(kind)}")
            return
        candidates = list(REGISTRY.directives_in(scope)) + list(REGISTRY.blocks_in(scope))
        hint = _suggest(key, candidates) or _suggest(key, sorted(REGISTRY.all_names()))
        self.problem(node.pos, f"unknown {what} {quote(node.name)}"
                               + (f" (did you mean {quote(hint)}?)" if hint else ""))

    def missing_semicolon(self, node: Node, scope: str, failed: bool) -> bool:
        """A statement that runs on into the next line is most often a forgotten ';'."""
        if node.pos.source.name.endswith(YAML_SUFFIXES) or not node.pos.source.is_file:
            return False
        names = set(REGISTRY.directives_in(scope)) | set(REGISTRY.blocks_in(scope))
        kinds = _kinds()
        prev_line, prev_end = node.pos.line, node.pos.column + node.pos.length
        for i, word in enumerate(node.args):
            if word.pos.line > prev_line:
                rest = node.pos.source.line(prev_line)[prev_end - 1:].lstrip()
                # A word back at the statement's indentation starts a new statement when a
                # block or more words follow it; alone, it is more likely a value put below.
                starts = node.is_block or any(w.pos.line == word.pos.line
                                              for w in node.args[i + 1:])
                statement = not word.quoted and (
                    normalize_name(word.text) in names
                    or word.text.split(":")[0].lower() in kinds and ":" in word.text
                    or failed and starts and word.pos.column <= node.pos.column)
                if statement and not rest.startswith(","):
                    self.problem(Position(node.pos.source, prev_line, prev_end),
                                 f"missing ';' after {quote(node.name)}")
                    return True
            prev_line, prev_end = word.pos.line, word.pos.column + word.pos.length
        return False


def _span(first: Position, last: Position) -> Position:
    """From the start of `first` to the end of `last` when on one line, else just `first`."""
    if first.source is not last.source or first.line != last.line:
        return first
    return Position(first.source, first.line, first.column,
                    last.column + last.length - first.column)


class _Invalid(Exception):
    def __init__(self, message: str, pos: Position):
        self.message, self.pos = message, pos


def _kinds() -> dict[str, str]:
    return {k.lower(): k for k in REGISTRY.kinds()}


def _has(node: Node, key: str) -> bool:
    return any(c.key == key for c in node.children or [])


def _example_name(kind: str) -> str:
    for s in REGISTRY.sections:
        if s.kind == kind:
            return s.cls or "name"
    return "name"


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    low = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(normalize_name(word), list(low), n=1, cutoff=0.7)
    return low[found[0]] if found else None


def _base_dir(pos: Position) -> str:
    src = pos.source
    while not src.is_file and src.included_from is not None:
        src = src.included_from.source
    if src.is_file:
        return os.path.dirname(os.path.abspath(src.name))
    return os.getcwd()


# -- the entry point -----------------------------------------------------------------------------

def build(nodes: list[Node], path: str, overrides: Iterable[Override] = (),
          sources: tuple[str, ...] = ()) -> Config:
    """Validate parsed nodes (includes expanded) into a Config, applying overrides on top."""
    v = _Validator()
    try:
        settings, sections, _ = v.scope(nodes, MAIN, owner="the top level", header=None,
                                        extra_ok=False)
        settings = _apply_overrides(v, settings, overrides)
        names = {s.name for s in sections if s.kind == "App"}
        for ref, pos in v.app_refs:
            if ref not in names:
                hint = _suggest(ref, names)
                v.problem(pos, f"app {quote(ref)} is neither module:attribute nor an App: section"
                               + (f" (did you mean {quote(hint)}?)" if hint else ""))
        logs = {s.header for s in sections if s.kind == "Log"}
        for s in sections:
            target = s.settings.get("access-log-target")
            if target is not None and target not in logs:
                hint = _suggest(target, logs)
                v.problem(s.settings.origin("access-log-target").pos,
                          f"access-log-target {quote(target)}: there is no such Log section"
                          + (f" (did you mean {quote(hint)}?)" if hint else ""))
    except ConfigError as e:
        raise ConfigError(e.problems) from None
    if v.problems:
        raise ConfigError(v.problems)
    return Config(path, settings, tuple(sections), sources)


def _apply_overrides(v: _Validator, settings: Settings, overrides: Iterable[Override]) -> Settings:
    directives = REGISTRY.directives_in(MAIN)
    values = {name: settings[name] for name in settings.names()}
    origins = {name: settings.origin(name) for name, _ in settings.explicit()}
    for o in overrides:
        key = normalize_name(o.name)
        text = o.label if o.value is None else f"{o.label}={o.value}"
        source = Source(o.origin, text, is_file=False)
        spec = directives.get(key)
        if spec is None:
            where = Position(source, 1, 1, len(o.label))
            if key in REGISTRY.all_names():
                v.problem(where, f"{quote(key)} is not a top-level directive: {o.label} sets "
                                 "top-level directives only")
                continue
            hint = _suggest(key, directives)
            v.problem(where, f"unknown directive {quote(o.name)} in {o.label}"
                             + (f" (did you mean {quote(hint)}?)" if hint else ""))
            continue
        words = [] if o.value is None else [o.value]
        texts = [p for p in _SPLIT.split(o.value) if p] if (
            o.value is not None and spec.type.arity == LIST) else words
        try:
            values[key] = spec.type.parse(texts, ParseContext(os.getcwd()))
        except BadValue as e:
            v.problem(Position(source, 1, len(o.label) + 2, max(1, len(o.value or ""))),
                      f"{quote(key)}: {e.message} (example: {o.label.split('=')[0]}="
                      f"{spec.example if spec.example is not None else spec.type.example})")
            continue
        label = o.origin if o.origin == "command line" else f"environment ({o.label})"
        origins[key] = Origin(o.origin, Position(source, 1, 1, len(text)), label)
    result = Settings(MAIN, values, origins)
    v.run_checks(MAIN, result, None)
    return result


def environment_overrides(env: Mapping[str, str]) -> list[Override]:
    """PYD_<DIRECTIVE>=value for top-level directives (PYD_CONFIG names the file itself)."""
    out = []
    for var, value in sorted(env.items()):
        if not var.startswith("PYD_") or var == "PYD_CONFIG" or var.startswith("PYD__"):
            continue
        out.append(Override(var[4:].lower().replace("_", "-"), value, "environment", var))
    return out


"""Print a Config back as the language or as YAML, normalized.

Only values that were written are printed, in declaration order, with includes expanded,
variables substituted and paths absolute; parsing the output gives the same Config.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pyd.config.registry import REGISTRY
from pyd.config.tree import RAW_TAG
from pyd.config.values import LIST, Duration

if TYPE_CHECKING:  # the model prints itself through this module; these are only its types
    from pyd.config.model import Config, Section, Settings

_BARE = re.compile(r"[^\s;{}#\"',$\\][^\s;{}\"',$\\]*")
_SPLITS = re.compile(r"[,\s]")


class _Quoted(str):
    """A YAML scalar that must stay quoted to be read back as one value."""


def render(text: str) -> str:
    """A word as the language reads it back: bare when safe, else quoted.

    Raw quotes when they can hold the text on one line; else double quotes with escapes, so a
    canonical config keeps one statement per line.
    """
    if _BARE.fullmatch(text):
        return text
    if "'" not in text and text.isprintable():
        return f"'{text}'"
    out = []
    for c in text:
        if c in '"\\$':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _directive_words(scope: str, name: str, value: Any) -> list[list[str]]:
    """The word lists of one directive's lines (a repeated directive may take several)."""
    spec = REGISTRY.directives_in(scope)[name]
    if spec.multiple and spec.type.arity != LIST:
        return [spec.type.format(v) for v in value]
    words = spec.type.format(value)
    if isinstance(spec.type, Duration):
        words = [w for word in words for w in word.split(" ")]
    return [words]


def _is_flag_on(scope: str, name: str, value: Any) -> bool:
    return REGISTRY.directives_in(scope)[name].type.arity == "flag" and value is True


def print_conf(config: Config) -> str:
    lines: list[str] = []
    _settings_conf(config.settings, "main", lines, "")
    for section in config.sections:
        if lines:
            lines.append("")
        _section_conf(section, lines, "")
    return "\n".join(lines) + "\n"


def _settings_conf(settings: Settings, scope: str, lines: list[str], indent: str) -> None:
    for name, value in settings.explicit():
        if _is_flag_on(scope, name, value):
            lines.append(f"{indent}{name};")
            continue
        for words in _directive_words(scope, name, value):
            sep = ", " if len(words) > 1 and not isinstance(
                REGISTRY.directives_in(scope)[name].type, Duration) else " "
            lines.append(f"{indent}{name} {sep.join(render(w) for w in words)};")


def _section_conf(section: Section, lines: list[str], indent: str) -> None:
    header = section.header if section.arg is None else (
        f"{section.spec.name} {render(section.spec.arg.format_one(section.arg))}")
    lines.append(f"{indent}{header} {{")
    inner = indent + "    "
    _settings_conf(section.settings, _scope_of(section), lines, inner)
    for extra in section.extra:
        words = " ".join(render(w) for w in extra.words)
        lines.append(f"{inner}{extra.name}{' ' + words if words else ''};")
    for child in section.children:
        _section_conf(child, lines, inner)
    lines.append(f"{indent}}}")


def _scope_of(section: Section) -> str:
    spec = section.spec
    return getattr(spec, "scope", None) or spec.inner


# -- YAML ----------------------------------------------------------------------------------------

def to_data(config: Config) -> dict:
    """The config as plain nested dicts of strings, the shape of the YAML twin."""
    data = _settings_data(config.settings, "main")
    for section in config.sections:
        data[section.header] = _section_data(section)
    return data


def _settings_data(settings: Settings, scope: str) -> dict:
    out: dict = {}
    for name, value in settings.explicit():
        if _is_flag_on(scope, name, value):
            out[name] = None
            continue
        lines = _directive_words(scope, name, value)
        spec = REGISTRY.directives_in(scope)[name]
        if isinstance(spec.type, Duration):
            out[name] = " ".join(lines[0])
            continue
        words = [w for line in lines for w in line]
        if spec.type.arity == LIST:  # a plain scalar would be split again on blanks and commas
            words = [_Quoted(w) if _SPLITS.search(w) else w for w in words]
        out[name] = words[0] if len(words) == 1 and not spec.multiple else words
    return out


def _section_data(section: Section) -> dict:
    data = _settings_data(section.settings, _scope_of(section))
    for extra in section.extra:
        data[extra.name] = (None if not extra.words else extra.words[0] if len(extra.words) == 1
                            else list(extra.words))
    for child in section.children:
        key = child.spec.name if child.arg is None else (
            f"{child.spec.name} {render(child.spec.arg.format_one(child.arg))}")
        data[key] = _section_data(child)
    return data


def print_yaml(config: Config) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _scalar(dumper: yaml.SafeDumper, text: str, quoted: bool) -> yaml.ScalarNode:
        text = str(text)
        if "${" in text:  # a literal ${ must not be substituted when read back
            if all(" " <= c <= "~" for c in text):
                return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="'")
            return dumper.represent_scalar(RAW_TAG, text, style='"')
        # YAML folds \x85, \u2028 and \u2029 as line breaks unless they are escaped
        if any(ord(c) < 0x20 and c not in "\n\t" or c in "\x85\u2028\u2029" for c in text):
            style = '"'
        elif quoted:
            style = "'"
        else:
            # Only the text is read back, never YAML's type: `workers: 4` and `verbose-tty: off`
            # need no quotes. A null would read as a flag, so it stays quoted.
            tag = dumper.resolve(yaml.ScalarNode, text, (True, False))
            if tag.rsplit(":", 1)[-1] in ("int", "float", "bool"):
                return dumper.represent_scalar(tag, text)
            style = None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
        return _scalar(dumper, text, quoted=False)

    def _quoted(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
        return _scalar(dumper, text, quoted=True)

    def _flag(dumper: yaml.SafeDumper, value: None) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:null", "")  # `privileged:`, not null

    _Dumper.add_representer(type(None), _flag)
    _Dumper.add_representer(str, _str)
    _Dumper.add_representer(_Quoted, _quoted)
    return yaml.dump(to_data(config), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100)

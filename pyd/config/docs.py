"""Generate docs/config.md, the directive reference, from the registry.

`python -m pyd.config.docs > docs/config.md`; a test fails when the file is stale.
"""

from __future__ import annotations

from pyd.config import directives as _declarations  # noqa: F401  (fills the registry)
from pyd.config.registry import MAIN, REGISTRY, Block, Directive, SectionKind


def _default(d: Directive) -> str:
    if d.default is None:
        return "unset"
    if d.default == () or d.default == "":
        return "none"
    words = d.type.format(d.default)
    return "`" + " ".join(words) + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(scope: str) -> list[str]:
    directives = REGISTRY.directives_in(scope)
    if not directives:
        return []
    out = ["| directive | value | default | on `update` | description |",
           "|---|---|---|---|---|"]
    for d in directives.values():
        flags = []
        if d.required:
            flags.append("required")
        if d.multiple:
            flags.append("may repeat")
        extra = f" ({', '.join(flags)})" if flags else ""
        out.append(f"| `{d.name}` | {_cell(d.type.describe())} | {_default(d)} | "
                   f"{'applied' if d.reload else 'needs restart'} | "
                   f"{_cell(d.help)}{extra} Example: `{_cell(d.example_line())}` |")
    return out


def generate() -> str:
    lines = [
        "# Directive reference",
        "",
        "Generated from `pyd/config/directives/` by `python -m pyd.config.docs`; do not edit by",
        "hand. The language itself (syntax, strings, variables, include, YAML) is described in",
        "[config-language.md](config-language.md).",
        "",
        "Names are case-insensitive and `-` equals `_`. Every top-level directive can also be",
        "given as `--name=value` on the command line or as `PYD_NAME=value` in the environment",
        "(the command line wins over the environment, which wins over the file).",
        "",
        "## Top level",
        "",
    ]
    lines += _table(MAIN)
    done_blocks: set[str] = set()
    for item in REGISTRY.order:
        if not isinstance(item, SectionKind):
            continue
        header = item.title
        lines += ["", f"## {header}", "", item.help, ""]
        if item.example:
            lines += [f"    {item.example}", ""]
        if item.extra:
            lines += ["Directives other than the ones below are passed to the class as its "
                      "settings.", ""]
        lines += _table(item.scope)
        for blk in REGISTRY.blocks_in(item.scope).values():
            if blk.name in done_blocks:
                continue
            done_blocks.add(blk.name)
            lines += _block(blk)
    return "\n".join(lines) + "\n"


def _block(blk: Block) -> list[str]:
    where = ", ".join(blk.scopes)
    arg = f" {blk.arg.describe()}" if blk.arg is not None else ""
    lines = ["", f"### `{blk.name}` block (in {where})", "", f"`{blk.name}{arg} {{ ... }}`: "
             f"{blk.help}", ""]
    if blk.example:
        lines += [f"    {blk.example}", ""]
    if blk.free_form:
        lines += ["Its body holds `NAME value;` entries, names kept as written.", ""]
    else:
        lines += _table(blk.inner)
    return lines


if __name__ == "__main__":
    print(generate(), end="")

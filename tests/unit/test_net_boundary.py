"""The transport seam: only pyd/net/ touches gevent's socket internals, and web/ never reaches
down to net/, pools/ or gevent's sockets (it gets a request head, a body pull, a writer)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PYD = Path(__file__).resolve().parents[2] / "pyd"

# The raw socket under gevent's, its watchers (waiting on one needs it), waking a wait, and
# the deadline exceptions thrown into one. gevent's public wait_read() on a pipe is not one.
INTERNALS = re.compile(r"\._sock\b|_read_event\b|_write_event\b|\bcancel_wait\b|\b_Expired\b")


def sources(under: Path = PYD):
    for path in sorted(under.rglob("*.py")):
        yield path, path.read_text()


def code_lines(text: str):
    """(number, line) of the lines that are code: comments and docstrings may name things."""
    tree = ast.parse(text)
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    for number, line in enumerate(text.splitlines(), 1):
        if number in doc_lines:
            continue
        code = line.split("#", 1)[0]
        if code.strip():
            yield number, code


def test_only_net_touches_gevent_socket_internals():
    found = []
    for path, text in sources():
        if path.is_relative_to(PYD / "net"):
            continue
        for number, code in code_lines(text):
            if INTERNALS.search(code):
                found.append(f"{path.relative_to(PYD.parent)}:{number}: {code.strip()}")
    assert not found, "gevent socket internals outside pyd/net/:\n" + "\n".join(found)


def test_the_check_sees_what_it_looks_for():
    text = ("x = sock._sock\nsock._wait(sock._read_event)\n# sock._sock in a comment\n"
            "hub.cancel_wait(w, _Expired())\n")
    hits = [n for n, code in code_lines(text) if INTERNALS.search(code)]
    assert hits == [1, 2, 4]


def imported_modules(text: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_web_imports_neither_net_nor_pools_nor_gevent_sockets():
    found = []
    for path, text in sources(PYD / "web"):
        for name in sorted(imported_modules(text)):
            if name.startswith(("pyd.net", "pyd.pools", "gevent.socket", "gevent._socket")) \
                    or name in ("gevent.socket", "socket"):
                found.append(f"{path.relative_to(PYD.parent)}: imports {name}")
    assert not found, "\n".join(found)

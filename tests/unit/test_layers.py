"""The house plan as a test: folders are layers, and the contracts in .importlinter hold.

A layer imports only the layers below it (cli > master > worker|service > pools|clients > web >
log|net|protocols|apps > config|ipc|system); the cores never touch sockets or gevent; web knows
no transport. Function-level (lazy) imports count: they are dependencies all the same.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    return [exe, "--config", str(REPO / ".importlinter"), "--no-cache"]


def test_the_layer_contracts_hold():
    r = subprocess.run(_lint_imports(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_every_folder_of_pyd_is_in_a_layer():
    """A new folder must take its place in the plan, or the contracts say nothing about it."""
    text = (REPO / ".importlinter").read_text()
    layers = text.split("layers =", 1)[1].split("\n\n", 1)[0]
    named = {name.strip() for line in layers.splitlines() for name in line.split("|")} - {""}
    folders = {p.name for p in (REPO / "pyd").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= named, f"folders not in a layer: {sorted(folders - named)}"


def test_a_broken_contract_is_reported(tmp_path):
    """The check can fail: a contract that forbids what the code does is reported broken."""
    config = tmp_path / "contracts.ini"
    config.write_text("[importlinter]\nroot_package = pyd\n\n"
                      "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
                      "source_modules =\n    pyd.master\nforbidden_modules =\n    pyd.ipc\n")
    cmd = _lint_imports()
    cmd[cmd.index("--config") + 1] = str(config)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "BROKEN" in r.stdout


def test_the_master_imports_no_parser():
    """The master parses in a child: lark (some 5 MB of tables) never enters its memory, nor
    that of the workers it forks. A top-level import of the grammar would undo that silently."""
    code = ("import sys, pyd.config, pyd.master.arbiter, pyd.worker.main\n"
            "print(sorted(m for m in sys.modules if m == 'lark' or m.startswith('lark.')"
            " or m == 'pyd.config.language'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_ruff_is_clean():
    """The style the project keeps (pyproject.toml's [tool.ruff]): a lint error fails the suite."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]

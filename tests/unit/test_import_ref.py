"""`module:attr` references: the one loader of apps, App: classes and Python Cron jobs."""

from __future__ import annotations

import sys
import textwrap

import pytest

from pyd.apps import RefError, import_ref
from pyd.service import jobrun


@pytest.fixture
def modules(tmp_path, monkeypatch):
    (tmp_path / "refshop.py").write_text(textwrap.dedent("""
        class Views:
            class Inner:
                value = 42

        def job():
            return "ran"

        def make():
            return job

        def broken_factory():
            raise RuntimeError("no database")

        not_callable = 3
    """))
    (tmp_path / "refbroken.py").write_text("import os\nraise ValueError('boom at import')\n")
    (tmp_path / "refsyntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("refshop", "refbroken", "refsyntax"):
        sys.modules.pop(name, None)


def test_a_dotted_attribute_is_followed(modules):
    assert import_ref("refshop:Views.Inner").value == 42


def test_a_factory_is_called_unless_asked_not_to(modules):
    assert import_ref("refshop:make()")() == "ran"
    assert import_ref("refshop:make()", call_factory=False).__name__ == "make"


@pytest.mark.parametrize("ref, message", [
    ("refnothere:app", "cannot import refnothere:app: no module named 'refnothere'"),
    ("refshop:missing", "cannot import refshop:missing: module 'refshop' has no attribute "
                        "'missing'"),
    ("refshop:not_callable()", "refshop:not_callable(): not_callable is not callable"),
    ("refshop:broken_factory()", "refshop:broken_factory(): the factory failed: RuntimeError: "
                                 "no database (at "),
    ("refbroken:app", "cannot import refbroken:app: ValueError: boom at import (at "),
    ("refsyntax:f", "cannot import refsyntax:f: SyntaxError: "),
])
def test_a_reference_that_cannot_load_says_why_in_one_line(modules, ref, message):
    with pytest.raises(RefError) as e:
        import_ref(ref)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_failing_line_is_the_users_not_the_loaders(modules):
    with pytest.raises(RefError, match=r"refbroken\.py:2\)$"):
        import_ref("refbroken:app")


def test_jobrun_loads_its_job_with_import_ref(modules, capsys, monkeypatch):
    """A Cron job's `run` goes through the same loader: a factory's result is the job."""
    assert jobrun.import_ref is import_ref
    monkeypatch.setattr(jobrun, "resolve", lambda user, group: None)
    monkeypatch.setattr(jobrun, "drop", lambda identity, chroot: None)
    monkeypatch.chdir(modules)
    monkeypatch.setattr(jobrun.logging, "basicConfig", lambda **kw: None)
    assert jobrun.main(["--cwd", str(modules), "refshop:make()"]) == 0
    assert jobrun.main(["--cwd", str(modules), "refshop:missing"]) == 2
    assert "pyd: cannot import refshop:missing: module 'refshop' has no attribute" in \
        capsys.readouterr().err

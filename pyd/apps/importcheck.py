"""configtest's import check: import every `module:attribute` a config names, in a subprocess.

The parent sends a JSON request on stdin; the child becomes the configured user (when run as
root), imports each reference and answers with a JSON list of failures on stdout.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator

from pyd.apps import RefError, import_ref
from pyd.config.errors import Position, Problem
from pyd.config.model import Config, Section, Settings
from pyd.config.registry import REGISTRY
from pyd.config.values import Ref
from pyd.system.trust import python_command, python_environ

TIMEOUT = 60


def refs_of(config: Config) -> Iterator[tuple[str, str, Position | None]]:
    """(reference, directive, position) for every Ref-typed value in the config."""
    yield from _refs_in(config.settings, "main")
    for section in config.sections:
        yield from _section_refs(section)


def _section_refs(section: Section) -> Iterator[tuple[str, str, Position | None]]:
    scope = getattr(section.spec, "scope", None) or section.spec.inner
    yield from _refs_in(section.settings, scope)
    for child in section.children:
        yield from _section_refs(child)


def _refs_in(settings: Settings, scope: str) -> Iterator[tuple[str, str, Position | None]]:
    for name, value in settings.explicit():
        spec = REGISTRY.directives_in(scope).get(name)
        if spec is None or not isinstance(spec.type, Ref):
            continue
        for ref in (value if isinstance(value, tuple) else (value,)):
            if isinstance(ref, str) and ":" in ref:
                yield ref, name, settings.origin(name).pos


def check_imports(config: Config, user: str | None, group: str | None) -> list[Problem]:
    """Import every reference in a child process; a Problem per failure, at its directive."""
    refs = list(refs_of(config))
    if not refs:
        return []
    request = {
        "cwd": config.cwd or os.getcwd(),
        "pythonpath": list(config.pythonpath),
        "user": user,
        "group": group,
        "refs": [[ref, name] for ref, name, _ in refs],
    }
    try:
        # Root until it drops privileges: -P and / keep the current directory off sys.path.
        proc = subprocess.run(python_command("pyd.apps.importcheck"), cwd="/",
                              env=python_environ(dict(os.environ)), input=json.dumps(request),
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return [Problem(f"importing the config's apps took more than {TIMEOUT}s")]
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [Problem(f"the import check failed: {tail}")]
    if "error" in answer:  # the child could not even start: point at what it could not do
        return [Problem(answer["error"], config.settings.origin(answer.get("directive", "")).pos)]
    return [Problem(message, refs[index][2]) for index, message in answer["failures"]]


def _child() -> None:
    request = json.loads(sys.stdin.read())
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # what apps print while importing must not corrupt the answer
    from pyd.system.privileges import PrivilegeError, drop, resolve

    try:
        drop(resolve(request["user"], request["group"]))
    except (PrivilegeError, OSError) as e:
        real_stdout.write(json.dumps({"error": f"cannot take the workers' identity: {e}",
                                      "directive": "user"}) + "\n")
        return
    try:
        os.chdir(request["cwd"])
    except OSError as e:
        real_stdout.write(json.dumps({"error": f"cannot enter cwd {request['cwd']}: "
                                               f"{e.strerror}", "directive": "cwd"}) + "\n")
        return
    sys.path[:0] = request["pythonpath"] + [request["cwd"]]
    failures = []
    for index, (ref, directive) in enumerate(request["refs"]):
        try:
            obj = import_ref(ref, call_factory=False)
        except RefError as e:
            failures.append([index, str(e)])
            continue
        if directive == "class" and not inspect.isclass(obj):
            failures.append([index, f"{ref} is not a class"])
        elif not callable(obj):
            failures.append([index, f"{ref} is not callable (a WSGI app is a callable)"])
    real_stdout.write(json.dumps({"failures": failures}) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    _child()
    # An app may start threads at import; the answer is written, so do not wait for them.
    sys.__stdout__.flush()
    sys.__stderr__.flush()
    os._exit(0)

"""Applications: loading `module:attribute` references, and the AppInstance base class.

Used by workers to load WSGI apps and App: sections, and by configtest to check imports.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import sys
import traceback
from typing import Any

from pyd.config.errors import ConfigError, Problem
from pyd.config.model import Origin, Settings
from pyd.config.values import BadValue, ParseContext


class RefError(Exception):
    """A `module:attribute` reference cannot be loaded; the message says why in one line."""


def import_ref(ref: str, call_factory: bool = True) -> Any:
    """The object `ref` names: `module.path:attr.sub`, or `module:factory()` (called)."""
    module_name, _, attr = ref.partition(":")
    factory = attr.endswith("()")
    if factory:
        attr = attr[:-2]
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise RefError(f"cannot import {ref}: no module named {e.name!r} "
                           f"(sys.path starts with {sys.path[0]!r})") from None
        raise RefError(f"cannot import {ref}: {_describe(e)}") from None
    except BaseException as e:  # the module's own code failed
        raise RefError(f"cannot import {ref}: {_describe(e)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RefError(f"cannot import {ref}: module {module_name!r} has no attribute "
                           f"{attr!r}") from None
    if factory:
        if not callable(obj):
            raise RefError(f"{ref}: {attr} is not callable, it cannot be a factory")
        if call_factory:
            try:
                obj = obj()
            except BaseException as e:
                raise RefError(f"{ref}: the factory failed: {_describe(e)}") from None
    return obj


def _describe(exc: BaseException) -> str:
    """`Type: message (at file:line)`, naming the innermost frame of the failing code."""
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" (at {exc.filename}:{exc.lineno})"
        return f"SyntaxError: {exc.msg}{where}"
    return f"{type(exc).__name__}: {exc}{where}"


# -- typed settings of a user's class ------------------------------------------------------------

def class_settings(cls: type, section) -> Any:
    """The section's extra directives typed by the class's `directives` declaration.

    `directives = {"greeting": (String(), "hello")}` declares one; without a declaration every
    extra is kept as its text. Unknown names and bad values are ConfigErrors at their position.
    """
    declared = getattr(cls, "directives", None)
    scope = section.header
    if declared is None:
        values = {e.name: " ".join(e.words) for e in section.extra}
        return Settings(scope, values, {e.name: Origin("file", e.pos) for e in section.extra})
    values = {name.replace("_", "-"): default for name, (_, default) in declared.items()}
    types = {name.replace("_", "-"): vtype for name, (vtype, _) in declared.items()}
    origins, problems = {}, []
    for e in section.extra:
        if e.name not in types:
            close = difflib.get_close_matches(e.name, list(types), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.append(Problem(f'unknown directive "{e.name}" for {cls.__name__}{hint}',
                                    e.pos))
            continue
        try:
            values[e.name] = types[e.name].parse(list(e.words), ParseContext(
                os.path.dirname(os.path.abspath(e.pos.source.name))))
            origins[e.name] = Origin("file", e.pos)
        except BadValue as bad:
            problems.append(Problem(f'"{e.name}": {bad.message}', e.pos))
    if problems:
        raise ConfigError(problems)
    return Settings(scope, values, origins)


class AppInstance:
    """An application, phpDaemon style: declared as `App:name { class module:Class; ... }`.

    Lives in every worker, or in the master when `privileged` (then `init()` runs as root and
    workers inherit the instance). Hooks, all optional:
      init()                 once, where the instance is made
      on_ready()             in each worker, after privileges are dropped, before serving
      on_config_updated()    after `pyd update` changed its section (privileged instances)
      on_shutdown(graceful)  when its worker stops; return False to be asked again (about every
                             second) until True or until graceful-timeout passes
    An instance that is also a WSGI callable (`__call__(environ, start_response)`) can be
    named by `app NAME;` in an HTTP or FastCGI pool or location.
    """

    directives: dict[str, tuple[Any, Any]] | None = None

    def __init__(self, name: str, settings: Any, section: Any = None):
        self.name = name
        self.settings = settings
        self.section = section
        self.log = logging.getLogger(f"app.{name}")

    def init(self) -> None:
        pass

    def on_ready(self) -> None:
        pass

    def on_config_updated(self) -> None:
        pass

    def on_shutdown(self, graceful: bool) -> bool:
        return True


def make_app(section) -> AppInstance:
    """Instantiate an App: section's class and run its init(). Raises RefError or ConfigError.

    A privileged one is imported and initialised as root, from the directories
    set_privileged_path() named, and only while that runs.
    """
    with privileged_imports() if section.settings.get("privileged") else contextlib.nullcontext():
        cls = import_ref(section.settings["class"])
        if not (isinstance(cls, type) and issubclass(cls, AppInstance)):
            raise RefError(f"{section.settings['class']} is not a subclass of pyd.AppInstance")
        app = cls(section.name, class_settings(cls, section), section)
        app.init()
    return app


# -- where root imports privileged code from ------------------------------------------------------

_privileged_path: tuple[str, ...] = ()


def set_privileged_path(directories) -> None:
    """The master's `cwd` and `pythonpath` (restart-only settings): where privileged apps and
    pools are imported from, and only for that import (privileged_imports)."""
    global _privileged_path
    _privileged_path = tuple(directories)


def privileged_imports():
    """A `with` block in which the privileged path is on sys.path, after the interpreter's own
    directories: a module dropped there can shadow no standard or installed one."""
    from pyd.system.trust import import_path

    return import_path(_privileged_path, last=True)


def privileged_path_problem(directories, uid: int, gids) -> str | None:
    """Why root must not import from `directories`: one that the workers' user can write (or
    any directory above it) would run their code as root. None when all are safe."""
    from pyd.system.trust import writers

    for directory in directories:
        why = writers(directory, uid, gids)
        if why:
            return (f"privileged code is imported as root from {directory}, but {why}: the "
                    "workers' user could make root run anything; make it root's, or drop "
                    "`privileged`")
    return None

"""Applications: loading `module:attribute` references, and the AppInstance base class.

Used by workers to load WSGI apps and App: sections, and by configtest to check imports.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any


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
    frames = [f for f in frames if "importlib" not in f.filename and "/pyd/apps.py" not in f.filename]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" (at {exc.filename}:{exc.lineno})"
        return f"SyntaxError: {exc.msg}{where}"
    return f"{type(exc).__name__}: {exc}{where}"

"""Loading pyd's configuration: find the file, parse it (language or YAML), validate it.

`load()` is the one entry point; it returns an immutable Config or raises ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .errors import ConfigError, Position, Problem
from .loader import load_file
from .model import Config, Section, Settings
from .validate import Override, build, environment_overrides

SEARCH_PATH = ("/etc/pyd/pyd.conf", "/etc/pyd.conf", "./conf/pyd.conf")


def find_config(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The config file to use: -c, else $PYD_CONFIG, else the first of SEARCH_PATH that exists."""
    env = os.environ if env is None else env
    if explicit:
        return explicit
    if env.get("PYD_CONFIG"):
        return env["PYD_CONFIG"]
    for path in SEARCH_PATH:
        if os.path.exists(path):
            return os.path.relpath(path) if path.startswith("./") else path
    raise ConfigError("no configuration file found (looked for " + ", ".join(SEARCH_PATH)
                      + "); give one with -c FILE or PYD_CONFIG")


def load(path: str, overrides: Iterable[Override] = (),
         env: Mapping[str, str] | None = None) -> Config:
    """Load, include, substitute and validate a config file into a Config.

    `env` supplies ${VARS} and PYD_<DIRECTIVE> overrides (default: os.environ); explicit
    `overrides` (the command line) win over the environment, which wins over the file.
    """
    env = os.environ if env is None else env
    nodes = load_file(path, env)
    all_overrides = list(environment_overrides(env)) + list(overrides)
    return build(nodes, path, all_overrides)


__all__ = ["Config", "ConfigError", "Override", "Position", "Problem", "Section", "Settings",
           "find_config", "load", "SEARCH_PATH"]

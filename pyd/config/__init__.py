"""Loading pyd's configuration: find the file, parse it (language or YAML), validate it.

`load()` is the one entry point; it returns an immutable Config or raises ConfigError.
`load_apart()` does the same in a child process, for the master.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterable, Mapping

from pyd.config.errors import ConfigError, Position, Problem
from pyd.config.loader import load_file
from pyd.config.model import Config, Section, Settings
from pyd.config.validate import Override, build, environment_overrides

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
    sources: list[str] = []
    nodes = load_file(path, env, sources)
    all_overrides = list(environment_overrides(env)) + list(overrides)
    return build(nodes, path, all_overrides, tuple(sources))


def load_apart(path: str, overrides: Iterable[Override] = (),
               env: Mapping[str, str] | None = None) -> Config:
    """load() in a forked child that hands the Config back pickled.

    For the master: the parser (lark, its grammar tables: some 5 MB) then never enters its
    memory, nor the memory of every worker it forks. A child that dies without an answer
    leaves the parse to this process.
    """
    if "pyd.config.language" in sys.modules:
        return load(path, overrides, env)  # already paid for
    overrides = list(overrides)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        status = 1
        try:
            os.closerange(r, r + 1)
            try:
                result = (True, load(path, overrides, env))
            except ConfigError as e:
                result = (False, e)
            with os.fdopen(w, "wb") as out:
                out.write(pickle.dumps(result, pickle.HIGHEST_PROTOCOL))
            status = 0
        finally:
            os._exit(status)
    # closerange, not close: gevent's os.close waits for the loop's next turn to close a pipe,
    # and the loop does not turn while this blocks in read, which would never see the end.
    os.closerange(w, w + 1)
    with os.fdopen(r, "rb") as answer:
        data = answer.read()
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    if not data:
        return load(path, overrides, env)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


__all__ = ["Config", "ConfigError", "Override", "Position", "Problem", "Section", "Settings",
           "find_config", "load", "load_apart", "SEARCH_PATH"]

"""Directives: who runs the workers, where, with which files."""

from __future__ import annotations

from pyd.config.registry import REGISTRY
from pyd.config.values import (
    ListOf,
    Path,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

# -- the process: who runs, where ----------------------------------------------------------------

directive("user", String(expected="a user name or uid", example="www-data"), None, reload=False,
          help="The user workers run as. Started as root with no `user`, workers refuse to run: "
               "write `user root;` to really mean it. Ignored (with a warning) when not root.")
directive("group", String(expected="a group name or gid", example="www-data"), None, reload=False,
          help="The group workers run as; default: the primary group of `user`.")
directive("chroot", Path(), None, reload=False, example="/srv/jail",
          help="Workers chroot here before dropping privileges.")
directive("cwd", Path(), None, reload=False, example="/srv/shop",
          help="Workers change into this directory and import apps from it; default: the "
               "directory `pyd start` ran in.")
directive("pythonpath", ListOf(Path()), (), reload=False, example="/srv/shop/src",
          help="More directories put at the front of `sys.path` before apps are imported.")
directive("pidfile", Path(), "/run/pyd/pyd.pid", reload=False, example="/run/pyd/pyd.pid",
          help="The master's pid, locked with fcntl while it runs; a stale one is replaced.")
directive("control-socket", Path(), None, reload=False, example="/run/pyd/pyd.sock",
          help="The master's unix control socket for the CLI; default: the pidfile's name "
               "with `.sock`.")

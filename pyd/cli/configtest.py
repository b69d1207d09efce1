"""`pyd configtest`: like `nginx -t`, check the config and say what it means.

Also the one place that loads the config for a command (`load_or_fail`), so `pyd start` reports
errors exactly as configtest does.
"""

from __future__ import annotations

import argparse
import sys

from pyd.cli import table
from pyd.cli.errors import EXIT_FAIL, EXIT_OK, Failure
from pyd.config import Config, ConfigError, find_config, load_apart
from pyd.config.directives import REGISTRY
from pyd.config.registry import MAIN


def config_path(args: argparse.Namespace) -> str:
    try:
        return find_config(getattr(args, "config", None))
    except ConfigError as e:
        raise Failure(e.first.message) from None


def load_or_fail(args: argparse.Namespace, quiet: bool = False) -> Config:
    """The validated config, or the errors printed and Failure raised."""
    path = config_path(args)
    try:
        return load_apart(path, getattr(args, "overrides", ()))
    except ConfigError as e:
        print(e.format(), file=sys.stderr)
        raise Failure(f"configuration file {path} test failed") from None


def run(args: argparse.Namespace) -> int:
    path = config_path(args)
    say = (lambda msg: None) if args.quiet or args.print_as else (
        lambda msg: print(f"pyd: {msg}", file=sys.stderr))
    say(f"using configuration file {path}")
    config = load_or_fail(args)
    say(f"the configuration file {path} syntax is ok")
    if not args.quiet:
        from pyd.config.loader import unsafe_sources

        for message in unsafe_sources(config.sources):
            print(f"pyd: warning: {message}", file=sys.stderr)
    problems = []
    if not args.no_imports:
        from pyd.apps.importcheck import check_imports
        from pyd.system.privileges import PrivilegeError, resolve

        try:
            identity = resolve(config.user, config.group)
            if identity.warning and not args.quiet:
                print(f"pyd: warning: {identity.warning}", file=sys.stderr)
        except PrivilegeError as e:
            pos = config.settings.origin("user").pos
            from pyd.config.errors import Problem

            problems.append(Problem(str(e), pos))
        else:
            failed = check_imports(config, config.user, config.group)
            problems += failed + (unreadable_problems(config, identity) if failed else [])
        from pyd.master.boot import socket_owner_problems  # what start and update refuse

        problems += socket_owner_problems(config)
    if problems:
        print(ConfigError(problems).format(), file=sys.stderr)
        print(f"pyd: configuration file {path} test failed", file=sys.stderr)
        return EXIT_FAIL
    if args.print_as == "conf":
        sys.stdout.write(config.canonical())
    elif args.print_as == "yaml":
        from pyd.config.printer import print_yaml

        sys.stdout.write(print_yaml(config))
    elif not args.quiet:
        print(settings_table(config))
    say(f"configuration file {path} test is successful")
    return EXIT_OK


def unreadable_problems(config: Config, identity) -> list:
    """Why an import failed when the workers' user cannot read the interpreter, its
    site-packages, `cwd` or `pythonpath`: one Problem per path, at `user`."""
    from pyd.config.errors import Problem
    from pyd.system.readable import unreadable, worker_paths

    if not identity.switch:
        return []
    pos = config.settings.origin("user").pos
    return [Problem(f"{line} (the workers import from there)", pos)
            for line in unreadable(worker_paths(config), identity.uid, identity.gid,
                                   identity.name)]


def settings_table(config: Config) -> str:
    """Every top-level directive: its value, its default and where the value came from."""
    rows = [("directive", "value", "default", "from")]
    for name, spec in REGISTRY.directives_in(MAIN).items():
        value = config.settings[name]
        rows.append((name, _show(spec, value), _show(spec, spec.default),
                     str(config.settings.origin(name))))
    # Never cut to the terminal's width: the last column, where a value came from, is the point.
    lines = table.render(rows)
    if config.sections:
        lines.append("")
        lines.append("sections:")
        for s in config.sections:
            listen = ", ".join(str(a) for a in s.settings.get("listen", ()) or ())
            lines.append(f"  {s.header:<28} {listen}".rstrip() + f"  ({s.pos.short})")
    return "\n".join(lines)


def _show(spec, value) -> str:
    if value is None:
        return "-"
    if value == ():
        return "(none)"
    return " ".join(spec.type.format(value))

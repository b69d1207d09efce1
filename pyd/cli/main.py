"""The `pyd` command: parse the command line, then hand over to one small function per command.

Errors here are one line on stderr: exit 2 for a misuse of the command line, 1 for a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyd.cli.errors import EXIT_FAIL, EXIT_USAGE, Failure, UsageError
from pyd.version import __version__


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int] | None
    options: Callable[[argparse.ArgumentParser], None] | None = None


def _configtest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument("--print", choices=("conf", "yaml"), dest="print_as",
                   help="print the whole normalized configuration in this format")
    p.add_argument("--no-imports", action="store_true",
                   help="do not import the apps the config names")


def _start_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--foreground", action="store_true",
                   help="stay attached (for systemd Type=notify and containers)")


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N",
                   help="how many lines to show first (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep following the log")
    p.add_argument("--channel", metavar="PATTERN", help="only these channels (glob)")
    p.add_argument("--level", metavar="LEVEL", help="only this severity and above")


def _cron_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("list", "run"), default="list",
                   help="list: next and last runs of every job; run NAME: run it now, once")
    p.add_argument("name", nargs="?", help="the job (the NAME of Cron:NAME)")


def _process_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("list", "restart"), default="list",
                   help="list: the supervised programs; restart NAME: stop and start one "
                        "(NAME:N for one copy)")
    p.add_argument("name", nargs="?", help="the program (the NAME of Process:NAME)")


def _log(args: argparse.Namespace) -> int:
    from pyd.cli.follow import run

    return run(args)


def _configtest(args: argparse.Namespace) -> int:
    from pyd.cli.configtest import run

    return run(args)


def _not_built(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise Failure(f"'{name}' is not available in this version of pyd yet")

    return run


def _lifecycle(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from pyd.cli import commands

        return getattr(commands, name.replace("-", "_"))(args)

    return run


# Commands that run a master or a worker: gevent patches before they import anything else.
PATCHED = ("start", "restart", "runworker")

COMMANDS = [
    Command("start", "start the master and its workers (as a daemon unless --foreground)",
            _lifecycle("start"), _start_options),
    Command("stop", "stop now: workers close their connections and exit", _lifecycle("stop")),
    Command("graceful-stop", "stop after in-flight requests finish (up to graceful-timeout)",
            _lifecycle("graceful-stop")),
    Command("hard-stop", "stop, killing whatever is left after a short deadline",
            _lifecycle("hard-stop")),
    Command("restart", "stop gracefully, then start again", _lifecycle("restart"),
            _start_options),
    Command("reload", "replace every worker gracefully, loading the apps' code anew",
            _lifecycle("reload")),
    Command("update", "re-read the config and apply it; an invalid one changes nothing",
            _lifecycle("update")),
    Command("upgrade", "re-execute the master with its listeners (a new pyd, no downtime)",
            _lifecycle("upgrade")),
    Command("reopenlog", "reopen every log file (after an external logrotate)",
            _lifecycle("reopenlog")),
    Command("status", "say whether pyd runs: pid, uptime, config file", _lifecycle("status")),
    Command("fullstatus", "status, with a table of workers and supervised processes",
            _lifecycle("fullstatus")),
    Command("cron", "the scheduled jobs: cron list, cron run NAME (now, once)",
            _lifecycle("cron"), _cron_options),
    Command("process", "the supervised programs: process list, process restart NAME",
            _lifecycle("process"), _process_options),
    Command("configtest", "check the config and show the effective settings", _configtest,
            _configtest_options),
    Command("log", "show the last lines of the main log, and follow it with -f",
            _log, _log_options),
    Command("runworker", "run one worker in the foreground, without a master (debugging)",
            _lifecycle("runworker")),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors, as one line
        raise UsageError(message)


def _build_parser() -> tuple[_Parser, dict[str, _Parser]]:
    width = max(len(c.name) for c in COMMANDS) + 2
    lines = "\n".join(f"  {c.name:<{width}}{c.help}" for c in COMMANDS)
    top = _Parser(
        prog="pyd", usage="pyd [-c FILE] COMMAND [options] [--DIRECTIVE=VALUE ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description="pyd: a declarative application daemon for Python.",
        epilog=f"commands:\n{lines}\n\nAny top-level directive may be given as "
               "--name=value (e.g. --workers=4, --verbose-tty=1).\n"
               "`pyd COMMAND --help` shows a command's options.")
    top.add_argument("--version", action="version", version=f"pyd {__version__}")
    top.add_argument("-c", "--config", metavar="FILE",
                     help="the config file (default: $PYD_CONFIG, /etc/pyd/pyd.conf, "
                          "/etc/pyd.conf, ./conf/pyd.conf)")
    subs: dict[str, _Parser] = {}
    for c in COMMANDS:
        p = _Parser(prog=f"pyd {c.name}", description=c.help, allow_abbrev=False,
                    usage=f"pyd {c.name} [options] [--DIRECTIVE=VALUE ...]")
        p.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="the config file")
        if c.options:
            c.options(p)
        subs[c.name] = p
    return top, subs


def _command(name: str) -> Command:
    """Commands match case-insensitively, ignoring dashes: gracefulstop is graceful-stop."""
    key = name.lower().replace("-", "").replace("_", "")
    for c in COMMANDS:
        if c.name.replace("-", "") == key:
            return c
    import difflib

    close = difflib.get_close_matches(name, [c.name for c in COMMANDS], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UsageError(f"unknown command '{name}'{hint}; see pyd --help")


def parse(argv: list[str]) -> tuple[Command, argparse.Namespace]:
    top, subs = _build_parser()
    # Options before the command belong to `pyd` itself; the first bare word is the command.
    split = next((i for i, a in enumerate(argv) if not a.startswith("-")
                  and (i == 0 or argv[i - 1] not in ("-c", "--config"))), None)
    if split is None:
        top.parse_args(argv)  # --help / --version exit here
        raise UsageError("no command given; see pyd --help")
    head = top.parse_args(argv[:split])
    command = _command(argv[split])
    args, rest = subs[command.name].parse_known_args(argv[split + 1:])
    if getattr(args, "config", None) is None:
        args.config = head.config
    args.overrides = _overrides(rest, subs[command.name]._option_string_actions)
    args.command = command.name
    return command, args


def _overrides(rest: list[str], options: Iterable[str] = ()) -> list:
    """--name=value (or --name value; a bare --flag for on/off directives) -> Overrides."""
    from pyd.config import Override
    from pyd.config.directives import REGISTRY
    from pyd.config.loader import normalize_name
    from pyd.config.registry import MAIN
    from pyd.config.values import FLAG

    directives = REGISTRY.directives_in(MAIN)
    out = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"unexpected argument '{arg}'")
        name, eq, value = arg[2:].partition("=")
        spec = directives.get(normalize_name(name))
        if spec is None:
            import difflib

            # the command's own options first: --quite is more likely --quiet than a directive
            own = [o[2:] for o in options if o.startswith("--")]
            close = (difflib.get_close_matches(name, own, n=1)
                     or difflib.get_close_matches(normalize_name(name), list(directives), n=1))
            hint = f" (did you mean '--{close[0]}'?)" if close else ""
            raise UsageError(f"unknown option '--{name}'{hint}")
        if not eq:
            if spec.type.arity == FLAG:
                value = None
            elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                i += 1
                value = rest[i]
            else:
                raise UsageError(f"option '--{name}' needs a value: --{spec.name}="
                                 f"{spec.example or spec.type.example}")
        out.append(Override(name, value, "command line", f"--{name}"))
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, args = parse(argv)
        if command.name in PATCHED:
            from gevent import monkey

            monkey.patch_all()
        return command.run(args)
    except UsageError as e:
        print(f"pyd: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as e:
        print(f"pyd: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL

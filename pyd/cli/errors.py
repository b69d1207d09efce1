"""How the CLI fails: exit codes and the two errors every command may raise.

A command raises `Failure` (exit 1) or `UsageError` (exit 2); `cli.main` prints one line.
"""

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line is wrong: one line, exit 2."""


class Failure(Exception):
    """The command could not do its job: one line (or a config error report), exit 1."""

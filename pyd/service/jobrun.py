"""`python -P -m pyd.service.jobrun [options] module:callable`: one run of a Python Cron job.

Started as root by the service process in a fresh interpreter (a fork of the service would carry
its gevent hub and every scheduled greenlet into the job): takes the workers' identity (chroot,
setgid, setuid), enters cwd, and only then imports the job's module, so that the module is the
configured user's to import. Exit status: 0 done, 1 the callable raised (traceback on stderr),
2 it could not be loaded or privileges could not be dropped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from pyd.apps import RefError, import_ref
from pyd.system.privileges import PrivilegeError, drop, resolve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyd.jobrun")
    p.add_argument("--user")
    p.add_argument("--group")
    p.add_argument("--chroot")
    p.add_argument("--cwd", required=True)
    p.add_argument("--pythonpath", action="append", default=[])
    p.add_argument("ref")
    args = p.parse_args(argv)
    try:
        drop(resolve(args.user, args.group), args.chroot)
        os.chdir(args.cwd)
    except (PrivilegeError, OSError) as e:
        print(f"pyd: cannot run {args.ref}: {e}", file=sys.stderr)
        return 2
    # The job's directories first, as in a worker, and only now that we are the job's user
    # (started with -P, nothing of the working directory was on sys.path before).
    sys.path[:0] = [args.cwd, *args.pythonpath]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        job = import_ref(args.ref)  # `module:factory()`: the factory's result is the job
    except RefError as e:
        print(f"pyd: {e}", file=sys.stderr)
        return 2
    try:
        job()
    except SystemExit as e:
        if e.code in (None, 0):
            return 0
        print(f"SystemExit: {e.code}", file=sys.stderr)
        return e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # the traceback from the job's own frame on
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        return 1
    finally:
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

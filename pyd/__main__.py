"""`python -m pyd`: the same as `pyd`."""

import sys

from pyd.system.trust import scrub_sys_path

scrub_sys_path()  # `python -m` put the current directory first: root imports nothing from it

from pyd.cli.main import main  # noqa: E402

sys.exit(main())

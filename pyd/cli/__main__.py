"""`python -m pyd.cli`: the same as `pyd`."""

import sys

from pyd.cli.main import main

sys.exit(main())

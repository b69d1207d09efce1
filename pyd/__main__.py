"""`python -m pyd`: the same as `pyd`."""

import sys

from pyd.cli.main import main

sys.exit(main())

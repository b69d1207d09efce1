"""Directives: how many workers, and when each is replaced."""

from __future__ import annotations

from pyd.config.registry import REGISTRY
from pyd.config.values import (
    Count,
    Duration,
    Integer,
    Size,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

# -- workers and recycling -----------------------------------------------------------------------

directive("workers", Count(), Count().parse_one("auto", None), example="4",
          help="How many workers the master keeps; `auto` is the number of CPUs.")
directive("min-workers", Integer(min=1, max=4096), None, example="2",
          help="With `max-workers`: the least the master scales down to when idle; "
               "default: `workers`.")
directive("max-workers", Integer(min=1, max=4096), None, example="8",
          help="With `min-workers`: the most the master scales up to when workers are busy; "
               "default: `workers`.")
directive("max-requests", Integer(min=0), 0, example="10000",
          help="A worker retires gracefully after this many requests (plus jitter); 0: never.")
directive("max-requests-jitter", Integer(min=0), 0, example="1000",
          help="A random 0..N added to `max-requests` per worker, so workers do not retire "
               "together.")
directive("max-memory-usage", Size(), 0, example="256M",
          help="A worker whose RSS stays above this for several samples in a row retires "
               "gracefully; 0: no limit.")
directive("max-idle", Duration(), 0.0, example="1h",
          help="A worker that served nothing for this long retires (and is replaced); 0: never.")
directive("max-recycling", Integer(min=1), 1, example="1",
          help="At most this many workers retire at once, whatever their limits say.")
directive("graceful-timeout", Duration(), 30.0, example="30s",
          help="How long a retiring or stopping worker may drain in-flight requests before it "
               "is killed.")
directive("request-timeout", Duration(), 0.0, example="60s",
          help="A request running longer is logged with every greenlet's stack, then its worker "
               "is replaced; 0: no limit.")

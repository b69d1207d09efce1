"""The master's side of the counters: read every live worker's block as untrusted input,
believe only what passes the checks, and fold a reaped worker's last totals into retired
totals, so that every count stays monotonic across recycling."""

from __future__ import annotations

from functools import lru_cache

from pyd.ipc import counters as ct
from pyd.ipc.counters import Layout, Validator


@lru_cache(maxsize=16)
def cell_keys(layout: Layout) -> tuple:
    """Each cell's label key, None for gauges: ("req", pool, location, method, code),
    ("bucket", pool, location, i), ("sum"|"in"|"out", pool, location), ("accepted", pool)."""
    keys: list = [None]
    for pool in layout.pools:
        keys += [None, None, ("accepted", pool)]
    for pool, loc in layout.routes:
        keys += [("req", pool, loc, m, c) for m in ct.METHODS for c in ct.CODES]
        keys += [("bucket", pool, loc, i) for i in range(ct.ROUTE_BUCKETS)]
        keys += [("sum", pool, loc), ("in", pool, loc), ("out", pool, loc)]
    return tuple(keys)


class Sample:
    """One scrape's numbers: counters by key, the gauges, and which routes and pools exist."""

    def __init__(self):
        self.counts: dict[tuple, float] = {}
        self.in_flight = 0
        self.open: dict[str, int] = {}
        self.parked: dict[str, int] = {}
        self.routes: list[tuple[str, str]] = []
        self.pools: list[str] = []


class Collector:
    def __init__(self):
        self.layout = Layout()
        self.live: dict[int, tuple[int, Validator]] = {}  # pid -> (slot, what we believe)
        self.retired: dict[tuple, float] = {}

    def configure(self, layout: Layout) -> None:
        """The layout of the workers forked from now on (those alive keep theirs)."""
        self.layout = layout

    def spawned(self, pid: int, slot: int) -> None:
        self.live[pid] = (slot, Validator(self.layout))

    def _believed(self, board, slot: int, v: Validator) -> list:
        data = board.counters_bytes(slot, v.layout.nbytes)
        return v.take(ct.read(v.layout, data))

    def reaped(self, pid: int, board) -> None:
        """The worker is gone (its slot not yet freed): its last believed counts become
        retired totals."""
        entry = self.live.pop(pid, None)
        if entry is None:
            return
        slot, v = entry
        try:
            cells = self._believed(board, slot, v)
        except Exception:
            cells = v.last  # whatever happened, what was believed before is kept
        retired = self.retired
        for key, value in zip(cell_keys(v.layout), cells):
            if key is not None and value:
                retired[key] = retired.get(key, 0) + value

    def sample(self, board) -> Sample:
        s = Sample()
        counts = s.counts = dict(self.retired)
        layouts = {self.layout}
        for slot, v in list(self.live.values()):
            try:
                cells = self._believed(board, slot, v)
            except Exception:
                cells = v.last
            layout = v.layout
            layouts.add(layout)
            s.in_flight += cells[0]
            for i, pool in enumerate(layout.pools):
                base = layout.pool_base(i)
                s.open[pool] = s.open.get(pool, 0) + cells[base]
                s.parked[pool] = s.parked.get(pool, 0) + cells[base + 1]
            for key, value in zip(cell_keys(layout), cells):
                if key is not None and value:
                    counts[key] = counts.get(key, 0) + value
        for layout in layouts:
            for route in layout.routes:
                if route not in s.routes:
                    s.routes.append(route)
            for pool in layout.pools:
                if pool not in s.pools:
                    s.pools.append(pool)
        return s

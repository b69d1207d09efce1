"""The counters block of a scoreboard slot: a fixed array of 8-byte cells, laid out before the
fork, written by its worker alone with plain stores, read by the master as untrusted input.

The layout is plain data (pools and their routes, decided from the config by pyd/metrics), so
the master and each worker compute the same one. Cells, in order:

  0                      requests in flight in the worker (gauge)
  per pool               open connections, parked connections (gauges), accepted (counter)
  per route              requests by (method, code) (counters), the duration histogram's
                         buckets, one per bound plus +Inf, not cumulative (counters), the
                         duration sum (a double), request and response body bytes (counters)

A route is (pool, location); location "" takes requests no location matched (and, when a
config has more routes than the block holds, those of the routes left out).

`Writer` is the worker's side: a request costs five stores (the gauges are written once a
second). `read` is the master's: every cell
is checked (a count is an integer in [0, MAX_COUNT], a gauge in [0, MAX_GAUGE], the sum a finite
float in [0, MAX_SUM]); `Validator` also holds counts to what the master saw last, so a count
that goes backwards is ignored rather than believed.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left
from dataclasses import dataclass, field

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
# Status codes kept by number; any other counts under its class; "none": nothing was answered.
CODES = ("200", "201", "204", "206", "301", "302", "303", "304", "307", "308", "400", "401",
         "403", "404", "405", "408", "409", "413", "414", "415", "422", "429", "431", "500",
         "501", "502", "503", "504", "505", "1xx", "2xx", "3xx", "4xx", "5xx", "none")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

MAX_COUNT = 2 ** 53  # counts above this are lies (and would not survive a float anyway)
MAX_GAUGE = 2 ** 32
MAX_SUM = 1e15  # seconds

COUNT, GAUGE, SUM = 0, 1, 2
CELL = 8
POOL_CELLS = 3  # open, parked, accepted
ROUTE_REQUESTS = len(METHODS) * len(CODES)
ROUTE_BUCKETS = len(BUCKETS) + 1
ROUTE_CELLS = ROUTE_REQUESTS + ROUTE_BUCKETS + 3  # + sum, bytes in, bytes out
HEAD_CELLS = 1

_METHOD = {m: i for i, m in enumerate(METHODS)}
_OTHER = _METHOD["other"]
_CODE: dict[str, int] = {"": CODES.index("none")}
for _n in range(100, 600):
    _s = str(_n)
    _CODE[_s] = CODES.index(_s) if _s in CODES else CODES.index(f"{_s[0]}xx")
_NC = len(CODES)
_NONE = CODES.index("none")


@dataclass(frozen=True)
class Layout:
    """Where each cell is. `pools` in order; `routes` (pool, location) in order."""

    pools: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()
    kinds: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, pools: dict[str, list[str]], capacity: int) -> Layout:
        """From {pool: [locations]}, keeping at most what `capacity` bytes hold: each pool's ""
        route first, then locations in order while they fit."""
        names = tuple(pools)
        room = capacity // CELL - HEAD_CELLS - POOL_CELLS * len(names)
        routes = [(p, "") for p in names]
        room -= ROUTE_CELLS * len(routes)
        if room < 0:
            return cls((), (), (GAUGE,))
        for p, locations in pools.items():
            for loc in locations:
                if loc and (p, loc) not in routes and room >= ROUTE_CELLS:
                    routes.append((p, loc))
                    room -= ROUTE_CELLS
        kinds = [GAUGE] + [GAUGE, GAUGE, COUNT] * len(names)
        kinds += ([COUNT] * (ROUTE_REQUESTS + ROUTE_BUCKETS) + [SUM, COUNT, COUNT]) * len(routes)
        return cls(names, tuple(routes), tuple(kinds))

    @property
    def cells(self) -> int:
        return HEAD_CELLS + POOL_CELLS * len(self.pools) + ROUTE_CELLS * len(self.routes)

    @property
    def nbytes(self) -> int:
        return self.cells * CELL

    def pool_base(self, i: int) -> int:
        return HEAD_CELLS + POOL_CELLS * i

    def route_base(self, i: int) -> int:
        return HEAD_CELLS + POOL_CELLS * len(self.pools) + ROUTE_CELLS * i


def request_cell(method: str, code: str) -> int:
    """The offset in a route of the (method, code) count; code as CODES names it."""
    return _METHOD.get(method, _OTHER) * _NC + CODES.index(code)


class Writer:
    """The worker's side: plain stores into its own slot's block (`buf`, a writable buffer of
    at least layout.nbytes). No lock: the worker is the only writer."""

    def __init__(self, layout: Layout, buf):
        self.layout = layout
        view = memoryview(buf)[:layout.nbytes]
        self._view = view
        self.q = view.cast("Q")
        self.d = view.cast("d")
        self.q[0:layout.cells] = memoryview(bytes(layout.nbytes)).cast("Q")
        # pool -> location -> the route's first cell; unknown locations go to the pool's ""
        self.routes: dict[str, dict[str, int]] = {}
        for i, (pool, loc) in enumerate(layout.routes):
            self.routes.setdefault(pool, {})[loc] = layout.route_base(i)
        self.pools = {p: layout.pool_base(i) for i, p in enumerate(layout.pools)}
        self.cells: dict[tuple[str, str], int] = {}  # (method, status line) -> offset

    def request(self, pool: str, location: str, method: str, status: str, bytes_in: int,
                bytes_out: int, duration: float) -> None:
        locs = self.routes.get(pool)
        if locs is None:
            return
        base = locs.get(location)
        if base is None:
            base = locs[""]
        q = self.q
        q[base + _METHOD.get(method, _OTHER) * _NC + _CODE.get(status[:3], _NONE)] += 1
        q[base + ROUTE_REQUESTS + bisect_left(BUCKETS, duration)] += 1
        end = base + ROUTE_CELLS
        self.d[end - 3] += duration if duration > 0.0 else 0.0
        q[end - 2] += bytes_in
        q[end - 1] += bytes_out

    def record(self, record) -> None:
        """request() from a web.exchange.RequestRecord, unpacked in one step (pool, location,
        method, target, path, version, status, bytes in and out, duration, and three more; a
        test holds the order)."""
        (pool, location, method, _, _, _, status, bytes_in, bytes_out, duration, _, _,
         _) = record
        locs = self.routes.get(pool)
        if locs is None:
            return
        base = locs.get(location)
        if base is None:
            base = locs[""]
        cell = self.cells.get((method, status))
        if cell is None:
            cell = self._cell(method, status)
        q = self.q
        q[base + cell] += 1
        q[base + ROUTE_REQUESTS + bisect_left(BUCKETS, duration)] += 1
        end = base + ROUTE_CELLS
        if duration > 0.0:
            self.d[end - 3] += duration
        q[end - 2] += bytes_in
        q[end - 1] += bytes_out

    def _cell(self, method: str, status: str) -> int:
        """The (method, code) offset of a status line, remembered for the usual few."""
        cell = _METHOD.get(method, _OTHER) * _NC + _CODE.get(status[:3], _NONE)
        if len(self.cells) < 512:
            self.cells[(method, status)] = cell
        return cell

    def in_flight(self, n: int) -> None:
        self.q[0] = n

    def connections(self, pool: str, open_: int, parked: int, accepted: int) -> None:
        base = self.pools.get(pool)
        if base is not None:
            q = self.q
            q[base] = open_
            q[base + 1] = parked
            q[base + 2] = accepted

    def release(self) -> None:
        """Let go of the views (the mapping cannot be closed while they exist)."""
        self.q.release()
        self.d.release()
        self._view.release()


def read(layout: Layout, data: bytes) -> list:
    """Cells from a copy of a block, each checked on its own: a count or gauge out of range, a
    sum not finite or out of range, reads as None (not believed)."""
    n = layout.cells
    if len(data) < n * CELL:
        return [None] * n
    ints = struct.unpack_from(f"={n}Q", data)
    floats = struct.unpack_from(f"={n}d", data)
    out: list = []
    append = out.append
    for kind, v, f in zip(layout.kinds, ints, floats):
        if kind == COUNT:
            append(v if v <= MAX_COUNT else None)
        elif kind == GAUGE:
            append(v if v <= MAX_GAUGE else None)
        else:
            append(f if math.isfinite(f) and 0.0 <= f <= MAX_SUM else None)
    return out


class Validator:
    """What the master believes of one live worker's block: counts and sums never go down.

    `take(cells)` returns the believed cells: a count or sum that is invalid or lower than the
    last believed value keeps that value; an invalid gauge reads 0."""

    __slots__ = ("layout", "last")

    def __init__(self, layout: Layout):
        self.layout = layout
        self.last: list = [0] * layout.cells
        for i, k in enumerate(layout.kinds):
            if k == SUM:
                self.last[i] = 0.0

    def take(self, cells: list) -> list:
        last = self.last
        out = []
        append = out.append
        for kind, v, old in zip(self.layout.kinds, cells, last):
            if kind == GAUGE:
                append(0 if v is None else v)
            elif v is None or v < old:
                append(old)
            else:
                append(v)
        # Gauges are not kept: a gauge may go down.
        self.last = out
        return out

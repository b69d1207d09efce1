"""The counters block: its layout, the worker's stores, the master's checks (a lying slot),
and the folding of a reaped worker's totals into retired totals."""

from __future__ import annotations

import struct

import pytest

from pyd.ipc import counters as ct
from pyd.ipc import scoreboard as sb
from pyd.metrics.collect import Collector

POOLS = {"HTTPServer": ["/", "/api/"], "FastCGI": []}


@pytest.fixture
def board():
    b = sb.Scoreboard(4, counters=64 * 1024)
    b.counters_used = ct.Layout.of(POOLS, b.counters_capacity).nbytes
    yield b
    b.close()


def writer(board, slot, layout):
    return ct.Writer(layout, board.counters_buffer(slot))


def test_the_layout_is_fixed_by_pools_and_routes():
    layout = ct.Layout.of(POOLS, 1 << 20)
    assert layout.pools == ("HTTPServer", "FastCGI")
    assert layout.routes == (("HTTPServer", ""), ("FastCGI", ""), ("HTTPServer", "/"),
                             ("HTTPServer", "/api/"))
    assert layout == ct.Layout.of(POOLS, 1 << 20)  # the master and each worker agree
    assert len(layout.kinds) == layout.cells
    assert layout.nbytes == 8 * (1 + 3 * 2 + ct.ROUTE_CELLS * 4)
    assert ct.BUCKETS == (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10)


def test_routes_past_the_capacity_count_under_the_pools_catch_all():
    small = ct.Layout.of(POOLS, 8 * (1 + 6 + ct.ROUTE_CELLS * 3))
    assert small.routes == (("HTTPServer", ""), ("FastCGI", ""), ("HTTPServer", "/"))
    assert ct.Layout.of(POOLS, 16).routes == ()


def test_a_request_is_a_handful_of_stores(board):
    layout = ct.Layout.of(POOLS, board.counters_capacity)
    slot = board.claim(1, 1)
    w = writer(board, slot, layout)
    w.request("HTTPServer", "/api/", "GET", "200 OK", 10, 5, 0.003)
    w.request("HTTPServer", "/api/", "BREW", "418 I'm a teapot", 0, 0, 2.0)
    w.request("HTTPServer", "/gone/", "POST", "", 0, 0, 20.0)  # unknown location: the pool's ""
    w.request("nobody", "/", "GET", "200 OK", 0, 0, 0.1)  # unknown pool: not counted
    w.connections("HTTPServer", 7, 3, 11)
    w.in_flight(2)
    cells = ct.read(layout, board.counters_bytes(slot, layout.nbytes))
    base = layout.route_base(3)
    assert cells[base + ct.request_cell("GET", "200")] == 1
    assert cells[base + ct.request_cell("other", "4xx")] == 1
    buckets = cells[base + ct.ROUTE_REQUESTS: base + ct.ROUTE_REQUESTS + ct.ROUTE_BUCKETS]
    assert buckets[0] == 1 and buckets[ct.BUCKETS.index(2.5)] == 1 and sum(buckets) == 2
    assert cells[base + ct.ROUTE_CELLS - 3] == pytest.approx(2.003)
    assert cells[base + ct.ROUTE_CELLS - 2:base + ct.ROUTE_CELLS] == [10, 5]
    catch_all = layout.route_base(0)
    assert cells[catch_all + ct.request_cell("POST", "none")] == 1
    assert cells[catch_all + ct.ROUTE_REQUESTS + ct.ROUTE_BUCKETS - 1] == 1  # +Inf
    assert cells[layout.pool_base(0):layout.pool_base(0) + 3] == [7, 3, 11]
    assert cells[0] == 2
    w.release()


def test_claim_clears_the_block_of_the_last_worker(board):
    layout = ct.Layout.of(POOLS, board.counters_capacity)
    slot = board.claim(1, 1)
    w = writer(board, slot, layout)
    w.request("HTTPServer", "/", "GET", "200 OK", 1, 1, 0.1)
    w.release()
    board.release(slot, sb.R_REQUESTS)
    assert board.claim(2, 1) == slot
    assert set(board.counters_bytes(slot, layout.nbytes)) == {0}


def _poke(board, slot, cell, fmt, value):
    struct.pack_into("=" + fmt, board._mem(slot), sb._MAP_SIZE + 8 * cell, value)


def test_a_lying_slot_is_not_believed(board):
    layout = ct.Layout.of(POOLS, board.counters_capacity)
    c = Collector()
    c.configure(layout)
    slot = board.claim(1, 1)
    c.spawned(100, slot)
    w = writer(board, slot, layout)
    for _ in range(3):
        w.request("HTTPServer", "/", "GET", "200 OK", 10, 20, 0.01)
    w.connections("HTTPServer", 4, 1, 3)
    key = ("req", "HTTPServer", "/", "GET", "200")
    assert c.sample(board).counts[key] == 3
    base = layout.route_base(2)
    get200 = base + ct.request_cell("GET", "200")
    total = base + ct.ROUTE_CELLS - 3
    _poke(board, slot, get200, "Q", 1)  # backwards: the last believed value stays
    _poke(board, slot, total, "d", float("nan"))
    _poke(board, slot, base + ct.ROUTE_CELLS - 1, "Q", 2 ** 64 - 1)  # out of range
    _poke(board, slot, layout.pool_base(0), "Q", 2 ** 63)  # a gauge out of range reads 0
    _poke(board, slot, 0, "d", float("-inf"))
    s = c.sample(board)
    assert s.counts[key] == 3
    assert s.counts[("sum", "HTTPServer", "/")] == pytest.approx(0.03)
    assert s.counts[("out", "HTTPServer", "/")] == 60
    assert s.open["HTTPServer"] == 0 and s.parked["HTTPServer"] == 1
    assert s.in_flight == 0
    _poke(board, slot, total, "d", -1.0)
    assert c.sample(board).counts[("sum", "HTTPServer", "/")] == pytest.approx(0.03)
    _poke(board, slot, get200, "Q", 2 ** 53)  # the largest count believed
    assert c.sample(board).counts[key] == 2 ** 53
    w.release()


def test_a_reaped_workers_totals_are_retired_and_stay(board):
    layout = ct.Layout.of(POOLS, board.counters_capacity)
    c = Collector()
    c.configure(layout)
    key = ("req", "HTTPServer", "/", "GET", "200")
    seen = []
    for pid in (100, 101, 102):  # one worker after another in the same slot
        slot = board.claim(1, 1)
        c.spawned(pid, slot)
        w = writer(board, slot, layout)
        for _ in range(5):
            w.request("HTTPServer", "/", "GET", "200 OK", 0, 0, 0.2)
        w.connections("HTTPServer", 1, 0, 2)
        seen.append(c.sample(board).counts[key])
        w.release()
        c.reaped(pid, board)
        board.release(slot, sb.R_REQUESTS)
        seen.append(c.sample(board).counts[key])
    assert seen == [5, 5, 10, 10, 15, 15]
    s = c.sample(board)
    assert s.counts[("accepted", "HTTPServer")] == 6
    assert s.counts[("bucket", "HTTPServer", "/", ct.BUCKETS.index(0.25))] == 15
    assert "HTTPServer" not in s.open  # gauges of the dead are not kept


def test_a_new_layout_applies_to_workers_forked_after_it(board):
    c = Collector()
    old = ct.Layout.of({"HTTPServer": ["/"]}, board.counters_capacity)
    new = ct.Layout.of({"HTTPServer": ["/", "/v2/"]}, board.counters_capacity)
    board.counters_used = new.nbytes
    c.configure(old)
    a = board.claim(1, 1)
    c.spawned(1, a)
    wa = writer(board, a, old)
    c.configure(new)
    b = board.claim(2, 2)
    c.spawned(2, b)
    wb = writer(board, b, new)
    wa.request("HTTPServer", "/", "GET", "200 OK", 0, 0, 0.0)
    wb.request("HTTPServer", "/", "GET", "200 OK", 0, 0, 0.0)
    wb.request("HTTPServer", "/v2/", "GET", "200 OK", 0, 0, 0.0)
    s = c.sample(board)
    assert s.counts[("req", "HTTPServer", "/", "GET", "200")] == 2
    assert s.counts[("req", "HTTPServer", "/v2/", "GET", "200")] == 1
    wa.release()
    wb.release()


def test_the_pool_label_is_the_one_requests_carry(tmp_path):
    from pyd.config import load
    from pyd.metrics.registry import counted_pools, pool_label
    from pyd.pools.base import label

    conf = tmp_path / "pyd.conf"
    conf.write_text("Pool:HTTPServer { listen 127.0.0.1:1; app a:b; location /x/ { app a:c; } }\n"
                       "Pool:HTTPServer:admin { listen 127.0.0.1:2; app a:b; }\n"
                       "Pool:FastCGI { listen 127.0.0.1:3; }\n"
                       "Pool:echo { class a:B; listen 127.0.0.1:4; }\n")
    config = load(str(conf), env={})
    for section in config.pools:
        assert pool_label(section) == label(section)
    assert counted_pools(config) == {"HTTPServer": ["/", "/x/"], "HTTPServer:admin": ["/"],
                                     "FastCGI": [], "echo": []}


def test_a_request_record_is_counted_in_one_unpacking(board):
    from pyd.web.exchange import RequestRecord

    assert RequestRecord._fields == ("pool", "location", "method", "target", "path",
                                     "version", "status", "bytes_in", "bytes_out", "duration",
                                     "client", "time", "headers")
    layout = ct.Layout.of(POOLS, board.counters_capacity)
    slot = board.claim(1, 1)
    w = writer(board, slot, layout)
    w.record(RequestRecord("HTTPServer", "/api/", "PUT", b"/api/x", "/api/x", "1.1",
                           "204 No Content", 3, 0, 0.5, "127.0.0.1", 0.0, ()))
    w.record(RequestRecord("HTTPServer", "/api/", "PUT", b"/api/x", "/api/x", "1.1",
                           "204 No Content", 0, 0, 0.0, "127.0.0.1", 0.0, ()))  # remembered
    cells = ct.read(layout, board.counters_bytes(slot, layout.nbytes))
    base = layout.route_base(3)
    assert cells[base + ct.request_cell("PUT", "204")] == 2
    assert w.cells == {("PUT", "204 No Content"): ct.request_cell("PUT", "204")}
    assert cells[base + ct.ROUTE_REQUESTS + ct.BUCKETS.index(0.5)] == 1
    assert cells[base + ct.ROUTE_REQUESTS] == 1
    assert cells[base + ct.ROUTE_CELLS - 3:base + ct.ROUTE_CELLS] == [0.5, 3, 0]
    w.release()

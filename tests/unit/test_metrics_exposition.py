"""The master's metrics answer: exposition formats parsed by prometheus_client, a lying slot
that leaves the scrape valid, /health and /ready, the strict little responder."""

from __future__ import annotations

import math
import struct
from collections import Counter
from types import SimpleNamespace

import gevent
import gevent.pool
import pytest
from gevent import socket
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as parse

from pyd.ipc import counters as ct
from pyd.ipc import scoreboard as sb
from pyd.master import metrics_server as ms
from pyd.master.fleet import WorkerInfo
from pyd.metrics.exposition import wants_openmetrics

POOLS = {"HTTPServer": ["/", "/api/"]}


@pytest.fixture
def master():
    board = sb.Scoreboard(4, counters=64 * 1024)
    m = SimpleNamespace(scoreboard=board, workers={}, exits=Counter(), target=1, stopping=None,
                        listeners={}, greenlets=gevent.pool.Group())
    metrics = ms.Metrics(m)
    layout = ct.Layout.of(POOLS, board.counters_capacity)
    board.counters_used = layout.nbytes
    metrics.collector.configure(layout)
    m.metrics = metrics
    writers = []

    def spawn(pid: int, phase: str = "serving"):
        slot = board.claim(1, 1)
        metrics.spawned(pid, slot)
        m.workers[pid] = WorkerInfo(pid, slot, len(m.workers) + 1, 1, 0.0, phase=phase)
        w = ct.Writer(layout, board.counters_buffer(slot))
        writers.append(w)
        return w

    m.spawn = spawn
    yield m
    for w in writers:
        w.release()
    board.close()


def scrape(m, openmetrics: bool = False) -> dict:
    from pyd.metrics.exposition import render

    text = render(m.metrics.families(), openmetrics).decode()
    families = list(om_parse(text) if openmetrics else parse(text))
    return {s.name + repr(sorted(s.labels.items())): s.value
            for f in families for s in f.samples}, {f.name: f for f in families}, text


def value(samples: dict, name: str, **labels) -> float:
    return samples[name + repr(sorted(labels.items()))]


def test_the_series_in_both_formats(master):
    w = master.spawn(10)
    for _ in range(4):
        w.request("HTTPServer", "/api/", "GET", "200 OK", 3, 7, 0.02)
    w.request("HTTPServer", "/", "POST", "500 Internal Server Error", 0, 0, 0.3)
    w.connections("HTTPServer", 5, 2, 9)
    master.exits["requests"] += 2
    master.metrics.reloads["applied"] += 1
    for om in (False, True):
        samples, families, text = scrape(master, om)
        api = dict(pool="HTTPServer", location="/api/")
        assert value(samples, "pyd_http_requests_total", method="GET", code="200", **api) == 4
        assert value(samples, "pyd_http_requests_total", pool="HTTPServer", location="/",
                     method="POST", code="500") == 1
        assert value(samples, "pyd_http_request_duration_seconds_bucket", le="0.01", **api) == 0
        assert value(samples, "pyd_http_request_duration_seconds_bucket", le="0.025", **api) == 4
        assert value(samples, "pyd_http_request_duration_seconds_count", **api) == 4
        assert value(samples, "pyd_http_request_duration_seconds_sum", **api) == \
            pytest.approx(0.08)
        assert value(samples, "pyd_http_request_bytes_total", **api) == 12
        assert value(samples, "pyd_http_response_bytes_total", **api) == 28
        assert value(samples, "pyd_connections_open", pool="HTTPServer") == 5
        assert value(samples, "pyd_connections_parked", pool="HTTPServer") == 2
        assert value(samples, "pyd_connections_accepted_total", pool="HTTPServer") == 9
        assert value(samples, "pyd_workers", phase="serving") == 1
        assert value(samples, "pyd_worker_starts_total") == 3
        assert value(samples, "pyd_worker_exits_total", reason="requests") == 2
        assert value(samples, "pyd_config_reloads_total", outcome="applied") == 1
        assert value(samples, "pyd_master_rss_bytes") > 0
        assert families["pyd_http_request_duration_seconds"].type == "histogram"
        assert families["pyd_http_requests"].type == "counter"
        assert text.endswith("# EOF\n") == om
        assert "path" not in text


def _poke(board, slot, cell, fmt, v):
    struct.pack_into("=" + fmt, board._mem(slot), sb._MAP_SIZE + 8 * cell, v)


def test_a_lying_slot_leaves_the_scrape_valid(master):
    honest = master.spawn(10)
    liar = master.spawn(11)
    honest.request("HTTPServer", "/", "GET", "200 OK", 1, 1, 0.001)
    liar.request("HTTPServer", "/", "GET", "200 OK", 1, 1, 0.001)
    scrape(master)
    layout = master.metrics.collector.layout
    slot = master.workers[11].slot
    board = master.scoreboard
    for cell, kind in enumerate(layout.kinds):  # every cell: huge, negative, NaN
        if kind == ct.SUM:
            _poke(board, slot, cell, "d", float("nan") if cell % 2 else -1e300)
        else:
            _poke(board, slot, cell, "q", -1 if cell % 2 else 2 ** 62)
    struct.pack_into("=Q", board._mem(slot), 32, 2 ** 64 - 1)  # rss in the head, a lie too
    for om in (False, True):
        samples, _, _ = scrape(master, om)
        for v in samples.values():
            assert math.isfinite(v) and v >= 0
        assert value(samples, "pyd_http_requests_total", pool="HTTPServer", location="/",
                     method="GET", code="200") == 2
        assert value(samples, "pyd_http_requests_in_flight") == 0
        rss = [v for k, v in samples.items() if k.startswith("pyd_worker_rss_bytes")]
        assert all(v <= ms.MAX_RSS for v in rss)
    # wholly random bytes: the scrape still parses
    import os

    board._mem(slot)[sb._MAP_SIZE:sb._MAP_SIZE + layout.nbytes] = os.urandom(layout.nbytes)
    samples, _, _ = scrape(master)
    assert all(math.isfinite(v) and v >= 0 for v in samples.values())


def test_ready_and_health(master):
    master.spawn(10, phase="booting")
    assert not master.metrics.ready()
    master.workers[10].phase = "serving"
    assert master.metrics.ready()
    master.workers[10].phase = "retiring"  # it still serves until its successor does
    assert master.metrics.ready()
    master.stopping = "graceful"
    assert not master.metrics.ready()
    assert master.metrics.healthy()
    master.metrics.turned -= ms.HEALTH_STALE + 1
    assert not master.metrics.healthy()


@pytest.mark.parametrize("accept,om", [
    (None, False), (b"text/plain", False),
    (b"application/openmetrics-text; version=1.0.0,text/plain;q=0.5", True),
    (b"application/openmetrics-text;q=0", False)])
def test_accept_asks_for_openmetrics(accept, om):
    assert wants_openmetrics(accept) == om


def _exchange(master, data: bytes, wait: float = 2.0) -> bytes:
    server, client = socket.socketpair()
    master.metrics.clients += 1
    g = gevent.spawn(master.metrics._serve, server)
    client.sendall(data)
    out = b""
    with gevent.Timeout(wait, False):
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            out += chunk
    g.join(wait)
    client.close()
    assert master.metrics.clients == 0
    return out


def test_the_responder(master, monkeypatch):
    master.spawn(10, phase="booting")
    out = _exchange(master, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"version=0.0.4" in out
    assert b"Connection: close" in out and b"pyd_build_info" in out
    out = _exchange(master, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                            b"Accept: application/openmetrics-text\r\n\r\n")
    assert b"application/openmetrics-text" in out and out.endswith(b"# EOF\n")
    assert _exchange(master, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 503")
    assert _exchange(master, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert _exchange(master, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert _exchange(master, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
                             b"x").startswith(b"HTTP/1.1 405")
    assert _exchange(master, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 4")
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 20000 + b"\r\n\r\n"
    assert _exchange(master, big).startswith(b"HTTP/1.1 431")
    monkeypatch.setattr(ms, "READ_DEADLINE", 0.2)
    assert _exchange(master, b"GET /metrics HTTP/1.1\r\n") == b""  # too slow: closed


def test_pool_metrics_is_the_masters_alone(tmp_path):
    from pyd.config import load
    from pyd.metrics.registry import counted_pools, served_by_master
    from pyd.worker.main import build_pools

    conf = tmp_path / "pyd.conf"
    conf.write_text("Pool:Metrics { listen 127.0.0.1:9100; allowed-clients 10.0.0.0/8; }\n")
    config = load(str(conf), env={})
    (section,) = config.pools
    assert served_by_master(section)
    assert counted_pools(config) == {}
    assert build_pools(config, {}, {}) == []  # no worker builds it

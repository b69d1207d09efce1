"""The way lines travel: frames through the pipe, the dispatcher, file rotation and compression,
degraded targets, and `pyd log`'s reading of the file. Unit tests, in process."""

from __future__ import annotations

import gzip
import io
import logging
import os
import time

import pytest

from pyd.cli.follow import Filter, Follower, LogError, last_records, open_log, show
from pyd.log import compress, transport
from pyd.log.files import FileSink, next_boundary, rotated_name
from pyd.log.health import Health
from pyd.log.sinks import StreamSink
from pyd.log.transport import (
    DROPPED,
    HEADER,
    MESSAGES,
    MORE,
    PAYLOAD_MAX,
    Dispatcher,
    WorkerWriter,
    datagrams,
    make_channel,
    pack_messages,
    unpack_messages,
)


class Collect:
    """A target that keeps what it is given."""

    def __init__(self, kind="lines", label="t"):
        self.kind, self.label, self.got = kind, label, []

    def push(self, data: bytes) -> None:
        self.got.append(data)


# -- datagrams and the dispatcher ----------------------------------------------------------------

def test_datagrams_carry_whole_lines():
    data = b"".join(b"line %05d %s\n" % (i, b"x" * 50) for i in range(5000))
    out = datagrams(3, data)
    assert len(out) > 1 and all(len(d) <= transport.DGRAM_MAX for d in out)
    payloads = []
    for d in out:
        assert HEADER.unpack_from(d) == (3, 0)
        payload = d[HEADER.size:]
        assert payload.endswith(b"\n")  # whole lines only
        payloads.append(payload)
    assert b"".join(payloads) == data


def test_a_line_longer_than_a_datagram_goes_in_pieces():
    long = b"y" * (PAYLOAD_MAX * 2 + 10) + b"\n"
    assert [HEADER.unpack_from(d)[1] for d in datagrams(1, long)] == [MORE, MORE, 0]


def test_messages_are_length_prefixed_many_to_a_datagram():
    messages = [b"m%d" % i * (i % 7) for i in range(3000)] + [b"z" * (PAYLOAD_MAX + 3)]
    units = pack_messages(messages)
    assert len(units) >= 2
    got = []
    for unit in units:
        got += unpack_messages(unit)
    assert got == messages


def dispatcher(targets, health=None):
    """A dispatcher (its thread not running) with one sender's channel: (dispatcher, channel,
    the sender's end, the master's end of its own channel)."""
    control, stop = make_channel()
    d = Dispatcher(control, targets, health or Health())
    r, w = make_channel()
    return d, d.add(r), w, stop


def test_dispatcher_joins_pieces_per_process_and_batches_lines():
    """The pieces of a unit are joined per process on a channel: those the kernel names."""
    lines, messages = Collect(), Collect("messages")
    d, channel, _, _ = dispatcher({1: lines, 2: messages})
    a = datagrams(1, b"A" * (PAYLOAD_MAX + 100) + b"\n")
    b = datagrams(1, b"b1\nb2\n")
    big = b"M" * (PAYLOAD_MAX + 5)
    m = [x for unit in pack_messages([b"small", big]) for x in datagrams(2, unit, MESSAGES)]
    for datagram, pid in ((a[0], 10), (b[0], 11), (m[0], 11), (a[1], 10), (m[1], 11),
                          (m[2], 11)):
        assert d.dispatch(datagram, channel, pid) is None
    d.deliver()
    assert lines.got == [b"b1\nb2\n" + b"A" * (PAYLOAD_MAX + 100) + b"\n"]
    assert messages.got == [b"small", big]


def test_dispatcher_counts_what_workers_dropped_and_stops_only_for_the_master():
    health = Health()
    d, channel, w, stop = dispatcher({4: Collect(label="/var/log/x.log")}, health)
    d.dispatch(HEADER.pack(4, DROPPED) + b"17", channel, 9)
    assert health.totals == {"/var/log/x.log": 17}
    with pytest.raises(transport.Malformed):  # a sender cannot say STOP
        d.dispatch(HEADER.pack(4, transport.STOP), channel, 9)
    os.write(w, HEADER.pack(4, transport.STOP))
    d.round(d.poller.poll(1))
    assert not d.stopped and health.totals[transport.REFUSED] == 1
    os.write(stop, HEADER.pack(0, transport.STOP))  # the master's own channel
    d.round(d.poller.poll(1))
    assert d.stopped


def test_worker_writer_never_blocks_and_counts_what_it_drops(monkeypatch):
    monkeypatch.setattr(transport, "BACKLOG_LIMIT", 256 << 10)
    r, w = make_channel()
    sent = 300000  # 28 MB while nobody reads: more than the socket and the backlog hold
    try:
        writer = WorkerWriter(w)
        started = time.monotonic()
        for i in range(sent):
            writer.put_line(1, f"line {i:06d} {'z' * 80}\n")
        writer.flush()
        assert time.monotonic() - started < 10
        assert writer.backlog_bytes <= 256 << 10
        lines, health = Collect(label="t"), Health()
        d = Dispatcher(make_channel()[0], {1: lines}, health)
        channel = d.add(r)
        for _ in range(100):  # the master reads at last: the backlog and the drop count follow
            d.read(channel)
            if not writer.backlog and not writer.dropped:
                break
            writer.flush()
        d.deliver()
        numbers = [int(x.split()[1]) for x in b"".join(lines.got).decode().splitlines()]
        assert numbers == sorted(set(numbers)) and len(numbers) > 1000  # in order, none twice
        assert health.totals["t"] > 0  # some were dropped, and said so
        assert len(numbers) + health.totals["t"] == sent  # nothing vanished unaccounted
    finally:
        os.close(w)


def test_access_lines_are_built_in_a_batch_at_the_next_flush():
    """The access log gathers what its lines need; the worker's writer has them built and
    sent with its next flush, in order, each stamped with its request's time."""
    from pyd.log.formats import TextFormat
    from pyd.log.handler import RouterHandler, mark_preformatted, set_fast_handler
    from pyd.log.routing import Channels, Route, Router
    from pyd.web.accesslog import AccessLog
    from pyd.web.exchange import RequestRecord

    r, w = make_channel()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        writer = WorkerWriter(w)
        handler = RouterHandler(Router([Route(Channels(("*",)), logging.INFO, 1, TextFormat(),
                                              main=True)]), writer, os.getpid())
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        mark_preformatted(("pyd.test.access",))
        set_fast_handler(handler)
        access = AccessLog("combined", "HTTPServer", logging.getLogger("pyd.test.access"))
        for i in range(3):
            access(RequestRecord("HTTPServer", "/", "GET", b"/%d" % i, f"/{i}", "1.1",
                                 "200 OK", 0, 5, 0.001, "10.0.0.1", time.time(),
                                 [(b"User-Agent", b"t")]))
        assert len(access.pending) == 3 and not writer.lines  # nothing built yet
        assert writer.armed  # ... but a flush is due
        stamp = access.pending[0].time
        writer.flush()
        assert not access.pending and not writer.before
        got = os.read(r, 1 << 16)[transport.HEADER.size:].decode().splitlines()
        assert [x.split('"')[1] for x in got] == ["GET /0 HTTP/1.1", "GET /1 HTTP/1.1",
                                                  "GET /2 HTTP/1.1"]
        prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        assert all(x.startswith(prefix) and "pyd.test.access: 10.0.0.1 - - [" in x for x in got)
    finally:
        set_fast_handler(None)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        os.close(r)
        os.close(w)


# -- files ---------------------------------------------------------------------------------------

def make_sink(tmp_path, **kw):
    health = Health()
    keeper = compress.Housekeeper(health)
    sink = FileSink("file:x", str(tmp_path / "app.log"), health, str(tmp_path / "app.log"),
                    housekeeper=keeper, **kw)
    return sink, keeper, health


def run_housekeeper(keeper):
    while keeper._jobs:
        keeper._do(*keeper._jobs.popleft())


def read_all(tmp_path, name="app.log") -> list[str]:
    lines = []
    for p in sorted(tmp_path.iterdir()):
        if not p.name.startswith(name):
            continue
        if p.name.endswith(".gz"):
            lines += gzip.decompress(p.read_bytes()).decode().splitlines()
        elif p.name.endswith(".zst"):
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(p.open("rb")) as f:
                lines += f.read().decode().splitlines()
        else:
            lines += p.read_text().splitlines()
    return lines


@pytest.mark.parametrize("method", ["gzip", "zstd", "off"])
def test_rotation_by_size_keeps_every_line_whole(tmp_path, method):
    sink, keeper, health = make_sink(tmp_path, rotate_size=4096, keep=0, compress=method)
    sent = [f"line {i:05d} {'p' * (i % 70)}" for i in range(2000)]
    batch = []
    for i, line in enumerate(sent):
        batch.append((line + "\n").encode())
        if i % 37 == 0:
            sink.deliver(batch)
            batch = []
    sink.deliver(batch)
    run_housekeeper(keeper)
    rotated = [p for p in tmp_path.iterdir() if p.name != "app.log"]
    assert len(rotated) > 20
    suffix = {"gzip": ".gz", "zstd": ".zst", "off": ""}[method]
    assert all(p.name.endswith(suffix) for p in rotated) and not any(
        p.name.endswith(".tmp") for p in rotated)
    for p in rotated:  # no rotated file much over the size, and none cut mid-line
        data = p.read_bytes() if method == "off" else None
        if data is not None:
            assert len(data) <= 4096 and data.endswith(b"\n")
    assert sorted(read_all(tmp_path)) == sorted(sent)
    assert not health.totals


def test_rotate_keep_prunes_the_oldest(tmp_path):
    sink, keeper, _ = make_sink(tmp_path, rotate_size=100, keep=3, compress="gzip")
    for i in range(10):
        sink.deliver([b"%03d %s\n" % (i, b"q" * 120)])
    run_housekeeper(keeper)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.endswith(".gz")]) == 3
    kept = read_all(tmp_path)
    assert [x[:3] for x in sorted(kept)] == ["007", "008", "009"]


def test_rotated_names_are_unique_within_a_second(tmp_path):
    path = str(tmp_path / "a.log")
    now = time.time()
    first = rotated_name(path, now)
    open(first + ".gz", "w").close()
    second = rotated_name(path, now)
    assert second == first + "-2"
    assert compress.rotated_pattern(path).fullmatch(os.path.basename(second))


def test_leftovers_are_compressed_at_the_next_start(tmp_path):
    path = tmp_path / "app.log"
    left = tmp_path / "app.log-20240101-000000"
    left.write_text("old\n")
    (tmp_path / "app.log-20240101-000000.gz.tmp").write_text("half")
    health = Health()
    keeper = compress.Housekeeper(health)
    keeper.resume(str(path), "gzip", 7)
    run_housekeeper(keeper)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log-20240101-000000.gz"]
    assert gzip.decompress((tmp_path / "app.log-20240101-000000.gz").read_bytes()) == b"old\n"


def test_time_rotation_boundaries():
    now = time.time()
    nxt = next_boundary(now, 3600)
    assert now < nxt <= now + 3600
    assert time.localtime(nxt).tm_min == 0 and time.localtime(nxt).tm_sec == 0
    day = next_boundary(now, 86400)
    assert time.localtime(day)[3:6] == (0, 0, 0) or time.localtime(day).tm_isdst != \
        time.localtime(now).tm_isdst


def test_time_rotation_skips_an_empty_file(tmp_path):
    sink, keeper, _ = make_sink(tmp_path, rotate_every=3600)
    sink.next_rotation = time.time() - 1
    sink.tick()
    assert [p.name for p in tmp_path.iterdir()] == ["app.log"]
    sink.deliver([b"x\n"])
    sink.next_rotation = time.time() - 1
    sink.tick()
    assert len(list(tmp_path.iterdir())) == 2


def test_a_deleted_directory_is_recreated(tmp_path):
    d = tmp_path / "logs"
    health = Health()
    sink = FileSink("k", "l", health, str(d / "app.log"))
    sink.deliver([b"before\n"])
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    sink.deliver([b"after\n"])
    assert (d / "app.log").read_text() == "after\n"


def test_a_full_disk_costs_lines_not_the_thread(tmp_path):
    health = Health()
    sink = FileSink("k", "/dev/full", health, "/dev/full", rotate_size=10)
    sink.deliver([b"a\n", b"b\n"])
    assert health.totals == {"/dev/full": 2}
    message = health.report()
    assert "/dev/full: 2 lost (No space left on device)" in message
    assert health.report() is None  # at most once a minute


def test_health_reports_on_stderr_then_waits_a_minute(capfd):
    reported = []
    health = Health(reported.append)
    health.lost("gelf udp://h:12201", 3, ConnectionRefusedError(111, "Connection refused"))
    assert health.due()
    health.report(now=1000.0)
    assert "pyd: logging degraded: gelf udp://h:12201: 3 lost (Connection refused)" in \
        capfd.readouterr().err
    health.lost("gelf udp://h:12201", 1)
    assert not health.due(now=1030.0) and health.due(now=1061.0)
    assert reported and "3 lost" in reported[0]


def test_stream_sink_reopen_and_stop_without_thread(tmp_path):
    r, w = os.pipe()
    sink = StreamSink("stdout", "stdout", Health(), w)
    sink.deliver([b"one\n", b"two\n"])
    sink.stop()
    assert sink.done.wait(1)
    os.close(w)
    assert os.read(r, 100) == b"one\ntwo\n"
    os.close(r)


# -- reading the log (pyd log) -------------------------------------------------------------------

def write_log(path, records):
    with open(path, "w") as f:
        for i, (level, channel, message) in enumerate(records):
            f.write(f"2024-05-01 12:00:{i % 60:02d},000 {level:<7} [42] {channel}: {message}\n")


def test_last_records_filters_and_keeps_tracebacks(tmp_path):
    path = tmp_path / "pyd.log"
    records = [("INFO", "pyd.master", f"m{i}") for i in range(3000)]
    records.insert(2990, ("ERROR", "shop.views", "failed\n  Traceback\n  ValueError"))
    write_log(path, records)
    with open(path, "rb") as f:
        got, pos = last_records(f, 2, Filter(level="error"))
    assert pos == path.stat().st_size
    assert len(got) == 1 and got[0][0].endswith(b"shop.views: failed") and len(got[0]) == 3
    with open(path, "rb") as f:
        got, _ = last_records(f, 5, Filter(channel="pyd.*"))
    assert [r[0].rsplit(b" ", 1)[1] for r in got] == [b"m2995", b"m2996", b"m2997", b"m2998",
                                                     b"m2999"]


def test_follower_reads_across_a_rotation(tmp_path):
    path = tmp_path / "pyd.log"
    path.write_text("a\nb\n")
    f = open(path, "rb")
    follower = Follower(str(path), f, 0)
    assert follower.read() == [b"a", b"b"]
    with open(path, "a") as out:
        out.write("c\npart")
    assert follower.read() == [b"c"]
    with open(path, "a") as out:
        out.write("ial\n")
    os.rename(path, tmp_path / "pyd.log-1")
    assert follower.read() == [b"partial"]
    path.write_text("new1\n")
    assert follower.read() == [b"new1"]
    with open(tmp_path / "pyd.log-1", "a") as old:  # a late line in the old file is gone: the
        old.write("late\n")                        # new file is the one followed now
    with open(path, "a") as out:
        out.write("new2\n")
    assert follower.read() == [b"new2"]


def test_show_and_missing_or_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "pyd.log"
    with pytest.raises(LogError, match="does not exist"):
        show(str(path), out=io.BytesIO())
    write_log(path, [("INFO", "a", "1"), ("WARNING", "b", "2"), ("INFO", "a", "3")])
    out = io.BytesIO()
    show(str(path), lines=2, out=out, colour=False)
    assert out.getvalue().decode().splitlines()[-1].endswith("a: 3")
    assert len(out.getvalue().splitlines()) == 2
    with pytest.raises(LogError, match="is a directory"):
        open_log(str(tmp_path), False)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(LogError, match="permission denied"):
        open_log(str(path), False)


def test_bad_level_filter():
    with pytest.raises(ValueError, match="unknown level"):
        Filter(level="loud")

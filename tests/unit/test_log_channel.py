"""The log channel from the master's side, fed as a hostile worker would: malformed datagrams,
pieces that never end, floods, descriptors sent along. Each costs what it carries, never the
dispatcher, another channel or the master's memory. Unit tests, in process (real sockets)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from pyd.log import transport
from pyd.log.health import Health
from pyd.log.transport import (
    DROPPED,
    HEADER,
    MESSAGES,
    MORE,
    REFUSED,
    STOP,
    Dispatcher,
    Malformed,
    datagrams,
    make_channel,
    pack_messages,
)


class Collect:
    def __init__(self, kind="lines", label="t"):
        self.kind, self.label, self.got = kind, label, []

    def push(self, data: bytes) -> None:
        self.got.append(data)


@pytest.fixture
def world():
    """A dispatcher (its thread not running) with targets 1 (lines) and 2 (messages), and a
    factory of senders' channels: new() -> (channel, the sender's end)."""
    lines, messages, health = Collect(), Collect("messages"), Health()
    control, stop = make_channel()
    d = Dispatcher(control, {1: lines, 2: messages}, health)
    ends = [stop]

    def new():
        r, w = make_channel()
        ends.append(w)
        return d.add(r), w

    d.new, d.lines, d.messages, d.stop_end = new, lines, messages, stop
    yield d
    for fd in ends:
        try:
            os.close(fd)
        except OSError:
            pass
    d.close_in_child()


def refused(d) -> int:
    return d.health.totals.get(REFUSED, 0)


def send_all(fd: int, items) -> None:
    for datagram in items:
        os.write(fd, datagram)


BAD = [
    b"", b"\x01", b"\x01\x00",  # shorter than a header (the empty one: not the end)
    HEADER.pack(1, STOP),  # only the master's own channel says STOP
    HEADER.pack(1, 0x10) + b"x\n", HEADER.pack(1, 0xff) + b"x\n",  # unknown flags
    HEADER.pack(1, DROPPED | MORE) + b"3",
    HEADER.pack(9, 0) + b"no such target\n",
    HEADER.pack(1, DROPPED) + b"many", HEADER.pack(1, DROPPED) + b"9" * 5000,
    HEADER.pack(1, DROPPED), HEADER.pack(1, DROPPED) + b"-1",
    HEADER.pack(1, 0) + b"a line without its end",  # it would run into another's line
    HEADER.pack(1, 0),
    HEADER.pack(1, MESSAGES) + struct.pack("<I", 1) + b"m",  # messages to a file of lines
    HEADER.pack(2, MESSAGES) + struct.pack("<I", 99) + b"short",
    HEADER.pack(2, MESSAGES) + b"\x01\x00",
    b"\x00\x00\x04" + struct.pack("<I", os.getpid()),  # yesterday's 7-byte STOP
]


def test_every_malformed_datagram_costs_itself_only(world):
    d = world
    channel, w = d.new()
    other, w2 = d.new()
    os.write(w2, HEADER.pack(1, 0) + b"first of the other\n")
    for bad in BAD:
        os.write(w, bad)
        os.write(w, HEADER.pack(1, 0) + b"good %d\n" % BAD.index(bad))
    os.write(w2, HEADER.pack(1, 0) + b"last of the other\n")
    d.round(d.poller.poll(1))
    assert not d.stopped
    assert refused(d) == len(BAD)
    got = b"".join(d.lines.got).decode().splitlines()
    assert sorted(got) == sorted([f"good {i}" for i in range(len(BAD))]
                                 + ["first of the other", "last of the other"])
    assert d.messages.got == []  # nothing half-taken from a bad datagram of messages
    assert d.channels == {channel.fd: channel, other.fd: other}  # both still open
    assert f"from pid {os.getpid()}" in d.health._pending[REFUSED][2]  # as the kernel says


def test_the_sender_is_the_one_the_kernel_names(world):
    """Pieces are joined per process as the kernel names it: a child on its parent's channel
    cannot complete (or cut) the parent's unit, whatever its header says."""
    d = world
    channel, w = d.new()
    long = b"A" * (transport.PAYLOAD_MAX + 10) + b"\n"
    first, last = datagrams(1, long)
    os.write(w, first)
    pid = os.fork()
    if pid == 0:  # the child: a whole unit of its own, then a piece ending nothing
        try:
            os.write(w, HEADER.pack(1, 0) + b"child\n")
            os.write(w, HEADER.pack(1, 0) + b"tail of nothing\n")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    os.write(w, last)
    d.round(d.poller.poll(1))
    assert b"".join(d.lines.got) == b"child\ntail of nothing\n" + long
    assert refused(d) == 0 and channel.pieces == {} and d.waiting == 0


def test_pieces_are_bounded_per_channel_and_the_rest_of_that_unit_skipped(world, monkeypatch):
    monkeypatch.setattr(transport, "UNIT_MAX", 1 << 20)
    d = world
    channel, w = d.new()
    size = 100 << 10
    piece = HEADER.pack(1, MORE) + b"P" * size
    for _ in range((1 << 20) // size):  # a unit that never ends: what fits is held
        d.dispatch(piece, channel, 7)
    assert channel.waiting == d.waiting == (1 << 20) // size * size
    with pytest.raises(Malformed):  # one piece more: refused
        d.dispatch(piece, channel, 7)
    assert channel.waiting == 0 and d.waiting == 0  # what it held is let go at once
    for _ in range(50):  # the rest of that unit is skipped, uncounted
        d.dispatch(piece, channel, 7)
    assert channel.waiting == 0
    d.dispatch(HEADER.pack(1, 0) + b"end of the skipped unit\n", channel, 7)
    d.dispatch(HEADER.pack(1, 0) + b"next\n", channel, 7)
    d.deliver()
    assert d.lines.got == [b"next\n"] and channel.pieces == {}


def test_pieces_are_bounded_in_all_and_by_units(world, monkeypatch):
    monkeypatch.setattr(transport, "PARTIAL_MAX", 3 << 20)
    d = world
    channels = [d.new()[0] for _ in range(5)]
    piece = HEADER.pack(1, MORE) + b"P" * (1 << 20)
    refusals = 0
    for channel in channels:
        for _ in range(2):
            try:
                d.dispatch(piece, channel, 7)
            except Malformed:
                refusals += 1
    assert d.waiting <= 3 << 20 and refusals >= 2
    assert d.waiting == sum(c.waiting for c in channels)
    one = channels[0]
    with pytest.raises(Malformed):  # one channel's processes x targets: PARTIAL_KEYS units
        for pid in range(1000, 1000 + transport.PARTIAL_KEYS + 1):
            d.dispatch(HEADER.pack(1, MORE) + b"x", one, pid)
    assert len(one.pieces) == transport.PARTIAL_KEYS


def test_a_channel_whose_sender_is_gone_is_closed_with_its_pieces(world):
    d = world
    channel, w = d.new()
    os.write(w, HEADER.pack(1, MORE) + b"P" * 1000)
    os.write(w, HEADER.pack(1, 0) + b"x" * 10)  # (joined: a line without its end, refused)
    os.write(w, HEADER.pack(1, MORE) + b"P" * 1000)
    os.write(w, HEADER.pack(1, 0) + b"last words\n")
    os.write(w, HEADER.pack(1, MORE) + b"never finished")
    os.close(w)
    d.round(d.poller.poll(1))
    assert channel.fd not in d.channels and channel.sock.fileno() == -1
    assert d.waiting == 0
    assert d.lines.got == [b"P" * 1000 + b"last words\n"]


def test_a_flood_on_one_channel_does_not_starve_another(world, monkeypatch):
    monkeypatch.setattr(transport, "ROUND_BYTES", 1 << 20)
    d = world
    flood, w = d.new()
    honest, w2 = d.new()
    line = HEADER.pack(1, 0) + b"f" * (64 << 10) + b"\n"
    sent = 0
    try:
        while sent < 4 << 20:
            os.write(w, line)
            sent += len(line)
    except BlockingIOError:
        pass
    os.write(w2, HEADER.pack(1, 0) + b"honest\n")
    d.round(d.poller.poll(1))
    got = b"".join(d.lines.got)
    assert b"honest\n" in got
    assert got.count(b"\n") - 1 <= (1 << 20) // (64 << 10) + 1  # a round's share, no more


def test_descriptors_sent_along_never_land_in_the_master(world):
    d = world
    channel, w = d.new()
    before = len(os.listdir("/proc/self/fd"))
    sender = socket.socket(fileno=os.dup(w))
    r, x = os.pipe()
    try:
        sender.sendmsg([HEADER.pack(1, 0) + b"with descriptors\n"],
                       [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", r, x))])
        d.round(d.poller.poll(1))
    finally:
        sender.close()
        os.close(r)
        os.close(x)
    assert len(os.listdir("/proc/self/fd")) == before
    assert refused(d) == 1 and d.lines.got == []


def test_the_stop_ends_after_what_every_channel_holds(world):
    d = world
    _, wa = d.new()
    _, wb = d.new()
    send_all(wa, datagrams(1, b"from a\n"))
    send_all(wb, datagrams(1, b"from b\n"))
    send_all(wb, [x for unit in pack_messages([b"m1", b"m2"])
                  for x in datagrams(2, unit, MESSAGES)])
    os.write(d.stop_end, HEADER.pack(0, STOP))
    d.round([(d.control_fd, 1)])  # a round that saw only the stop
    assert d.stopped
    assert sorted(b"".join(d.lines.got).splitlines()) == [b"from a", b"from b"]
    assert d.messages.got == [b"m1", b"m2"]

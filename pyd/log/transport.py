"""How formatted records reach their targets: directly in the master, by datagrams from workers.

Theory of operation. Every process the master forks (a worker, the service) gets a channel of
its own: a unix SOCK_SEQPACKET socket pair made just before the fork (runtime.py). The child
keeps its sending end and no other descriptor of the log: not the master's ends, not another
child's. The master keeps the receiving end; its dispatcher (a real thread) reads them all. The
channel names the sender, and the kernel names the process on it (SCM_CREDENTIALS, for a
worker's own children): nothing a datagram says about its sender is believed, and what one
process sends cannot complete, cut, stop or read another's.

A worker buffers formatted lines per target and, every FLUSH_INTERVAL (or at FLUSH_BYTES, or
when it exits), sends them as datagrams: a header (target id, flags) and whole lines, up to
DGRAM_MAX. The kernel delivers a datagram whole or not at all, so a line is never cut; one send
carries hundreds of lines. A unit longer than a datagram (a huge line or message) goes in pieces
flagged MORE, joined per (channel, process, target). Messages for syslog and GELF travel
length-prefixed, many to a datagram. When the socket buffer is full the worker keeps its
datagrams (up to BACKLOG_LIMIT, then it drops the newest and counts them): it never waits.

In the master, what a worker sends is hostile input, read as OpenSSH's monitor reads its
child: the header, the flags, a known target, whole lines, lengths that fit, a number where a
count is due. A datagram that fails costs that datagram only, counted as lost (health.py: said
at once, then at most once a minute), never the dispatcher nor another sender. Pieces waiting
for their end are bounded per channel (UNIT_MAX, PARTIAL_KEYS) and in all (PARTIAL_MAX); a
round reads at most ROUND_BYTES from one channel, so a flooding worker cannot starve the others.
A channel whose last sender exited is closed. Only the master's own channel carries STOP.

The dispatcher takes every queued datagram, then pauses: a reader woken by every send would
cost more than the sends. Each target gets one push per round; the master's own records are
pushed directly.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import struct
from collections import deque

from pyd.log.formats import LINES
from pyd.log.native import close, epoll, get_ident, poll, sleep, socket

HEADER = struct.Struct("<HB")  # target id, flags: no word of the sender, whom the kernel names
LENGTH = struct.Struct("<I")  # before each message in a datagram of messages
DGRAM_MAX = 128 << 10
PAYLOAD_MAX = DGRAM_MAX - HEADER.size
MORE = 1  # the unit goes on in the next datagram of this process for this target
DROPPED = 2  # payload: how many lines or messages a worker could not send (ASCII)
STOP = 4  # the master is stopping: on the master's own channel only
MESSAGES = 8  # the payload is length-prefixed messages, not lines
SENDER_FLAGS = MORE | DROPPED | MESSAGES  # what a sender may say
FLUSH_INTERVAL = 0.05
FLUSH_BYTES = 64 << 10
BACKLOG_LIMIT = 8 << 20
SOCKET_BUFFER = 4 << 20
READ_PAUSE = 0.02
UNIT_MAX = BACKLOG_LIMIT + DGRAM_MAX  # pieces waiting on one channel: no worker sends more
PARTIAL_MAX = 32 << 20  # pieces waiting on every channel together
PARTIAL_KEYS = 16  # units in pieces at once on one channel (its processes x targets)
ROUND_BYTES = SOCKET_BUFFER  # read from one channel in one round
DATAGRAM_COST = 512  # what a datagram costs beyond its bytes (the kernel charges about as much)
REFUSED = "log datagrams from workers"  # the label under which refused datagrams are counted
_SO_SNDBUFFORCE = getattr(_socket, "SO_SNDBUFFORCE", 32)
_SO_PASSCRED = getattr(_socket, "SO_PASSCRED", 16)
_SCM_CREDENTIALS = getattr(_socket, "SCM_CREDENTIALS", 2)
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
# Room for the credentials and nothing more: descriptors a sender attaches find none and are
# discarded by the kernel, never installed in the master.
_ANCILLARY = _socket.CMSG_SPACE(_CREDENTIALS.size)
_RECEIVE = DGRAM_MAX + 1  # one byte more than any datagram of ours: longer ones show as cut


def make_channel() -> tuple[int, int]:
    """A new channel: the master's end (it reads, told each sender's pid by the kernel) and the
    sender's; both non-blocking and close-on-exec."""
    import _socket as c_socket  # socket.socketpair would build gevent's sockets after patching

    ours, theirs = c_socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        for option in (_SO_SNDBUFFORCE, _socket.SO_SNDBUF):  # datagrams in flight are charged
            try:                                              # to the sender: room for a burst
                theirs.setsockopt(_socket.SOL_SOCKET, option, SOCKET_BUFFER)
                break
            except OSError:
                continue
        ours.setsockopt(_socket.SOL_SOCKET, _SO_PASSCRED, 1)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    read_fd, write_fd = ours.detach(), theirs.detach()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def datagrams(sink: int, data: bytes, flags: int = 0) -> list[bytes]:
    """One unit in datagrams: cut after a line (or a message) where it can, else flagged MORE."""
    out = []
    pos, end = 0, len(data)
    pack = HEADER.pack
    while pos < end:
        stop = pos + PAYLOAD_MAX
        more = 0
        if stop >= end:
            stop = end
        elif not flags & MESSAGES and (cut := data.rfind(b"\n", pos, stop)) >= 0:
            stop = cut + 1
        else:
            more = MORE
        out.append(pack(sink, flags | more) + data[pos:stop])
        pos = stop
    return out


def pack_messages(messages: list[bytes]) -> list[bytes]:
    """Messages length-prefixed, grouped into units that fit a datagram (a bigger one alone)."""
    units, unit, size = [], [], 0
    for m in messages:
        item = LENGTH.pack(len(m)) + m
        if unit and size + len(item) > PAYLOAD_MAX:
            units.append(b"".join(unit))
            unit, size = [], 0
        unit.append(item)
        size += len(item)
    if unit:
        units.append(b"".join(unit))
    return units


def unpack_messages(payload: bytes) -> list[bytes]:
    """The messages of a unit; Malformed unless every length fits."""
    out, pos, end = [], 0, len(payload)
    unpack = LENGTH.unpack_from
    while pos < end:
        if pos + LENGTH.size > end:
            raise Malformed("a message length cut short")
        (n,) = unpack(payload, pos)
        pos += LENGTH.size
        if pos + n > end:
            raise Malformed("a message length that does not fit")
        out.append(payload[pos:pos + n])
        pos += n
    return out


class Malformed(ValueError):
    """A datagram the dispatcher refuses: it costs that datagram, and is counted."""


class WorkerWriter:
    """A worker's side: per-target buffers, flushed as datagrams to the master.

    Only the thread that created it (the hub's) touches the buffers, so the hot path takes no
    lock; a line logged from another real thread is handed over through the hub's loop.
    """

    def __init__(self, fd: int):
        from gevent import get_hub

        self.fd = fd  # this process's end of its own channel (-1: none, everything is dropped)
        self.lines: dict[int, list[str]] = {}
        self.messages: dict[int, list[bytes]] = {}
        self.buffered = 0
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.dropped: dict[int, int] = {}
        self.before: list = []  # called at the next flush (the access log's batches)
        self.armed = False
        self.broken = False
        self.owner = get_ident()
        self._loop = get_hub().loop
        self._timer = None

    # -- the hot path ---------------------------------------------------------------------------

    def put_line(self, sink: int, line: str) -> None:
        self.put_lines(sink, (line,))

    def put_lines(self, sink: int, lines) -> None:
        """Lines for one sink, in order (one, or the access log's batches)."""
        if get_ident() != self.owner:
            self._loop.run_callback_threadsafe(self.put_lines, sink, lines)
            return
        buf = self.lines.get(sink)
        if buf is None:
            buf = self.lines[sink] = []
        buf.extend(lines)
        self._buffered(sum(map(len, lines)))

    def before_flush(self, fn) -> None:
        """Call fn() at the next flush, before the buffers go out: fn logs what it gathered
        (the access log builds its lines in a batch, away from the requests)."""
        if get_ident() != self.owner:
            self._loop.run_callback_threadsafe(self.before_flush, fn)
            return
        self.before.append(fn)
        if not self.armed:
            self.arm()

    def put_message(self, sink: int, message: bytes) -> None:
        if get_ident() != self.owner:
            self._loop.run_callback_threadsafe(self.put_message, sink, message)
            return
        self.messages.setdefault(sink, []).append(message)
        self._buffered(len(message))

    def _buffered(self, size: int) -> None:
        """`size` more bytes wait: flush past FLUSH_BYTES, else within FLUSH_INTERVAL."""
        self.buffered += size
        if self.buffered > FLUSH_BYTES:
            self.flush()
        elif not self.armed:
            self.arm()

    # -- flushing -------------------------------------------------------------------------------

    def arm(self) -> None:
        """Flush in FLUSH_INTERVAL: a one-shot libev timer of the hub."""
        self.armed = True
        if self._timer is None:
            self._timer = self._loop.timer(FLUSH_INTERVAL)
        if not self._timer.active:
            self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        self.armed = False
        self.flush()

    def flush(self) -> None:
        if self.before:
            before, self.before = self.before, []
            for fn in before:
                try:
                    fn()
                except Exception:  # one source's bug must not stop the log
                    import traceback

                    traceback.print_exc()
        lines, self.lines = self.lines, {}
        messages, self.messages = self.messages, {}
        self.buffered = 0
        units = []  # (datagrams, lines or messages in them, target)
        for sink, chunk in lines.items():
            data = "".join(chunk).encode("utf-8", "backslashreplace")
            units.append((datagrams(sink, data), len(chunk), sink))
        for sink, chunk in messages.items():
            for unit in pack_messages(chunk):
                units.append((datagrams(sink, unit, MESSAGES), len(chunk), sink))
        for sink, count in list(self.dropped.items()):
            if self.backlog_bytes < BACKLOG_LIMIT:
                units.append(([HEADER.pack(sink, DROPPED) + str(count).encode()], 0, sink))
                del self.dropped[sink]
        for unit, count, sink in units:
            size = sum(map(len, unit))
            if self.backlog_bytes + size > BACKLOG_LIMIT or self.broken:
                self.dropped[sink] = self.dropped.get(sink, 0) + count
                continue
            self.backlog.extend(unit)
            self.backlog_bytes += size
        self._send()
        if self.backlog and not self.armed:
            self.arm()  # the socket buffer was full: try again soon

    def _send(self) -> None:
        backlog, fd = self.backlog, self.fd
        while backlog:
            datagram = backlog[0]
            try:
                os.write(fd, datagram)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:  # the master is gone: nobody is left to write
                if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.EBADF,
                               errno.ENOTCONN):
                    self.broken = True
                backlog.clear()
                self.backlog_bytes = 0
                return
            backlog.popleft()
            self.backlog_bytes -= len(datagram)

    def drain(self, timeout: float = 1.0) -> None:
        """At exit: flush, and wait (briefly) for room for what is left."""
        import time

        self.flush()
        deadline = time.monotonic() + timeout
        while self.backlog and not self.broken and time.monotonic() < deadline:
            sleep(0.005)
            self._send()


class Channel:
    """One sender's channel as the master holds it: the socket, the units arriving in pieces."""

    __slots__ = ("sock", "fd", "pieces", "waiting")

    def __init__(self, fd: int):
        self.sock = socket(fileno=fd)
        self.fd = fd
        # (pid, target) -> pieces so far; None: a unit over the limit, skipped to its end
        self.pieces: dict[tuple[int, int], list[bytes] | None] = {}
        self.waiting = 0  # bytes in pieces


class Dispatcher:
    """The master's reader: every channel's datagrams to targets. Runs in a real thread.

    `fd` is the master's own channel (the stop); add() gives it a sender's channel.
    """

    def __init__(self, fd: int, targets: dict, health):
        self.control = socket(fileno=fd)
        self.control_fd = fd
        self.poller = epoll()
        self.poller.register(fd, _EPOLLIN)
        self.channels: dict[int, Channel] = {}  # the dispatcher's thread only
        self.joining: deque[Channel] = deque()  # added, not yet taken by the dispatcher
        self.targets = targets  # id -> Sink, shared with the master's table (only grows)
        self.health = health
        self.waiting = 0  # bytes in pieces on every channel
        self.batches: dict[int, list[bytes]] = {}
        self.stopped = False
        self.buffer = bytearray(_RECEIVE)  # every datagram lands here (the dispatcher's thread)
        self.view = memoryview(self.buffer)

    # -- any thread ---------------------------------------------------------------------------

    def add(self, fd: int) -> Channel:
        """A new sender's channel (the master's thread, right after a fork): ours to close."""
        channel = Channel(fd)
        self.joining.append(channel)  # before the poller can report it
        try:
            self.poller.register(fd, _EPOLLIN)
        except (OSError, ValueError):  # stopped: the channel stays unread
            pass
        return channel

    def close_in_child(self) -> None:
        """In a freshly forked child: none of the master's ends stays open where app code runs."""
        self.stopped = True
        for channel in [*self.channels.values(), *self.joining]:
            channel.sock.close()
        self.control.close()
        self.poller.close()

    # -- the dispatcher's thread --------------------------------------------------------------

    def run(self, done) -> None:
        try:
            while not self.stopped:
                try:
                    events = self.poller.poll()
                except InterruptedError:
                    continue
                except (OSError, ValueError):
                    return
                try:
                    self.round(events)
                except Exception as e:  # a bug costs one round, never the thread
                    self.health.lost(REFUSED, 0, e)
                if not self.stopped:
                    sleep(READ_PAUSE)
        finally:
            done.set()

    def round(self, events) -> None:
        """Everything queued on the ready channels (ROUND_BYTES at most from each), then one
        push per target; at the stop, what every channel still holds."""
        try:
            for fd, mask in events:
                if fd == self.control_fd:
                    self.read_control()
                    continue
                channel = self.channels.get(fd) or self._joined(fd)
                if channel is not None:
                    self.read(channel, mask)
            if self.stopped:
                self._joined(-1)
                for channel in list(self.channels.values()):
                    self.read(channel, 0)
        finally:
            self.deliver()

    def _joined(self, fd: int) -> Channel | None:
        joining = self.joining
        while joining:
            channel = joining.popleft()
            self.channels[channel.fd] = channel
        return self.channels.get(fd)

    def read_control(self) -> None:
        while True:
            try:
                data = self.control.recv(64, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                self.stopped = True
                return
            if len(data) >= HEADER.size and HEADER.unpack_from(data)[1] & STOP:
                self.stopped = True

    def read(self, channel: Channel, mask: int = 0) -> None:
        """Take what one channel holds, up to ROUND_BYTES; close it when its senders are gone."""
        receive, dispatch = channel.sock.recvmsg_into, self.dispatch
        unpack = _CREDENTIALS.unpack_from
        into, view = [self.buffer], self.view
        budget = ROUND_BYTES
        while budget > 0:
            try:
                size, ancillary, flags, _ = receive(into, _ANCILLARY, _DONTWAIT)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                self.close(channel)
                return
            if len(ancillary) == 1 and ancillary[0][1] == _SCM_CREDENTIALS:  # as always
                pid = unpack(ancillary[0][2])[0]
            else:
                pid = _sender(ancillary)
            data = view[:size]  # (a copy of the payload only, by dispatch)
            if not size:  # the end, or an empty datagram
                if mask & _EPOLLHUP or _hung_up(channel.fd):
                    self.close(channel)
                    return
                self.refuse(pid, "an empty datagram")
                continue
            budget -= size + DATAGRAM_COST
            try:
                if flags & _CUT:
                    raise Malformed("a datagram too long, or with descriptors")
                dispatch(data, channel, pid)
            except Exception as e:  # Malformed, or a bug: it costs this datagram
                self.refuse(pid, str(e) if isinstance(e, Malformed) else repr(e),
                            bytes(data).count(b"\n"))

    def dispatch(self, datagram, channel: Channel, pid: int = 0) -> None:
        """Take one datagram of `pid` (as the kernel says) on `channel`; Malformed if it is."""
        if not _HEADER_SIZE <= len(datagram) <= DGRAM_MAX:
            raise Malformed("a datagram shorter than its header, or too long")
        sink, flags = _unpack_header(datagram)
        if flags & _NOT_SENDER_FLAGS or (flags & DROPPED and flags != DROPPED):
            raise Malformed(f"flags {flags:#x}")
        target = self.targets.get(sink)
        if target is None:
            raise Malformed(f"no target {sink}")
        payload = bytes(datagram[_HEADER_SIZE:])
        if flags == DROPPED:
            if not payload.isdigit() or len(payload) > 9:
                raise Malformed("a count of dropped lines that is not one")
            self.health.lost(target.label, int(payload), f"worker {pid} could not keep up")
            return
        if flags & MORE or channel.pieces and (pid, sink) in channel.pieces:
            payload = self._join(channel, (pid, sink), payload, flags)
            if payload is None:
                return
        if target.kind == LINES:
            if flags & MESSAGES:
                raise Malformed("messages for a target of lines")
            if not payload.endswith(b"\n"):  # it would run into another sender's first line
                raise Malformed("a line without its end")
            self.batches.setdefault(sink, []).append(payload)
        elif flags & MESSAGES:
            push = target.push
            for message in unpack_messages(payload):  # all checked before any is pushed
                push(message)
        else:
            self.batches.setdefault(sink, []).append(payload)

    def _join(self, channel: Channel, key: tuple[int, int], payload: bytes,
              flags: int) -> bytes | None:
        """The unit whole once its last piece came; None meanwhile (or while one over the
        limit is skipped to its end)."""
        pieces = channel.pieces.get(key, _NEW)
        if pieces is None:
            if not flags & MORE:
                del channel.pieces[key]
            return None
        size = len(payload)
        if pieces is _NEW:
            if len(channel.pieces) >= PARTIAL_KEYS:
                raise Malformed("too many units in pieces")
            pieces = channel.pieces[key] = []
        if channel.waiting + size > UNIT_MAX or self.waiting + size > PARTIAL_MAX:
            self._forget(channel, key)
            if flags & MORE:
                channel.pieces[key] = None
            raise Malformed("a unit in pieces over the limit")
        pieces.append(payload)
        channel.waiting += size
        self.waiting += size
        if flags & MORE:
            return None
        self._forget(channel, key)
        return b"".join(pieces)

    def _forget(self, channel: Channel, key: tuple[int, int]) -> None:
        pieces = channel.pieces.pop(key, None)
        if pieces:
            size = sum(map(len, pieces))
            channel.waiting -= size
            self.waiting -= size

    def refuse(self, pid: int, why: str, lines: int = 0) -> None:
        """One datagram refused: counted, and said at once, then at most once a minute."""
        self.health.lost(REFUSED, max(lines, 1), f"{why}, from pid {pid}")

    def close(self, channel: Channel) -> None:
        """Its last sender exited: the channel goes, with whatever it left in pieces."""
        try:
            self.poller.unregister(channel.fd)
        except (OSError, ValueError):
            pass
        channel.sock.close()  # before it leaves the table: a fork meanwhile closes it too
        for key in list(channel.pieces):
            self._forget(channel, key)
        if self.channels.get(channel.fd) is channel:
            del self.channels[channel.fd]

    def deliver(self) -> None:
        batches, self.batches = self.batches, {}
        for sink, chunks in batches.items():
            try:
                self.targets[sink].push(b"".join(chunks))
            except Exception as e:  # a bug costs these lines, never the thread
                self.health.lost(REFUSED, sum(c.count(b"\n") for c in chunks), e)


_NEW: list = []
_EPOLLIN, _EPOLLHUP = 0x001, 0x010
_DONTWAIT = _socket.MSG_DONTWAIT
_CUT = _socket.MSG_TRUNC | _socket.MSG_CTRUNC
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_NOT_SENDER_FLAGS = 0xff & ~SENDER_FLAGS


def _sender(ancillary) -> int:
    """The sender's pid from the kernel's credentials; descriptors sent along are closed."""
    pid = 0
    for level, kind, data in ancillary:
        if level != _socket.SOL_SOCKET:
            continue
        if kind == _SCM_CREDENTIALS and len(data) >= _CREDENTIALS.size:
            pid = _CREDENTIALS.unpack_from(data)[0]
        elif kind == _socket.SCM_RIGHTS:
            for fd in struct.unpack(f"{len(data) // 4}i", data[:len(data) // 4 * 4]):
                try:
                    close(fd)
                except OSError:
                    pass
    return pid


def _hung_up(fd: int) -> bool:
    """Whether every sender on this channel is gone (an empty read is then the end)."""
    p = poll()
    p.register(fd, _POLLIN)
    return any(mask & _POLLHUP for _, mask in p.poll(0))


_POLLIN, _POLLHUP = 0x001, 0x010


class DirectWriter:
    """The master's side: its own records go straight to the targets' queues."""

    def __init__(self, targets: dict, drain=None):
        self.targets = targets
        self.drain = drain  # at exit (logging.shutdown): what workers sent, then every target

    def put_line(self, sink: int, line: str) -> None:
        target = self.targets.get(sink)
        if target is not None:
            target.push(line.encode("utf-8", "backslashreplace"))

    def put_message(self, sink: int, message: bytes) -> None:
        target = self.targets.get(sink)
        if target is not None:
            target.push(message)

    def flush(self) -> None:
        pass


class StderrWriter:
    """No master (`pyd runworker`, the CLI): lines go to stderr as they come."""

    def put_line(self, sink: int, line: str) -> None:
        try:
            os.write(2, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass

    def put_message(self, sink: int, message: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

"""The log channel as untrusted input: app code in a worker attacks every log descriptor it
holds, as an attacker would; every worker keeps logging, the master stays small, and no worker
reads another's lines.

The attacking app does not rely on pyd's names: it looks through /proc/self/fd for sockets
and writes to (or reads from) each unix datagram or seqpacket one, in pyd's datagram formats,
today's and the one before it (target, flags, pid), and in none.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from pathlib import Path

import pytest
from harness import free_port, wait_until, world_readable_dir

pytestmark = pytest.mark.e2e

ATTACKER = r'''
import _socket
import json
import logging
import os
import random
import socket
import struct
import time

import gevent
from gevent.event import Event

log = logging.getLogger("app.trust")
OLD = struct.Struct("<HBI")  # target id, flags, pid: the header that named its sender
MORE, DROPPED, STOP, MESSAGES = 1, 2, 4, 8
stolen = {"bytes": 0, "data": b"", "reads": 0, "sockets": 0}
stealing = {}


def sockets(kinds=(socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)):
    """Every unix socket of these kinds this process holds, each as a socket of its own."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            s = _socket.socket(fileno=os.dup(int(name)))
        except OSError:  # not a socket (or gone)
            continue
        if s.family == socket.AF_UNIX and s.type in kinds:
            s.setblocking(False)
            out.append(s)
        else:
            s.close()
    return out


def send(s, datagram):
    try:
        s.send(datagram)
        return 1
    except OSError:
        return 0


def malformed():
    """Datagrams no honest sender writes, to every candidate."""
    pid = os.getpid()
    rng = random.Random(13)
    bad = [b"", b"\0", b"\0\0", OLD.pack(0, STOP, pid), OLD.pack(1, STOP, 1)]  # 7 bytes: STOP
    for target in (0, 1, 2, 3, 7, 0xffff):
        for flags in (STOP, DROPPED, MESSAGES, MORE | DROPPED, 0xff, 0x10, STOP | MORE):
            bad.append(struct.pack("<HB", target, flags))
            bad.append(struct.pack("<HB", target, flags) + b"not a number\n")
            bad.append(OLD.pack(target, flags, pid) + b"x" * rng.randrange(0, 64))
        bad.append(struct.pack("<HB", target, DROPPED) + b"9" * 5000)
        bad.append(OLD.pack(target, DROPPED, pid) + b"-1e999")
        bad.append(struct.pack("<HB", target, MESSAGES) + b"\xff\xff\xff\xff" + b"m")
        bad.append(OLD.pack(target, MESSAGES, pid) + b"\x10\0\0\0abc")
        bad.append(struct.pack("<HB", target, 0) + b"no end of line, then another's line")
    bad += [bytes(rng.randrange(256) for _ in range(n)) for n in (1, 3, 6, 7, 8, 9, 100, 4096)]
    sent = 0
    for s in sockets():
        for datagram in bad:
            sent += send(s, datagram)
        s.close()
    return sent


def flood(seconds):
    """Pieces of messages that never end, each under another made-up pid, for `seconds`."""
    targets = sockets()
    piece = b"P" * (120 << 10)
    deadline = time.monotonic() + seconds
    sent, n = 0, 0
    while time.monotonic() < deadline:
        n += 1
        for s in targets:
            try:  # (read as today's header: target 1, MORE, and a piece)
                s.send(OLD.pack(1, MORE, 100000 + n) + piece)
                sent += len(piece)
            except BlockingIOError:
                gevent.sleep(0)
            except OSError:
                pass
        if n % 8 == 0:
            gevent.sleep(0)
    for s in targets:
        s.close()
    return sent


def steal(done, until):
    """Read whatever comes to any socket this process holds (but its clients' connections)."""
    held = sockets((socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_STREAM))
    stolen["sockets"] = len(held)
    chunks = []
    while not done.is_set() and time.monotonic() < until:
        for s in held:
            try:
                data = s.recv(1 << 18, socket.MSG_DONTWAIT)
            except OSError:
                continue
            stolen["reads"] += 1
            stolen["bytes"] += len(data)
            chunks.append(data)
        gevent.sleep(0.001)
    for s in held:
        s.close()
    stolen["data"] = b"".join(chunks)
    stealing["finished"].set()


def answer(start_response, body):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    pid = os.getpid()
    if path == "/log":
        log.info("alive %d %s", pid, args["token"])
    elif path == "/secret":
        log.warning("secret line %s of %d", args["token"], pid)
    elif path == "/malformed":
        return answer(start_response, {"pid": pid, "sent": malformed()})
    elif path == "/flood":
        return answer(start_response, {"pid": pid, "sent": flood(float(args["seconds"]))})
    elif path == "/steal":
        stealing["done"], stealing["finished"] = Event(), Event()
        gevent.spawn(steal, stealing["done"], time.monotonic() + float(args["seconds"]))
    elif path == "/stolen":
        stealing["done"].set()
        stealing["finished"].wait(30)
        data = stolen.pop("data", b"")
        return answer(start_response, {"pid": pid, "bytes": stolen["bytes"],
                                       "reads": stolen["reads"], "sockets": stolen["sockets"],
                                       "secret": args["token"].encode() in data,
                                       "sample": data[:300].decode("latin-1")})
    return answer(start_response, {"pid": pid})
'''


@pytest.fixture
def attacked(pyd_factory, tmp_path):
    """A pyd of two workers running the attacker, and a kept-alive connection to each."""
    user = "nobody" if os.geteuid() == 0 else "root"
    d = world_readable_dir() if user == "nobody" else tmp_path
    (d / "attacker.py").write_text(ATTACKER)
    (d / "attacker.py").chmod(0o644)
    port = free_port()
    p = pyd_factory(f"user {user};\nworkers 2;\ncwd {d};\ngraceful-timeout 3s;\n"
                    f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app attacker:app; }}\n",
                    directory=tmp_path / "p")
    p.start()
    workers = wait_until(lambda: len(p.workers()) == 2 and p.workers(), 10, "two workers")
    by_pid: dict[int, http.client.HTTPConnection] = {}
    for _ in range(200):  # a kept-alive connection stays with the worker that accepted it
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        pid = get(conn, "/")["pid"]
        if pid in by_pid:
            conn.close()
        else:
            by_pid[pid] = conn
        if len(by_pid) == 2:
            break
    assert sorted(by_pid) == sorted(workers), (by_pid, workers)
    yield p, list(by_pid.items())
    for conn in by_pid.values():
        conn.close()


def get(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, (resp.status, body)
    return json.loads(body)


def rss_kb(pid: int) -> int:
    return int(re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(),
                         re.M).group(1))


def assert_everyone_logs(p, workers, tag: str, attacker: int | None = None) -> None:
    """Each worker logs a line of its own; each reaches the master's log file. The attacker's
    first datagram may end the unit it left unfinished (its own loss): it gets three tries."""
    for pid, conn in workers:
        tokens = []
        for _ in range(3 if pid == attacker else 1):
            tokens.append(f"{tag}-{pid}-{time.monotonic_ns()}")
            get(conn, f"/log?token={tokens[-1]}")
        p.wait_for_log(rf"app\.trust: alive {pid} ({'|'.join(tokens)})\n", timeout=10)


def test_malformed_datagrams_cost_only_themselves(attacked):
    p, workers = attacked
    (attacker, conn), _ = workers
    assert_everyone_logs(p, workers, "before")
    for _ in range(3):
        assert get(conn, "/malformed")["sent"] > 100
    assert p.alive(p.master_pid)
    assert_everyone_logs(p, workers, "after")  # the attacker too: its channel is still open
    # Said, and counted, not once per datagram: at once, then at most once a minute.
    said = wait_until(lambda: re.findall(r"logging degraded: .*log datagrams from workers: "
                                         r"(\d+) lost", p.log()), 10, "the refusals reported")
    assert len(said) <= 2 and int(said[0]) >= 1, said
    assert sorted(p.workers()) == sorted(pid for pid, _ in workers)  # nobody was replaced


def test_a_flood_of_pieces_keeps_the_master_small(attacked):
    p, workers = attacked
    (attacker, conn), (honest, honest_conn) = workers
    assert_everyone_logs(p, workers, "before")
    before = rss_kb(p.master_pid)
    peak = before
    result = {}

    import threading

    flooding = threading.Thread(target=lambda: result.update(get(conn, "/flood?seconds=3")))
    flooding.start()
    deadline = time.monotonic() + 60
    while flooding.is_alive() and time.monotonic() < deadline:
        peak = max(peak, rss_kb(p.master_pid))
        time.sleep(0.02)
    # Meanwhile the honest worker's lines still get through.
    token = f"during-{honest}"
    get(honest_conn, f"/log?token={token}")
    p.wait_for_log(rf"app\.trust: alive {honest} {token}\n")
    flooding.join(60)
    for _ in range(20):
        peak = max(peak, rss_kb(p.master_pid))
        time.sleep(0.02)
    assert result.get("sent", 0) > 64 << 20, result  # the attack was real: 64 MB or more
    assert peak - before < 96 << 10, (before, peak)  # KB: the pieces' limits, and some slack
    assert p.alive(p.master_pid)
    assert_everyone_logs(p, workers, "after", attacker)


def test_no_worker_reads_another_workers_lines(attacked):
    p, workers = attacked
    (thief, thief_conn), (victim, victim_conn) = workers
    secret = f"s3cr3t{time.monotonic_ns()}"
    get(thief_conn, "/steal?seconds=30")
    for i in range(40):
        get(victim_conn, f"/secret?token={secret}&i={i}")
    lines = []

    def all_arrived() -> bool:
        lines[:] = re.findall(rf"secret line {secret} of {victim}\n", p.log())
        return len(lines) == 40

    try:
        wait_until(all_arrived, 10, "the victim's 40 lines in the log")
        arrived = True
    except AssertionError:
        arrived = False
    stolen = get(thief_conn, f"/stolen?token={secret}")
    assert stolen["sockets"] > 0, stolen  # it held some sockets, and tried them all
    assert not stolen["secret"], stolen
    assert arrived, f"{len(lines)} of 40 lines arrived; the thief read {stolen['bytes']} bytes"
    assert_everyone_logs(p, workers, "after")


def unix_sockets(pid: int, kind: str) -> set[int]:
    """Inodes of the unix sockets of a kind (/proc/net/unix: 0005 seqpacket) a process holds."""
    of_kind = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[4] == kind:
            of_kind.add(int(fields[6]))
    held = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    return held & of_kind


def test_each_child_holds_one_channel_end_its_own(pyd_factory, tmp_path):
    """The workers and the service: one end each, shared with no other process of pyd's (the
    master holds the other ends), through a reload that replaces every worker."""
    user = "nobody" if os.geteuid() == 0 else "root"
    d = world_readable_dir() if user == "nobody" else tmp_path
    (d / "attacker.py").write_text(ATTACKER)
    (d / "attacker.py").chmod(0o644)
    port = free_port()
    p = pyd_factory(f"user {user};\nworkers 3;\ncwd {d};\n"
                    f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app attacker:app; }}\n"
                    "Process:idle { command \"sh -c 'exec sleep 1000'\"; }\n",
                    directory=tmp_path / "p")
    p.start()
    old: set[int] = set()
    for generation in range(3):
        def replaced(old=old):
            now = set(p.workers())
            return len(now) == 3 and not now & old and sorted(now)

        workers = wait_until(replaced, 30, "three workers, none of the generation before")
        children = [*workers, p.service()]
        ends = {c: unix_sockets(c, "0005") for c in children}
        master = unix_sockets(p.master_pid, "0005")
        for child, held in ends.items():
            assert len(held) == 1, (p.title(child), held)
            assert not held & master, p.title(child)
            assert all(not held & other for c, other in ends.items() if c != child)
        assert len(master) >= len(children) + 1  # a channel each, and the master's own
        if not generation:
            first = len(os.listdir(f"/proc/{p.master_pid}/fd"))
        else:  # the channels of the workers gone are closed: no more descriptors than before
            wait_until(lambda first=first: len(os.listdir(f"/proc/{p.master_pid}/fd")) <= first,
                       30, "the master's descriptors back to their number")
        old = set(workers)
        p.cli("reload", check=True)

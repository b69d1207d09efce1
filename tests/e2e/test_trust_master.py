"""The scoreboard as untrusted input: app code in a worker writes into the shared memory it can
reach, as an attacker would; the master survives, keeps serving and logging, and a worker can
earn at most its own replacement.

The attacking app finds the shared memory two ways: every shared, writable mapping of its own
process in /proc/self/maps, written with ctypes (where the workers' user can import it), and
every mmap object reachable from the garbage collector. It silences the honest reports of its
worker so that its lie stays in place. Workers run as root and, where the tests run as root, as
nobody (who can import only what the master preloaded).
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from pathlib import Path

import pytest
from harness import free_port, http_get, wait_until, world_readable_dir

pytestmark = pytest.mark.e2e

ATTACKER = r'''
import gc
import mmap
import os

import gevent

try:
    import ctypes
except Exception:  # nobody may not read this interpreter's library: only preloaded modules
    ctypes = None

PATTERNS = {"random": None, "zero": b"\0", "ones": b"\xff"}


def shared_mappings():
    """(address, length) of every shared writable mapping of this process."""
    out = []
    try:
        f = open("/proc/self/maps")
    except OSError:  # a process that changed its uid is not dumpable: /proc/self is root's
        return out
    with f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2 and fields[1].startswith("rw") and fields[1][3] == "s":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                out.append((start, end - start))
    return out


def mmaps():
    """Every open mmap object referred to by an attribute or a list the collector knows."""
    found = {}
    for obj in gc.get_objects():
        try:
            values = list(obj if isinstance(obj, list) else vars(obj).values())
        except Exception:
            continue
        for v in values:
            if isinstance(v, mmap.mmap) and not v.closed:
                found[id(v)] = v
    return list(found.values())


def garbage(pattern, length):
    return os.urandom(length) if PATTERNS[pattern] is None else PATTERNS[pattern] * length


def scribble(pattern):
    from pyd.ipc import scoreboard as sb

    for m in mmaps():
        try:
            if pattern == "heartbeat":  # zero the heartbeat of every slot it can reach
                for off in range(0, len(m) - sb.SLOT_SIZE + 1, sb.SLOT_SIZE):
                    m[off + sb._OFF_HEARTBEAT:off + sb._OFF_HEARTBEAT + 16] = bytes(16)
            else:
                m[:] = garbage(pattern, len(m))
        except (TypeError, ValueError):  # read-only, or closed meanwhile
            pass
    if ctypes is None:
        return
    for start, length in shared_mappings():
        if pattern == "heartbeat":
            for off in range(0, length - sb.SLOT_SIZE + 1, sb.SLOT_SIZE):
                ctypes.memset(start + off + sb._OFF_HEARTBEAT, 0, 16)
        else:
            ctypes.memmove(start, garbage(pattern, length), length)


def silence_the_worker():
    """Stop the worker's own honest reports, so the garbage stays."""
    for obj in gc.get_objects():
        if type(obj).__name__ == "Worker" and hasattr(obj, "report"):
            obj.report = lambda *args, **kwargs: None


def retire_for_no_reason():
    """Ask to retire with a reason byte no table has (the worker's own API, abused)."""
    for obj in gc.get_objects():
        if type(obj).__name__ == "Worker" and hasattr(obj, "scoreboard"):
            obj.scoreboard.set_state(obj.slot, 4, 200)  # RETIRING, reason 200
            obj.retiring = True  # and let no honest report put it back


def keep_scribbling(pattern):
    while True:
        scribble(pattern)
        gevent.sleep(0.05)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/retire":
        retire_for_no_reason()
    elif path.startswith("/attack/"):
        pattern = path.rsplit("/", 1)[1]
        silence_the_worker()
        scribble(pattern)
        gevent.spawn(keep_scribbling, pattern)
    body = b"hello from %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def config(port: int, directory: Path, extra: str = "", user: str = "root") -> str:
    return (f"user {user};\nworkers 2;\ncwd {directory};\ngraceful-timeout 3s;\n{extra}\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app attacker:app; access-log off; }}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "attacker.py").write_text(ATTACKER)
    return tmp_path


USERS = ["root", pytest.param("nobody", marks=pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to run workers as nobody"))]


@pytest.fixture
def make(pyd_factory, tmp_path: Path):
    """make(user, extra) -> (pyd, port): two workers running the attacker as `user`."""
    made = []

    def start(user: str, extra: str = ""):
        # As nobody: a directory nobody can read, removed after the test.
        site = tmp_path if user == "root" else world_readable_dir()
        (site / "attacker.py").write_text(ATTACKER)
        (site / "attacker.py").chmod(0o644)
        port = free_port()
        p = pyd_factory(config(port, site, extra, user), directory=site / "pyd")
        made.append((p, site))
        p.start()
        if user != "root":
            uid = pwd.getpwnam(user).pw_uid
            assert all(p.ids(w)[0] == uid for w in p.workers())
        return p, port

    yield start
    for p, site in made:
        p.cleanup()
        if site != tmp_path:
            shutil.rmtree(site, ignore_errors=True)


def pid_of(port: int, path: str = "/") -> int:
    status, _, body = http_get(port, path)
    assert status == 200
    return int(body.split()[-1])


def attack(p, port: int, pattern: str) -> tuple[int, list[int]]:
    """One worker turns attacker; (its pid, the other workers' pids)."""
    workers = p.workers()
    assert len(workers) == 2
    attacker = pid_of(port, f"/attack/{pattern}")
    assert attacker in workers
    return attacker, [w for w in workers if w != attacker]


def assert_still_serving(p, port: int, others: list[int], attacker: int) -> None:
    """The master lives, answers the control socket and logs; the honest workers were kept."""
    assert p.alive(p.master_pid), p.log()[-3000:]
    for pid in others:
        assert p.alive(pid) and pid in p.workers(), (pid, p.log()[-3000:])
    seen = {pid_of(port) for _ in range(20)}
    assert seen & set(others), seen
    assert "pyd is running" in p.fullstatus()


def test_a_retire_reason_out_of_range_costs_one_replacement(pyd_factory, site):
    """One byte out of range made the master raise IndexError when it reaped the worker."""
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    workers = p.workers()
    liar = pid_of(port, "/retire")
    others = [w for w in workers if w != liar]
    wait_until(lambda: not p.alive(liar) or not p.alive(p.master_pid), 20,
               "the worker replaced (or the master gone)")
    wait_until(lambda: len(p.workers()) == 2 or not p.alive(p.master_pid), 15, "two workers")
    assert_still_serving(p, port, others, liar)
    assert "bad-report 1" in p.fullstatus().split("restarts by reason:")[1]


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("pattern", ["random", "ones", "zero"])
def test_garbage_in_the_scoreboard_costs_at_most_the_liars_replacement(make, pattern, user):
    p, port = make(user, "request-timeout 30s;")
    attacker, others = attack(p, port, pattern)
    # Garbage states, reasons and counters: the master stays up, says which worker lied, and
    # replaces that one only (its successor first).
    p.wait_for_log(rf"worker \d \(pid {attacker}\) [^\n]*scoreboard", timeout=15)
    wait_until(lambda: not p.alive(attacker), 15, "the lying worker gone")
    wait_until(lambda: len(p.workers()) == 2, 15, "its successor serving")
    assert_still_serving(p, port, others, attacker)
    rows = [line.split() for line in p.fullstatus().splitlines() if line[:1].isdigit()]
    assert sorted(int(r[1]) for r in rows) == p.workers(), rows


@pytest.mark.parametrize("user", USERS)
def test_zeroed_heartbeats_kill_only_the_silent_worker(make, user):
    p, port = make(user, "request-timeout 1s;")
    attacker, others = attack(p, port, "heartbeat")
    # Its own heartbeat stopped: the liar is taken for a blocked hub and replaced...
    p.wait_for_log(rf"worker \d \(pid {attacker}\): [^\n]*request-timeout", timeout=15)
    wait_until(lambda: not p.alive(attacker), 10, "the silent worker gone")
    wait_until(lambda: len(p.workers()) == 2, 15, "its successor serving")
    # ...and the honest ones, whose slots the attacker could not reach, keep beating.
    time.sleep(3.0)  # longer than request-timeout + 1s: a wrongly killed worker would show
    assert_still_serving(p, port, others, attacker)
    for pid in others:
        assert f"(pid {pid}): a request has run" not in p.log(), p.log()[-3000:]


def test_the_master_survives_a_storm_of_lies_and_keeps_logging(pyd_factory, site):
    """Every worker lies, again and again; the master still logs, answers, replaces them."""
    port = free_port()
    p = pyd_factory(config(port, site))
    p.start()
    first = set(p.workers())
    for pattern in ("random", "ones", "zero") * 4:
        try:
            pid_of(port, f"/attack/{pattern}")
        except (OSError, AssertionError):
            pass
    wait_until(lambda: not (first & set(p.workers())) or not p.alive(p.master_pid), 40,
               "every lying worker replaced (or the master gone)")
    assert p.alive(p.master_pid), p.log()[-3000:]
    wait_until(lambda: len(p.workers()) == 2 and all(
        pid_of(port) in p.workers() for _ in range(4)), 40, "two honest workers serving")
    p.cli("reopenlog", check=True)
    assert "pyd is running" in p.fullstatus()
    p.stop()
    p.wait_for_log(r"pyd master \(pid \d+\) exits")

"""The fleet policy with a fake clock and a fake scoreboard, as gunicorn's tests/test_arbiter.py
drives its arbiter: successor-first replacement, max-recycling, backoff, request-timeout,
scaling; and the master's loop, where one failing step costs one turn."""

from __future__ import annotations

import logging
import signal
import types
from dataclasses import replace

import pytest

from pyd.ipc import scoreboard as sb
from pyd.master import fleet
from pyd.master.arbiter import Master
from pyd.master.fleet import Fleet, Kill, Limits, Log, Spawn, Target, WorkerInfo


def view(slot: int, state: int = sb.IDLE, heartbeat: float = 0.0) -> sb.SlotView:
    return sb.SlotView(slot, state, sb.R_NONE, 0, 1, 0, 0, 0.0, heartbeat, 0.0, 0, 0, 0, 0)


class World:
    """The master's side of the books: workers by pid, their slots, a clock; it does what
    the policy says as the master would, without processes."""

    def __init__(self, limits: Limits | None = None, target: int = 2):
        self.fleet = Fleet(limits or Limits())
        self.target = target
        self.generation = 1
        self.generation_reason = sb.R_RELOAD
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.workers: dict[int, WorkerInfo] = {}
        self.slots: dict[int, sb.SlotView] = {}
        self.signals: list[tuple[int, int]] = []
        self.logs: list[str] = []
        self.next_pid = 100

    def spawn(self, number: int, predecessor: WorkerInfo | None = None) -> WorkerInfo:
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        slot = min(set(range(64)) - {w.slot for w in self.workers.values()})
        w = WorkerInfo(pid, slot, number, self.generation, self.now, self.wall,
                       beat_seen=self.now)
        if predecessor is not None:
            predecessor.successor, w.predecessor = w, predecessor
        self.workers[pid] = w
        self.slots[slot] = view(slot, sb.STARTING, heartbeat=self.wall)
        return w

    def act(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Spawn):
                self.spawn(a.number, a.predecessor)
            elif isinstance(a, Kill):
                self.signals.append((a.worker.pid, a.signal))
            elif isinstance(a, Log):
                self.logs.append(a.message)
            elif isinstance(a, Target):
                self.target = a.workers

    def turn(self) -> None:
        """One loop turn: murder, sync, manage, scale (the master's order)."""
        ws = self.workers.values()
        self.act(self.fleet.murder(ws, self.slots, self.now, self.wall))
        self.act(self.fleet.sync(ws, self.slots, self.generation, self.generation_reason,
                                 self.now))
        self.act(self.fleet.manage(ws, self.target, self.now))
        self.act(self.fleet.scale(ws, self.slots, self.target, self.now))

    def write(self, w: WorkerInfo, **fields) -> None:
        self.slots[w.slot] = replace(self.slots[w.slot], **fields)

    def serve_all(self) -> None:
        for w in self.workers.values():
            if w.phase == "booting":
                self.write(w, state=sb.IDLE)

    def tick(self, seconds: float, beat: bool = True) -> None:
        """Time passes; every worker's hub beats (unless told otherwise)."""
        self.now += seconds
        self.wall += seconds
        if beat:
            for w in self.workers.values():
                self.write(w, heartbeat=self.wall)

    def exit(self, w: WorkerInfo, code: int = 0, message: str = "") -> int:
        del self.workers[w.pid]
        reason, actions = self.fleet.exited(w, code, message, False, self.now)
        self.act(actions)
        return reason

    def sent(self, sig: int) -> list[int]:
        return [pid for pid, s in self.signals if s == sig]

    def by_phase(self, phase: str) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if w.phase == phase]


@pytest.fixture
def world() -> World:
    w = World()
    w.turn()
    w.serve_all()
    w.turn()
    return w


def test_spawns_up_to_the_target_and_sees_them_serve(world):
    assert sorted(w.number for w in world.workers.values()) == [1, 2]
    assert [w.phase for w in world.workers.values()] == ["serving", "serving"]
    world.turn()
    assert len(world.workers) == 2 and not world.signals


def test_a_retiring_worker_gets_its_successor_first_and_drains_once_it_serves(world):
    old = world.by_phase("serving")[0]
    world.write(old, state=sb.RETIRING, reason=sb.R_REQUESTS)
    world.turn()
    assert old.phase == "retiring" and old.reason == sb.R_REQUESTS
    new = old.successor
    assert new is not None and new.number == old.number and new.phase == "booting"
    assert not world.signals  # the old one keeps serving until the new one does
    world.turn()
    assert len(world.workers) == 3 and not world.signals
    world.write(new, state=sb.IDLE)
    world.turn()
    assert new.phase == "serving" and old.phase == "draining"
    assert world.sent(signal.SIGQUIT) == [old.pid]
    assert world.exit(old) == sb.R_REQUESTS
    assert new.predecessor is None


def test_max_recycling_bounds_limit_replacements_at_once(world):
    world.fleet.limits = Limits(max_recycling=1)
    a, b = world.by_phase("serving")
    for w in (a, b):
        world.write(w, state=sb.RETIRING, reason=sb.R_MEMORY)
    world.turn()
    assert (a.successor is None) != (b.successor is None), "one at a time"
    first = a if a.successor else b
    second = b if first is a else a
    world.write(first.successor, state=sb.IDLE)
    world.turn()
    assert first.phase == "draining" and second.successor is None  # draining counts
    world.exit(first)
    world.turn()
    assert second.successor is not None


def test_a_reload_replaces_every_worker_regardless_of_max_recycling(world):
    world.fleet.limits = Limits(max_recycling=1)
    world.generation, world.generation_reason = 2, sb.R_RELOAD
    world.turn()
    old = [w for w in world.workers.values() if w.generation == 1]
    assert all(w.phase == "retiring" and w.successor is not None for w in old)


def test_a_failed_boot_backs_off_doubling(world):
    victim = world.by_phase("serving")[0]
    world.exit(victim, -9)
    world.turn()
    new = next(w for w in world.by_phase("booting"))
    delays = []
    for _ in range(4):
        assert world.exit(new, 4, "cannot import app") == sb.R_BOOT_ERROR
        delays.append(world.fleet.backoff[new.number].not_before - world.now)
        world.turn()
        assert not world.by_phase("booting"), "no respawn before the backoff"
        world.tick(delays[-1] + 0.01)
        world.turn()
        new = world.by_phase("booting")[0]
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert "failed to start; next try in 4.0s:\ncannot import app" in world.logs[-1]
    world.write(new, state=sb.IDLE)
    world.turn()
    assert new.number not in world.fleet.backoff


def test_the_backoff_stops_growing_at_its_cap():
    f = Fleet()
    w = WorkerInfo(1, 0, 1, 1, 0.0)
    for _ in range(20):
        f.exited(w, 3, "", False, 0.0)
    assert f.backoff[1].not_before == fleet.MAX_BACKOFF


def test_request_timeout_aborts_a_long_request_then_kills(world):
    world.fleet.limits = Limits(request_timeout=5.0)
    w = world.by_phase("serving")[0]
    world.write(w, state=sb.BUSY, oldest_request=world.wall)
    world.tick(4.0)
    world.turn()
    assert not world.signals
    world.tick(1.5)
    world.turn()
    assert world.sent(signal.SIGABRT) == [w.pid] and w.aborted and w.phase == "draining"
    assert "a request has run for 5.5s (request-timeout 5s)" in world.logs[-1]
    world.turn()
    assert world.sent(signal.SIGKILL) == []
    world.tick(fleet.ABORT_GRACE + 0.1)
    world.turn()
    assert world.sent(signal.SIGKILL) == [w.pid]
    assert world.exit(w, -9) == sb.R_TIMEOUT
    world.turn()
    assert len(world.by_phase("booting")) == 1


def test_a_silent_hub_is_measured_on_the_masters_clock(world):
    world.fleet.limits = Limits(request_timeout=2.0)
    a, b = world.by_phase("serving")
    world.write(b, heartbeat=0.0)  # b lies about its heartbeat once, then beats again
    world.turn()
    for _ in range(4):
        world.tick(1.0, beat=False)
        world.write(b, heartbeat=world.wall)  # only b beats
        world.turn()
    assert world.sent(signal.SIGABRT) == [a.pid]  # a's hub stopped: 4s > 2s + 1s
    assert not b.aborted


def test_a_wall_clock_step_kills_nobody(world):
    world.fleet.limits = Limits(request_timeout=2.0)
    world.wall += 3600.0  # NTP steps the clock an hour ahead; hubs keep beating
    world.tick(1.0)
    world.turn()
    assert not world.signals


def test_an_oldest_request_before_the_worker_was_born_is_held_to_its_birth(world):
    world.fleet.limits = Limits(request_timeout=30.0)
    w = world.by_phase("serving")[0]
    world.write(w, state=sb.BUSY, oldest_request=1.0)  # "my request started in 1970"
    world.tick(1.0)
    world.turn()
    assert not world.signals


def test_garbage_states_replace_only_the_liar(world):
    liar, honest = world.by_phase("serving")
    world.write(liar, state=200)
    world.turn()
    assert liar.lied and liar.phase == "retiring" and liar.reason == sb.R_BAD_REPORT
    assert liar.successor is not None
    assert "wrote an invalid state (200)" in world.logs[-1]
    world.write(liar.successor, state=sb.IDLE)
    world.turn()
    assert world.sent(signal.SIGQUIT) == [liar.pid]
    assert honest.phase == "serving" and not honest.lied


@pytest.mark.parametrize("state", [sb.FREE, sb.STARTING, 6, 255])
def test_a_serving_worker_cannot_go_back(world, state):
    w = world.by_phase("serving")[0]
    world.write(w, state=state)
    world.turn()
    assert w.lied and w.reason == sb.R_BAD_REPORT


def test_a_retire_reason_out_of_range_is_a_bad_report(world):
    w = world.by_phase("serving")[0]
    world.write(w, state=sb.RETIRING, reason=200)
    world.turn()
    assert w.phase == "retiring" and w.reason == sb.R_BAD_REPORT
    world.write(w.successor, state=sb.IDLE)
    world.turn()
    assert world.exit(w) == sb.R_BAD_REPORT


def test_scaling_up_when_all_are_busy_and_down_when_idle():
    world = World(Limits(min_workers=1, max_workers=4), target=2)
    world.turn()
    world.serve_all()
    world.turn()
    for w in world.workers.values():
        world.write(w, state=sb.BUSY, active=1)
    world.turn()  # all busy from now
    world.tick(fleet.SCALE_UP_AFTER - 0.5)
    world.turn()
    assert world.target == 2
    world.tick(1.0)
    world.turn()
    assert world.target == 3
    world.turn()
    world.serve_all()
    for w in world.workers.values():
        world.write(w, state=sb.IDLE, active=0)
    world.turn()  # idle from now
    world.tick(fleet.SCALE_DOWN_AFTER - 1.0)
    world.turn()
    assert world.target == 3
    world.tick(1.1)
    world.turn()
    assert world.target == 2
    world.turn()
    assert [w.number for w in world.by_phase("draining")] == [3]
    assert world.sent(signal.SIGQUIT)


def test_scaling_is_off_without_min_or_max_workers(world):
    for w in world.workers.values():
        world.write(w, state=sb.BUSY, active=1)
    world.tick(60.0)
    world.turn()
    assert world.target == 2


def test_a_worker_that_never_serves_is_killed_after_the_boot_timeout():
    world = World(target=1)
    world.turn()
    (w,) = world.workers.values()
    world.tick(fleet.BOOT_TIMEOUT + 1)
    world.turn()
    assert world.sent(signal.SIGKILL) == [w.pid]


def test_a_late_drainer_is_killed_after_graceful_timeout(world):
    world.fleet.limits = Limits(graceful_timeout=10.0)
    w = world.by_phase("serving")[0]
    world.target = 1
    world.act(world.fleet.drain(w, sb.R_SCALE_DOWN, world.now))
    world.tick(10.5)
    world.turn()
    assert world.sent(signal.SIGKILL) == []
    world.tick(1.0)
    world.turn()
    assert world.sent(signal.SIGKILL) == [w.pid]


def test_exit_reasons():
    f = Fleet()

    def exit_of(phase: str, code: int, **kw) -> int:
        w = WorkerInfo(1, 0, 1, 1, 0.0, phase=phase, **kw)
        return f.exited(w, code, "", False, 0.0)[0]

    assert exit_of("serving", -9) == sb.R_KILLED
    assert exit_of("serving", 1) == sb.R_CRASHED
    assert exit_of("serving", 5) == sb.R_TIMEOUT
    assert exit_of("draining", 0, reason=sb.R_UPDATE) == sb.R_UPDATE
    assert exit_of("draining", 0) == sb.R_STOPPED
    assert exit_of("draining", 0, reason=250) == sb.R_STOPPED


# -- the master's loop: one failing step costs one turn ------------------------------------------

def test_a_failing_step_is_logged_once_with_its_traceback_and_then_counted(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("pyd.master.arbiter.time.monotonic", lambda: clock[0])
    m = types.SimpleNamespace(step_errors={})

    def broken():
        raise IndexError("tuple index out of range")

    with caplog.at_level(logging.ERROR, logger="pyd.master"):
        for _ in range(5):
            Master.step(m, "reap", broken)  # never raises
        clock[0] += 11.0
        Master.step(m, "reap", broken)
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2
    assert "master: reap failed; it is tried again on the next turn" in errors[0]
    assert "Traceback" in errors[0] and "IndexError: tuple index out of range" in errors[0]
    assert "(4 more times since)" in errors[1]
    ok = []
    Master.step(m, "manage", lambda: ok.append(1))
    assert ok == [1]

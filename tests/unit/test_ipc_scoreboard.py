"""The scoreboard's format and its checks: what a worker writes is read as untrusted input."""

from __future__ import annotations

import os
import struct

import pytest

from pyd.ipc import scoreboard as sb


@pytest.fixture
def board():
    b = sb.Scoreboard(4)
    yield b
    b.close()


def test_claim_uses_the_masters_record_not_the_state_byte(board):
    a = board.claim(1, 1)
    board.set_state(a, sb.FREE)  # the worker in slot a lies that its slot is free
    b = board.claim(2, 1)
    assert b != a
    board.release(a, sb.R_STOPPED)
    assert board.claim(3, 1) == a
    assert [s.index for s in board.live()] == sorted([a, b])


def test_claim_returns_none_when_full(board):
    assert [board.claim(n, 1) for n in range(4)] == [0, 1, 2, 3]
    assert board.claim(5, 1) is None


def test_times_are_finite_and_states_checked(board):
    i = board.claim(1, 1)
    board.update(i, float("nan"), float("inf"), 2 ** 64 - 1, 0, 0, 0)
    view = board.read(i)
    assert view.heartbeat == 0.0 and view.oldest_request == 0.0
    assert view.requests == 2 ** 64 - 1
    assert board.valid_state(i) == sb.STARTING
    for state in (sb.IDLE, sb.BUSY, sb.RETIRING, sb.STOPPING):
        board.set_state(i, state)
        assert board.valid_state(i) == state
    for state in (sb.FREE, 6, 200, 255):
        board.set_state(i, state)
        assert board.valid_state(i) is None
        assert board.read(i).state_name in ("free", "?")


def test_a_retire_reason_is_one_a_worker_may_give(board):
    i = board.claim(1, 1)
    for reason in sb.RETIRE_REASONS:
        board.set_state(i, sb.RETIRING, reason)
        assert board.read(i).retire_reason == reason
    for reason in (sb.R_NONE, sb.R_RELOAD, sb.R_TIMEOUT, len(sb.REASONS), 255):
        board.set_state(i, sb.RETIRING, reason)
        assert board.read(i).retire_reason == sb.R_BAD_REPORT
        assert board.read(i).reason_name in sb.REASONS or board.read(i).reason_name == "?"


def test_message_is_bounded_and_printable(board):
    i = board.claim(1, 1)
    board.set_message(i, "line 1\n\tline 2 \x1b[31mred\x07")
    assert board.message(i) == "line 1\n\tline 2 \ufffd[31mred\ufffd"
    mem = board._mem(i)
    struct.pack_into("=H", mem, sb._OFF_MSG, 0xFFFF)  # a length past the field
    assert len(board.message(i)) <= sb.MESSAGE_SIZE


def _shared_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.split()[1][3] == "s")


def test_keep_only_unmaps_every_other_slot():
    board = sb.Scoreboard(3)
    pid = os.fork()
    if pid == 0:  # the worker of slot 1
        code = 0
        try:
            before = _shared_mappings()
            board.keep_only(1)
            board.set_state(1, sb.IDLE)
            try:
                board.set_state(0, sb.RETIRING)
                code = 1
            except ValueError:
                pass
            if _shared_mappings() != before - 2:
                code = 2  # another slot is still mapped
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert board.state(1) == sb.IDLE and board.state(0) == sb.FREE
    board.close()

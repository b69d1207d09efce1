"""The one backoff rule: a delay doubling with each failure in a row, up to a cap."""

from __future__ import annotations

from pyd.system.backoff import Backoff


def test_the_delay_doubles_up_to_the_cap():
    b = Backoff(0.5, 60.0)
    assert [b.failed() for _ in range(10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert b.failures == 10


def test_the_cap_holds_however_long_it_fails():
    b = Backoff(1.0, 30.0)
    for _ in range(5000):  # 2 ** 5000 would not fit a float
        delay = b.failed()
    assert delay == 30.0


def test_the_next_try_is_on_the_callers_clock():
    b = Backoff(1.0, 30.0)
    assert not b.waiting(100.0)
    assert b.failed(100.0) == 1.0 and b.not_before == 101.0
    assert b.waiting(100.5) and not b.waiting(101.0)


def test_a_success_starts_it_again_from_the_first_delay():
    b = Backoff(2.0, 10.0)
    b.failed(0.0), b.failed(0.0), b.failed(0.0)
    b.reset()
    assert (b.failures, b.delay, b.waiting(0.0)) == (0, 0.0, False)
    assert b.failed() == 2.0


def test_a_first_delay_over_the_cap_is_the_cap():
    assert Backoff(5.0, 3.0).failed() == 3.0

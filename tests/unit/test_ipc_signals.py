"""The one table of stop kinds and signals, and the CLI's fallback when the socket is gone."""

from __future__ import annotations

import argparse
import signal

import pytest

from pyd.cli import commands
from pyd.ipc import signals
from pyd.ipc.control import ControlError


def test_every_stop_kind_has_its_signals():
    assert set(signals.STOPS) == {"graceful", "fast", "hard", "upgrade"}


@pytest.mark.parametrize("kind", sorted(signals.STOPS))
def test_what_the_service_is_sent_means_that_stop_to_it(kind):
    sig = signals.STOPS[kind].service
    assert signals.SERVICE_RECEIVES[sig] == ("graceful" if kind == "upgrade" else kind)


@pytest.mark.parametrize("kind", ["graceful", "fast", "hard"])
def test_what_the_master_is_sent_is_that_stop_or_the_nearest(kind):
    sig = signals.STOPS[kind].master
    # A hard stop has no signal of its own: the master takes INT for Ctrl-C, a fast stop.
    assert signals.MASTER_RECEIVES[sig] == ("fast" if kind == "hard" else kind)


def test_workers_drain_only_on_a_graceful_stop():
    assert {k: s.worker for k, s in signals.STOPS.items()} == {
        "graceful": signal.SIGQUIT, "upgrade": signal.SIGQUIT, "fast": signal.SIGTERM,
        "hard": signal.SIGTERM}


@pytest.mark.parametrize("command, sig", [("stop", signal.SIGTERM),
                                          ("graceful_stop", signal.SIGQUIT),
                                          ("hard_stop", signal.SIGTERM)])
def test_the_cli_falls_back_to_the_tables_signal(monkeypatch, command, sig):
    """The control socket is gone but the master lives: the CLI signals it (hard-stop sent
    SIGINT, which is not what the table says)."""

    class Config:
        graceful_timeout = 1.0

        @staticmethod
        def of_kind(kind):
            return []

    sent = []
    monkeypatch.setattr(commands, "_config_for_control", lambda args: Config())
    monkeypatch.setattr(commands, "_running", lambda config: 4242)
    monkeypatch.setattr(commands, "socket_path", lambda config: "/nonexistent.sock")

    def gone(*args, **kwargs):
        raise ControlError("cannot connect to the control socket")

    monkeypatch.setattr(commands, "request", gone)
    monkeypatch.setattr(commands.os, "kill", lambda pid, s: sent.append((pid, s)))
    monkeypatch.setattr(commands, "_wait_gone", lambda config, pid, timeout: True)
    monkeypatch.setattr(commands, "_say", lambda message: None)
    assert getattr(commands, command)(argparse.Namespace()) == 0
    assert sent == [(4242, sig)]


class _Section:
    def __init__(self, stop_timeout):
        self.settings = {"stop-timeout": stop_timeout}


class _Config:
    graceful_timeout = 30.0

    def __init__(self, *stop_timeouts):
        self.programs = [_Section(t) for t in stop_timeouts]

    def of_kind(self, kind):
        return self.programs if kind == "Process" else []


@pytest.mark.parametrize("how, service, workers", [
    ("graceful", 10.0 + 30.0 + 9.0, 31.0), ("upgrade", 10.0 + 30.0 + 9.0, 31.0),
    ("fast", 10.0 + 9.0, 5.0), ("hard", 3.0, 2.0)])
def test_each_stop_kind_has_its_deadlines(how, service, workers):
    d = signals.stop_deadlines(_Config(4.0, 10.0), how)
    assert (d.service, d.workers) == (service, workers)
    assert d.total == service + workers + signals.STOP_MARGIN


def test_the_service_margin_covers_a_job_runs_kill_grace_twice_and_the_sweep():
    from pyd.service.supervisor import KILL_GRACE

    assert signals.SERVICE_STOP_MARGIN == 2 * KILL_GRACE + 5.0
    assert signals.stop_deadlines(_Config(), "fast").service == signals.SERVICE_STOP_MARGIN


@pytest.mark.parametrize("command, how", [("stop", "fast"), ("graceful_stop", "graceful"),
                                          ("hard_stop", "hard")])
@pytest.mark.parametrize("socket", [True, False])
def test_the_cli_waits_as_long_as_the_stop_the_master_does_may_take(monkeypatch, command, how,
                                                                     socket):
    """Through the socket the master does the stop asked; by signal, what the signal means to
    it (a hard stop by signal is a fast one)."""
    config = _Config(7.0)
    waited = []
    monkeypatch.setattr(commands, "_config_for_control", lambda args: config)
    monkeypatch.setattr(commands, "_running", lambda config: 4242)
    monkeypatch.setattr(commands, "socket_path", lambda config: "/nonexistent.sock")

    def answer(*args, **kwargs):
        if not socket:
            raise ControlError("cannot connect to the control socket")
        return {"ok": True}

    monkeypatch.setattr(commands, "request", answer)
    monkeypatch.setattr(commands.os, "kill", lambda pid, s: None)
    monkeypatch.setattr(commands, "_wait_gone", lambda c, pid, timeout: waited.append(timeout)
                        or True)
    monkeypatch.setattr(commands, "_say", lambda message: None)
    assert getattr(commands, command)(argparse.Namespace()) == 0
    done = how if socket else ("fast" if how == "hard" else how)
    assert waited == [signals.stop_deadlines(config, done).total]

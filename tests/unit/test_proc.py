"""/proc readers: one parser of /proc/PID/stat, statm and /proc/self/fd for the CLI, the
service process and the workers."""

from __future__ import annotations

import os
import select
import subprocess
import sys

from pyd.system import proc


def test_the_stat_fields_come_after_the_last_parenthesis():
    # A command name may hold spaces and parentheses: "(a) b)" must not shift the fields.
    assert proc.parse_stat("4242 (a) b) S 17 4242 4242 0 -1") == proc.Stat("S", 17)
    assert proc.parse_stat("7 (zombie) Z 1 7 7") == proc.Stat("Z", 1)


def test_this_process_is_alive_and_its_parent_is_its_parent():
    assert proc.alive(os.getpid())
    assert proc.stat(os.getpid()) == proc.Stat(proc.stat(os.getpid()).state, os.getppid())


def test_a_process_that_is_gone_or_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while proc.stat(child.pid) is not None and proc.stat(child.pid).state != "Z":
        select.select([], [], [], 0.01)
    assert not proc.alive(child.pid)  # a zombie until reaped
    assert child.pid not in proc.children_of(os.getpid())
    child.wait()
    assert proc.stat(child.pid) is None and not proc.alive(child.pid)


def test_children_are_found_by_their_parent():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in proc.children_of(os.getpid())
        assert child.pid not in proc.children_of(child.pid)
    finally:
        child.kill()
        child.wait()


def test_rss_is_in_bytes_and_zero_when_unreadable():
    assert proc.rss() > 1 << 20  # an interpreter takes more than a megabyte
    assert proc.rss(os.getpid()) > 0
    assert proc.rss(2 ** 22 + 1) == 0  # above the largest pid


def test_descriptors_are_found_by_what_they_point_to():
    r, w = os.pipe()
    try:
        found = proc.fds_to(("pipe:",))
        assert r in found and w in found
        assert proc.fds_to(("no such thing:",)) == []
    finally:
        os.close(r)
        os.close(w)

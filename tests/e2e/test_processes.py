"""Process sections end to end: supervised programs in a real pyd, and the process tree after.

A program killed with -9 comes back; one that crashes at once backs off (the delay doubles up to
its ceiling); stopping pyd leaves none of a program's processes, grandchildren and a child that
left the process group included; output reaches channel process.NAME; `pyd process restart`,
stop-signal/stop-timeout, user/cwd/env; a killed service process is restarted without leaving
the old programs behind.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import time
from pathlib import Path

import pytest
from harness import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

HELLO = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''


def config(directory: Path, sections: str) -> str:
    (directory / "hello.py").write_text(HELLO)
    return (f"user root;\nworkers 2;\ncwd {directory};\ngraceful-timeout 5s;\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{free_port()}; app hello:app; "
            f"access-log off; }}\n{sections}")


def descendants(p, pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        for child in p.children(todo.pop()):
            out.add(child)
            todo.append(child)
    return out


def programs(p) -> dict[str, dict]:
    """`pyd process list`, as {name: {pid, state, restarts, last exit}}."""
    out = {}
    for line in p.cli("process", "list", check=True).stdout.splitlines()[1:]:
        m = re.match(r"(\S+) +(\S+) +(\S+) +(\S+) +(\d+) +(.+)$", line)
        assert m, line
        out[m.group(1)] = {"pid": int(m.group(2)) if m.group(2) != "-" else None,
                           "state": m.group(3), "restarts": int(m.group(5)),
                           "last_exit": m.group(6)}
    return out


def running(p, name: str, count: int = 1) -> dict[str, dict]:
    p.service()  # started right after the workers serve: `pyd start` does not wait for it

    def check():
        progs = programs(p)
        mine = {k: v for k, v in progs.items() if k == name or k.startswith(name + ":")}
        return mine if len(mine) == count and all(v["state"] == "running"
                                                   for v in mine.values()) else None

    return wait_until(check, 10, f"{name} running", step=0.1)


def test_killed_program_is_restarted_and_its_output_is_logged(pyd_factory, tmp_path):
    p = pyd_factory(config(tmp_path, '''
Process:echo { command "sh -c 'echo hello from $$; echo oops >&2; exec sleep 1000'";
               restart-delay 200ms; }
'''))
    p.start()
    first = running(p, "echo")["echo"]["pid"]
    assert p.children(p.service()) == [first]
    assert os.getpgid(first) == first, "its own process group"
    p.wait_for_log(rf"process\.echo: hello from {first}\n")
    p.wait_for_log(r"process\.echo: oops\n")
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: (lambda v: v["pid"] if v["state"] == "running" and
                                 v["pid"] != first else None)(programs(p)["echo"]), 5,
                        "a new echo")
    assert not p.alive(first)
    p.wait_for_log(rf"process\.echo: echo \(pid {first}\) exited after [\d.]+s: killed by "
                   rf"signal SIGKILL; restarting in 0\.20s")
    p.wait_for_log(rf"process\.echo: hello from {second}\n")
    info = programs(p)["echo"]
    assert info["restarts"] == 1 and info["last_exit"] == "killed by signal SIGKILL", info
    status = p.fullstatus()
    assert re.search(rf"echo +{second} +running +[\d.]+s +1 +killed by signal SIGKILL", status), \
        status
    assert re.search(r"service process: pid \d+ \[supervisor\]", status), status


def test_a_program_that_crashes_at_once_backs_off(pyd_factory, tmp_path):
    p = pyd_factory(config(tmp_path, '''
Process:crash { command "sh -c 'echo starting; exit 3'"; restart-delay 100ms;
                restart-delay-max 800ms; }
'''))
    p.start()
    time.sleep(3.5)
    log = p.log()
    starts = log.count("process.crash: starting")
    delays = [float(d) for d in re.findall(r"crash \(pid \d+\) exited after [\d.]+s: exit status 3; "
                                           r"restarting in ([\d.]+)s", log)]
    # without backoff: 35 starts in 3.5s; with 0.1, 0.2, 0.4, 0.8, 0.8 ...: about 7
    assert 4 <= starts <= 9, (starts, delays)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8], delays
    assert max(delays) == 0.8, "the ceiling holds"
    info = programs(p)["crash"]
    assert info["last_exit"] == "exit status 3" and info["restarts"] >= 3, info


def test_restart_on_failure_and_never(pyd_factory, tmp_path):
    p = pyd_factory(config(tmp_path, '''
Process:done { command "sh -c 'echo finished'"; restart on-failure; restart-delay 100ms; }
Process:once { command "sh -c 'exit 1'"; restart never; }
'''))
    p.start()
    p.wait_for_log(r"process\.done: done will not be restarted \(restart on-failure\)")
    p.wait_for_log(r"process\.once: once will not be restarted \(restart never\)")
    progs = programs(p)
    assert progs["done"]["state"] == "exited" and progs["done"]["last_exit"] == "exit status 0"
    assert progs["once"]["state"] == "exited" and progs["once"]["last_exit"] == "exit status 1"
    assert p.log().count("process.done: finished") == 1


def test_stop_leaves_no_process_of_any_program(pyd_factory, tmp_path):
    # grandchildren in the group, and one that left it (setsid): none may survive pyd
    p = pyd_factory(config(tmp_path, '''
Process:tree { command "sh -c 'sleep 1000 & setsid sleep 1001 & sleep 1002'"; numprocs 2;
               stop-timeout 2s; }
'''))
    p.start()
    running(p, "tree", 2)
    service = p.service()
    tree = wait_until(lambda: (lambda d: d if len(d) == 8 else None)(descendants(p, service)),
                      5, "two sh with three sleeps each")
    escaped = [pid for pid in tree if os.getsid(pid) == pid]
    assert len(escaped) == 2, "setsid put one sleep of each copy in a session of its own"
    p.stop()
    assert not any(p.alive(pid) for pid in tree | {service}), \
        [(pid, p.title(pid)) for pid in tree if p.alive(pid)]


def test_process_restart_stop_signal_and_timeout(pyd_factory, tmp_path):
    p = pyd_factory(config(tmp_path, '''
Process:stubborn { command "sh -c 'trap \\"\\" TERM; echo up; sleep 1000'"; stop-timeout 1s; }
Process:polite { command "sh -c 'trap \\"echo got INT; exit 0\\" INT; while :; do sleep 0.1; done'";
                 stop-signal INT; numprocs 2; }
'''))
    p.start()
    old = running(p, "stubborn")["stubborn"]["pid"]
    old_tree = descendants(p, old) | {old}
    began = time.monotonic()
    out = p.cli("process", "restart", "stubborn", check=True).stdout
    took = time.monotonic() - began
    new = running(p, "stubborn")["stubborn"]["pid"]
    assert new != old and f"restarted stubborn (pid {new})" in out, out
    assert took >= 1.0, "it ignores SIGTERM: stop-timeout passes before SIGKILL"
    assert not any(p.alive(pid) for pid in old_tree)
    p.wait_for_log(rf"stubborn \(pid {old}\) did not stop within 1s of SIGTERM; killed")

    polite = running(p, "polite", 2)
    out = p.cli("process", "restart", "polite:2", check=True).stdout
    after = running(p, "polite", 2)
    assert after["polite:1"]["pid"] == polite["polite:1"]["pid"], "only the copy asked for"
    assert after["polite:2"]["pid"] != polite["polite:2"]["pid"]
    p.wait_for_log(r"process\.polite: \[2\] got INT")
    assert "polite:2 (pid" in out
    bad = p.cli("process", "restart", "nope")
    assert bad.returncode == 1 and "no Process:nope" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_cwd_and_env(pyd_factory, tmp_path):
    nobody = pwd.getpwnam("nobody")
    p = pyd_factory(config(tmp_path, '''
Process:who { command "sh -c 'echo $GREETING $SECOND from $(pwd) as $(id -u) number $PYD_PROCESS_NUMBER; exec sleep 1000'";
              user nobody; cwd /tmp; env { GREETING hello; SECOND "two words"; } }
'''))
    p.start()
    pid = running(p, "who")["who"]["pid"]
    assert p.ids(pid) == (nobody.pw_uid, nobody.pw_gid)
    assert p.ids(p.service())[0] == 0
    p.wait_for_log(rf"process\.who: hello two words from /tmp as {nobody.pw_uid} number 1\n")


def test_a_killed_service_process_is_restarted_without_leftovers(pyd_factory, tmp_path):
    p = pyd_factory(config(tmp_path, '''
Process:tree { command "sh -c 'sleep 1000 & setsid sleep 1001 & sleep 1002'"; }
'''))
    p.start()
    running(p, "tree")
    service = p.service()
    old_tree = wait_until(lambda: (lambda d: d if len(d) == 4 else None)(descendants(p, service)),
                          5, "sh and three sleeps")
    workers = p.workers()
    os.kill(service, signal.SIGKILL)
    # the master inherits the orphans (it is a subreaper), kills them, restarts the service
    wait_until(lambda: not any(p.alive(pid) for pid in old_tree), 5, "the old programs gone")
    new_service = wait_until(
        lambda: (lambda s: s[0] if s and s[0] != service else None)(
            [c for c in p.children(p.master_pid) if p.title(c).startswith("pyd: service")]),
        10, "a new service process")
    assert new_service != service
    running(p, "tree")
    assert len(wait_until(lambda: (lambda d: d if len(d) == 4 else None)(
        descendants(p, new_service)), 5, "the program again")) == 4
    assert p.workers() == workers, "the workers were not touched"
    p.wait_for_log(r"the service process \(pid \d+\) killed by signal SIGKILL; restarting it")

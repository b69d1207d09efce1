"""Cron sections: next-run arithmetic with a controlled clock, then jobs in a real pyd.

The unit part drives `Cron.next_after` and `Interval.next_after` with chosen instants (time
zones, both daylight-saving changes); the end-to-end part starts pyd with workers and checks
that a job fires once per tick in the one service process, overlap, timeouts (the whole process
group goes), outcomes in the log, `pyd cron list|run`, `pyd update` and `pyd reload`.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import free_port, wait_until, world_readable_dir

from pyd.config import ConfigError, load
from pyd.service.scheduler import Cron, Interval


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()


def ticks(schedule, start: float, n: int) -> list[str]:
    """The next n ticks after `start`, as UTC text."""
    out, t = [], start
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M"))
    return out


# -- next-run computation -------------------------------------------------------------------------

def test_cron_syntax_in_utc():
    assert ticks(Cron("*/5 * * * *", "UTC"), utc(2024, 1, 1, 12, 0), 3) == [
        "01-01 12:05", "01-01 12:10", "01-01 12:15"]
    # strictly after: a tick is never returned for the instant it happens at
    assert Cron("0 * * * *", "UTC").next_after(utc(2024, 1, 1, 12)) == utc(2024, 1, 1, 13)
    assert ticks(Cron("30 4 * * 1", "UTC"), utc(2024, 1, 1, 5), 2) == [  # Mondays
        "01-08 04:30", "01-15 04:30"]
    assert ticks(Cron("@daily", "UTC"), utc(2024, 2, 28, 1), 2) == ["02-29 00:00", "03-01 00:00"]


def test_cron_in_a_time_zone():
    # 09:00 in Tokyo (UTC+9, no daylight saving) is midnight UTC
    assert ticks(Cron("0 9 * * *", "Asia/Tokyo"), utc(2024, 1, 1, 12), 2) == [
        "01-02 00:00", "01-03 00:00"]
    # Berlin in winter is UTC+1, in summer UTC+2
    assert ticks(Cron("0 9 * * *", "Europe/Berlin"), utc(2024, 1, 1, 12), 1) == ["01-02 08:00"]
    assert ticks(Cron("0 9 * * *", "Europe/Berlin"), utc(2024, 7, 1, 12), 1) == ["07-02 07:00"]


def test_dst_spring_forward_runs_a_skipped_time_once_at_the_change():
    # Europe/Berlin, 2024-03-31: at 01:00 UTC the clocks jump from 02:00 to 03:00.
    berlin = Cron("30 2 * * *", "Europe/Berlin")
    assert ticks(berlin, utc(2024, 3, 30, 12), 3) == [
        "03-31 01:00",  # 02:30 does not exist that day: at the change (03:00 CEST)
        "04-01 00:30", "04-02 00:30"]
    # every 30 minutes keeps counting real time: the skipped 02:00 and 02:30 make one run
    assert ticks(Cron("*/30 * * * *", "Europe/Berlin"), utc(2024, 3, 31, 0, 15), 4) == [
        "03-31 00:30", "03-31 01:00", "03-31 01:30", "03-31 02:00"]
    # America/New_York, 2024-03-10: 02:00 EST -> 03:00 EDT at 07:00 UTC
    assert ticks(Cron("0 2 * * *", "America/New_York"), utc(2024, 3, 9, 12), 2) == [
        "03-10 07:00", "03-11 06:00"]


def test_dst_fall_back_runs_a_fixed_time_once_and_wildcard_hours_twice():
    # Europe/Berlin, 2024-10-27: at 01:00 UTC the clocks go back from 03:00 to 02:00.
    assert ticks(Cron("30 2 * * *", "Europe/Berlin"), utc(2024, 10, 26, 12), 2) == [
        "10-27 00:30",  # 02:30 CEST, the first of the two; not 02:30 CET an hour later
        "10-28 01:30"]  # 02:30 CET
    # a job about elapsed time runs in both passes of the repeated hour
    assert ticks(Cron("*/30 * * * *", "Europe/Berlin"), utc(2024, 10, 26, 23, 45), 6) == [
        "10-27 00:00", "10-27 00:30", "10-27 01:00", "10-27 01:30", "10-27 02:00",
        "10-27 02:30"]
    assert ticks(Cron("0 * * * *", "Europe/Berlin"), utc(2024, 10, 26, 23, 30), 3) == [
        "10-27 00:00", "10-27 01:00", "10-27 02:00"]
    # asked from inside the first pass, the hourly job's next tick is the second 02:00
    assert Cron("0 * * * *", "Europe/Berlin").next_after(utc(2024, 10, 27, 0, 50)) == \
        utc(2024, 10, 27, 1, 0)


def test_interval_counts_from_its_anchor_and_skips_what_was_missed():
    every = Interval(30.0, 1000.0)
    assert every.next_after(1000.0) == 1030.0
    assert every.next_after(1029.9) == 1030.0
    assert every.next_after(1030.0) == 1060.0
    assert every.next_after(5000.0) == 5020.0  # a long stall: one tick, then on the grid
    assert every.next_after(900.0) == 1000.0
    assert str(every) == "every 30s"


@pytest.mark.parametrize("body, message", [
    ('every 1s;', "needs run (a Python callable) or command"),
    ('run a.b:c;', "needs schedule or every"),
    ('every 1s; schedule "* * * * *"; run a:b;', "needs schedule or every (one of them)"),
    ('every 1s; run a:b; command "x";', "needs run (a Python callable) or command (one of"),
    ('schedule "61 * * * *"; run a:b;', 'invalid cron expression "61 * * * *"'),
    ('schedule "* * * * *"; timezone Mars/Olympus; run a:b;', 'unknown time zone'),
    ('every 30s; timezone UTC; run a:b;', "timezone applies to schedule"),
    ('every 0s; run a:b;', '"every"'),
    ('schedule "* * * * *"; run a:b; overlap sometimes;', "expected one of skip, queue"),
])
def test_bad_cron_sections_are_config_errors(tmp_path: Path, body: str, message: str):
    conf = tmp_path / "pyd.conf"
    conf.write_text(f"Cron:job {{ {body} }}\n")
    with pytest.raises(ConfigError) as e:
        load(str(conf))
    assert message in e.value.format()


# -- end to end -----------------------------------------------------------------------------------

HELLO = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''

JOBS = '''
import os
import signal
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def hello():
    print("hello from the job, uid", os.getuid())


def boom():
    raise RuntimeError("boom in a job")


def hang():
    with open(os.path.join(HERE, "py.pid"), "w") as f:
        f.write(str(os.getpid()))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL will do
    while True:
        time.sleep(1)
'''

# Imports only what the job runner already has: on a machine where the Python installation is
# not readable by the user (as on the test machine), a job as `nobody` can import nothing new.
WHOAMI = '''
import os


def whoami():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "py"), "w") as f:
        f.write(str(os.getuid()))
'''


def config(directory: Path, jobs: str, workers: int = 2, user: str = "root") -> str:
    return (f"user {user};\nworkers {workers};\ncwd {directory};\ngraceful-timeout 5s;\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{free_port()}; app hello:app; "
            f"access-log off; }}\n{jobs}")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(HELLO)
    (tmp_path / "jobs.py").write_text(JOBS)
    return tmp_path


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_job_fires_once_per_tick_whatever_the_number_of_workers(pyd_factory, site):
    runs = site / "runs"
    p = pyd_factory(config(site, f'Cron:tick {{ every 1s; command "echo $PPID >> {runs}"; }}\n',
                           workers=4))
    p.start()
    assert len(p.workers()) == 4
    wait_until(lambda: lines(runs), 5, "the first run")
    first = time.monotonic()
    time.sleep(4.6)
    seen = lines(runs)
    elapsed = time.monotonic() - first
    # ticks at 0, 1, 2, 3, 4 (and perhaps 5 with a slow file system); 20 would be once per worker
    assert 4 <= len(seen) <= 6, (len(seen), elapsed)
    service = p.service()
    assert set(seen) == {str(service)}, "every run comes from the one service process"
    assert p.title(service) == "pyd: service [scheduler]"
    log = p.log()
    assert re.search(r"cron\.tick: run ok in \d+\.\d+s", log), log[-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_overlap_skip_queue_allow(pyd_factory, site):
    def job(name: str, overlap: str) -> str:
        out = site / name
        return (f'Cron:{name} {{ every 1s; overlap {overlap}; command "echo start $(date +%s.%N) '
                f'>> {out}; sleep 2.2; echo end $(date +%s.%N) >> {out}"; }}\n')

    p = pyd_factory(config(site, job("skip", "skip") + job("queue", "queue")
                           + job("allow", "allow")))
    p.start()
    time.sleep(7.5)
    p.stop()

    def runs(name: str) -> list[tuple[float, float]]:
        """(start, end) of each run; a run cut by the stop ends at infinity."""
        words = lines(site / name)
        starts = [float(words[i + 1]) for i in range(0, len(words), 2) if words[i] == "start"]
        ends = [float(words[i + 1]) for i in range(0, len(words), 2) if words[i] == "end"]
        return list(zip(starts, ends + [float("inf")] * (len(starts) - len(ends))))

    def overlapping(rs: list[tuple[float, float]]) -> bool:
        return any(b[0] < a[1] for a, b in zip(rs, rs[1:]))

    # ticks at about 1, 2, ... 7s; each run takes 2.2s
    skip, queue, allow = runs("skip"), runs("queue"), runs("allow")
    assert 2 <= len(skip) <= 3 and not overlapping(skip), skip
    # queued: the next run starts as soon as the last ends, never beside it
    assert 2 <= len(queue) <= 4 and not overlapping(queue), queue
    assert all(b[0] - a[1] < 0.5 for a, b in zip(queue, queue[1:])), queue
    assert len(allow) >= 5 and overlapping(allow), allow
    log = p.log()
    assert "cron.skip: skipped: the last run (pid" in log
    assert "cron.queue: queued: the last run (pid" in log
    assert "cron.allow: skipped" not in log and "cron.allow: queued" not in log


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_outcomes_timeouts_and_cron_run(pyd_factory, site):
    never = 'schedule "0 0 1 1 *"'
    p = pyd_factory(config(site, f'''
Cron:hello {{ {never}; run jobs:hello; }}
Cron:boom {{ {never}; run jobs:boom; }}
Cron:fails {{ {never}; command "echo partial output; echo went wrong >&2; exit 7"; }}
Cron:hang {{ {never}; timeout 1s;
    command "sleep 300 & echo $! > {site}/bg.pid; echo $$ > {site}/fg.pid; sleep 300"; }}
Cron:hangpy {{ {never}; timeout 1s; run jobs:hang; }}
'''))
    p.start()
    ok = p.cli("cron", "run", "hello")
    assert ok.returncode == 0 and "Cron:hello" in ok.stdout and ": ok after" in ok.stdout, ok
    p.wait_for_log(r"cron\.hello: hello from the job, uid 0")
    p.wait_for_log(r"cron\.hello: run \(manual\) ok in \d")

    boom = p.cli("cron", "run", "boom")
    assert boom.returncode == 1 and "exit status 1" in boom.stderr, boom
    m = p.wait_for_log(r"ERROR +\[\d+\] cron\.boom: run \(manual\) failed after [^\n]*exit status "
                       r"1:(\n  [^\n]*)+")
    assert "RuntimeError: boom in a job" in m.group(0) and "jobs.py" in m.group(0)
    assert "jobrun.py" not in m.group(0), "the traceback starts at the job"

    fails = p.cli("cron", "run", "fails")
    assert fails.returncode == 1 and "exit status 7" in fails.stderr
    m = p.wait_for_log(r"cron\.fails: run \(manual\) failed after [^\n]*: exit status 7:\n"
                       r"\s+went wrong")
    assert "cron.fails: partial output" in p.log()

    began = time.monotonic()
    hang = p.cli("cron", "run", "hang")
    took = time.monotonic() - began
    assert hang.returncode == 1 and "timeout" in hang.stderr, hang
    assert took < 8, took
    fg, bg = (int((site / f).read_text()) for f in ("fg.pid", "bg.pid"))
    assert not p.alive(fg) and not p.alive(bg), "the whole process group is killed"
    p.wait_for_log(r"cron\.hang: run \(manual\) killed: still running after its timeout of 1")

    began = time.monotonic()
    hangpy = p.cli("cron", "run", "hangpy")
    took = time.monotonic() - began
    assert hangpy.returncode == 1 and "timeout" in hangpy.stderr, hangpy
    assert took < 10, took  # 1s, then SIGTERM (ignored), SIGKILL 2s later
    assert not p.alive(int((site / "py.pid").read_text()))

    listing = p.cli("cron", "list", check=True).stdout
    assert re.search(r"boom +0 0 1 1 \* +\d{4}-01-01 00:00:00 +\d{4}-\d\d-\d\d [\d:]+ +"
                     r"exit status 1", listing), listing
    assert re.search(r"hello +0 0 1 1 \* .* ok ", listing), listing
    assert re.search(r"hangpy +0 0 1 1 \* +\d{4}-01-01 00:00:00 .*timeout \(1s\)", listing), \
        listing
    unknown = p.cli("cron", "run", "nope")
    assert unknown.returncode == 1 and "no Cron:nope" in unknown.stderr


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_update_changes_the_schedule_and_reload_leaves_the_service_alone(pyd_factory, site):
    a, b = site / "a", site / "b"
    p = pyd_factory(config(site, f'Cron:tick {{ every 1s; command "date +%s.%N >> {a}"; }}\n'))
    p.start()
    wait_until(lambda: len(lines(a)) >= 2, 6, "two runs")
    service = p.service()
    workers = set(p.workers())

    out = p.cli("reload", check=True).stdout
    assert "replaced" in out
    assert not workers & set(p.workers())
    assert p.service() == service, "reload replaces workers, not the service process"
    before = len(lines(a))
    wait_until(lambda: len(lines(a)) >= before + 2, 5, "runs after the reload")
    times = [float(t) for t in lines(a)]
    assert max(b - a for a, b in zip(times, times[1:])) < 2.0, "no tick lost to the reload"

    p.conf.write_text(p.conf.read_text().replace(
        "every 1s;", 'schedule "0 0 1 1 *";').replace(
        "access-log off; }\n", f'access-log off; }}\nCron:new {{ every 1s; command "echo x >> {b}"; }}\n'))
    p.cli("update", check=True)
    wait_until(lambda: lines(b), 5, "the new job's first run")
    settled = len(lines(a))
    time.sleep(2.5)
    assert len(lines(a)) <= settled + 1, "the old every-1s schedule is gone"
    listing = p.cli("cron", "list", check=True).stdout
    assert re.search(r"tick +0 0 1 1 \* +\d{4}-01-01 00:00:00", listing), listing
    assert re.search(r"new +every 1s", listing), listing
    assert p.service() == service, "update reconfigures the service process in place"
    assert "Cron:tick changed; rescheduled" in p.log()


@pytest.mark.e2e
@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_jobs_run_as_the_configured_user(pyd_factory):
    import pwd

    site = world_readable_dir()
    (site / "hello.py").write_text(HELLO)
    (site / "whoami.py").write_text(WHOAMI)
    out = site / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    for f in site.iterdir():
        f.chmod(0o777 if f.is_dir() else 0o644)
    nobody = pwd.getpwnam("nobody").pw_uid
    p = pyd_factory(config(site, f'''
Cron:py {{ schedule "0 0 1 1 *"; run whoami:whoami; }}
Cron:sh {{ schedule "0 0 1 1 *"; command "id -u > {out}/sh"; }}
''', user="nobody"), directory=site / "pyd")
    p.start()
    assert p.ids(p.service())[0] == 0, "the service process keeps root"
    p.cli("cron", "run", "py", check=True)
    p.cli("cron", "run", "sh", check=True)
    assert (out / "py").read_text() == str(nobody)
    assert (out / "sh").read_text().strip() == str(nobody)

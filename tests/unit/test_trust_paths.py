"""What root may import and open, as pure functions: sys.path, child interpreters, writers."""

from __future__ import annotations

import errno
import os
import pwd
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pyd.config.loader import load_file, unsafe_sources
from pyd.system import trust
from pyd.system.daemon import MASTER_ONLY_ENV, UPGRADE_FD_ENV, scrub_environ

ROOT = Path(__file__).resolve().parent.parent.parent
STDLIB = os.path.dirname(os.__file__)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")


def test_the_current_directory_is_untrusted_on_sys_path(tmp_path):
    path = ["", str(tmp_path), str(tmp_path) + "/", STDLIB, "."]
    assert trust.untrusted_sys_path(path, str(tmp_path)) == ["", str(tmp_path),
                                                             str(tmp_path) + "/", "."]


def test_the_interpreters_own_directory_stays_even_when_it_is_the_current_one():
    assert trust.untrusted_sys_path([STDLIB], STDLIB) == []


def test_python_m_from_a_directory_leaves_nothing_of_it_on_sys_path(tmp_path):
    (tmp_path / "argparse.py").write_text("raise SystemExit('the planted argparse ran')\n")
    code = ("import sys; from pyd.system.trust import scrub_sys_path; scrub_sys_path(); "
            "import argparse; print(repr(sys.path))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert str(tmp_path) not in out.stdout and "''" not in out.stdout


def test_children_run_with_P_and_a_pythonpath_without_the_current_directory():
    argv = trust.python_command("pyd.service.jobrun", "--cwd", "/srv")
    assert argv[:4] == [sys.executable, "-P", "-m", "pyd.service.jobrun"]
    env = trust.python_environ({"PYTHONPATH": ":relative:/opt/lib:", "HOME": "/root"})
    entries = env["PYTHONPATH"].split(os.pathsep)
    assert entries[0] == "/opt/lib" and entries[-1] == str(ROOT)  # where pyd itself is
    assert "" not in entries and "relative" not in entries and env["HOME"] == "/root"


def test_import_path_lasts_for_the_block_and_can_come_last(tmp_path):
    before = list(sys.path)
    with trust.import_path([str(tmp_path)], last=True):
        assert sys.path[-1] == str(tmp_path) and sys.path[:-1] == before
    assert sys.path == before
    with trust.import_path([str(tmp_path)]):
        assert sys.path[0] == str(tmp_path)
    assert sys.path == before


def test_only_the_master_keeps_notify_socket_and_the_upgrade_variables():
    env = {name: "x" for name in MASTER_ONLY_ENV} | {"PATH": "/bin", "PYD_CONFIG": "/etc/p"}
    scrub_environ(env)
    assert env == {"PATH": "/bin", "PYD_CONFIG": "/etc/p"}
    assert "NOTIFY_SOCKET" in MASTER_ONLY_ENV and UPGRADE_FD_ENV in MASTER_ONLY_ENV


def test_the_soft_open_files_limit_goes_up_to_the_hard_one():
    code = ("from pyd.system.daemon import raise_nofile; import resource; raise_nofile(); "
            "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                               (128, 2048)))
    assert out.stdout.split() == ["2048", "2048"], out.stderr


# -- who can write, and links ---------------------------------------------------------------------

@pytest.fixture
def nobody():
    return pwd.getpwnam("nobody")


@as_root
def test_writers_names_the_directory_and_who_can_write_it(tmp_path, nobody):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "deep").mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    why = trust.writers(str(theirs / "deep" / "file"))
    assert why == f"the directory {theirs} is owned by nobody (uid {nobody.pw_uid})"
    assert trust.writers(str(theirs / "deep"), nobody.pw_uid, [nobody.pw_gid]) == why
    assert trust.writers(str(theirs), 12345, [12345]) is None  # not that user's to write
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    assert trust.writers(str(mine)) is None
    mine.chmod(0o777)
    assert trust.writers(str(mine)) == f"the directory {mine} is writable by everyone"
    mine.chmod(0o1777)  # sticky, like /tmp: others add names, replace none of ours
    assert trust.writers(str(mine)) is None


@as_root
def test_a_link_planted_in_their_directory_is_not_followed(tmp_path, nobody):
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    (theirs / "pyd.log").symlink_to(secret)
    with pytest.raises(OSError) as e:
        trust.open_nofollow(str(theirs / "pyd.log"), os.O_WRONLY | os.O_APPEND)
    assert e.value.errno == errno.ELOOP and "symbolic link" in e.value.strerror
    assert secret.read_text() == "root's\n"
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o755)
    (ours / "pyd.log").symlink_to(secret)  # the administrator's own link is followed
    fd = trust.open_nofollow(str(ours / "pyd.log"), os.O_WRONLY | os.O_APPEND)
    os.close(fd)


@as_root
def test_config_files_and_include_directories_others_can_change_are_named(tmp_path, nobody):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "a.conf").write_text("workers 2;\n")
    main = tmp_path / "pyd.conf"
    main.write_text(f"include {confd}/*.conf;\ninclude {tmp_path}/empty.d/*.conf;\n")
    (tmp_path / "empty.d").mkdir()
    sources: list[str] = []
    load_file(str(main), {}, sources)
    assert sources == [str(main), str(confd), str(confd / "a.conf"), str(tmp_path / "empty.d")]
    assert unsafe_sources(sources) == []
    os.chown(tmp_path / "empty.d", nobody.pw_uid, nobody.pw_gid)  # empty: read on the next update
    (confd / "a.conf").chmod(0o666)
    assert unsafe_sources(sources) == [
        f"{confd / 'a.conf'} can be changed by others: the file {confd / 'a.conf'} is writable "
        "by everyone",
        f"{tmp_path / 'empty.d'} can be changed by others: the directory {tmp_path / 'empty.d'} "
        f"belongs to uid {nobody.pw_uid}"]

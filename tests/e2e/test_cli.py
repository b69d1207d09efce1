"""The `pyd` command as users run it: a real process per test, its output and exit status.

Covers --version, --help, usage errors (exit 2), and `pyd configtest` on good, broken and
importing configs; the commands other issues build are not exercised here.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyd
from pyd.cli import main as cli
from pyd.config import load

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "conf" / "pyd.conf"
ME = pwd.getpwuid(os.geteuid()).pw_name


def pyd_run(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `pyd ARGS` with no PYD_* variables from the outside unless given in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYD_")}
    clean["PYTHONPATH"] = str(REPO) + os.pathsep + clean.get("PYTHONPATH", "")
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyd", *args], capture_output=True,
                          text=True, env=clean, cwd=cwd, timeout=50)


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def config(tmp_path):
    """config(text, name) -> path of a config file in tmp_path."""

    def write(text: str, name: str = "pyd.conf") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# -- the command line itself --------------------------------------------------------------------

def test_version():
    r = pyd_run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"pyd {pyd.__version__}"


def test_help_lists_every_command_with_one_line_each():
    r = pyd_run("--help")
    assert r.returncode == 0
    section = r.stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    names = [c.name for c in cli.COMMANDS]
    assert len(section) == len(names)
    for line, name in zip(section, names):
        m = re.fullmatch(r"  (\S+) +(\S.*)", line)
        assert m, line
        assert m.group(1) == name
    assert "configtest" in names


def test_command_help():
    r = pyd_run("configtest", "--help")
    assert r.returncode == 0
    assert "--print {conf,yaml}" in r.stdout and "-q, --quiet" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["frobnicate"], "pyd: unknown command 'frobnicate'; see pyd --help"),
    (["confgtest"], "pyd: unknown command 'confgtest' (did you mean 'configtest'?); see pyd --help"),
    ([], "pyd: no command given; see pyd --help"),
    (["configtest", "--quite"], "pyd: unknown option '--quite' (did you mean '--quiet'?)"),
    (["configtest", "--workrs=3"], "pyd: unknown option '--workrs' (did you mean '--workers'?)"),
    (["configtest", "--workers"], "pyd: option '--workers' needs a value: --workers=4"),
    (["configtest", "extra"], "pyd: unexpected argument 'extra'"),
    (["configtest", "--print", "json"],
     "pyd: argument --print: invalid choice: 'json' (choose from 'conf', 'yaml')"),
    (["configtest", "-c"], "pyd: argument -c/--config: expected one argument"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    r = pyd_run(*args)
    assert r.returncode == 2, r.stderr
    assert one_line(r.stderr) == message
    assert r.stdout == ""


def test_commands_match_ignoring_case_and_dashes():
    assert cli._command("CONFIGTEST").name == "configtest"
    assert pyd_run("ConfigTest", "-q", "-c", str(BUNDLED)).returncode == 0


def test_a_command_not_built_yet_says_so_and_fails(monkeypatch, capsys):
    not_built = getattr(cli, "_not_built", None)
    if not_built is None:
        pytest.skip("every command is built")
    fake = cli.Command("frobnicate", "a command of the future", not_built("frobnicate"))
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, fake])
    assert cli.main(["frobnicate"]) == cli.EXIT_FAIL
    err = capsys.readouterr().err
    assert one_line(err) == "pyd: 'frobnicate' is not available in this version of pyd yet"


# -- configtest ---------------------------------------------------------------------------------

def test_configtest_on_the_bundled_config():
    r = pyd_run("configtest", "-c", str(BUNDLED))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"pyd: using configuration file {BUNDLED}"
    assert f"pyd: the configuration file {BUNDLED} syntax is ok" in lines
    assert lines[-1] == f"pyd: configuration file {BUNDLED} test is successful"
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith("directive ")


def test_configtest_finds_conf_pyd_conf_from_the_repository(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pyd.conf").write_text(f"user {ME};\n")
    if Path("/etc/pyd/pyd.conf").exists() or Path("/etc/pyd.conf").exists():
        pytest.skip("a system config would be found first")
    r = pyd_run("configtest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == "pyd: using configuration file conf/pyd.conf"


def test_configtest_uses_pyd_config(config):
    path = config(f"user {ME};\n")
    r = pyd_run("configtest", "--no-imports", env={"PYD_CONFIG": str(path)})
    assert r.returncode == 0, r.stderr
    assert f"using configuration file {path}" in r.stderr


def test_config_option_before_the_command(config):
    path = config(f"user {ME};\n")
    assert pyd_run("-c", str(path), "configtest", "-q").returncode == 0
    assert pyd_run(f"--config={path}", "configtest", "-q").returncode == 0


def test_configtest_quiet_prints_nothing_on_success():
    r = pyd_run("configtest", "-q", "-c", str(BUNDLED))
    assert r.returncode == 0
    assert (r.stdout, r.stderr) == ("", "")


@pytest.mark.parametrize("fmt, suffix", [("conf", ".conf"), ("yaml", ".yaml")])
def test_configtest_print_reloads_to_the_same_config(tmp_path, fmt, suffix):
    r = pyd_run("configtest", "--print", fmt, "-c", str(BUNDLED))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # only the configuration on stdout, ready for a pipe
    printed = tmp_path / ("printed" + suffix)
    printed.write_text(r.stdout)
    assert load(str(printed), env={}) == load(str(BUNDLED), env={})


def test_configtest_print_includes_overrides(tmp_path):
    r = pyd_run("configtest", "--print", "conf", "--no-imports", "-c", str(BUNDLED),
                "--workers=7", env={"PYD_MAX_REQUESTS": "9"})
    assert r.returncode == 0, r.stderr
    assert "\nworkers 7;\n" in r.stdout and "\nmax-requests 9;\n" in r.stdout


def test_configtest_broken_config(config):
    path = config("user nobody;\nworkers 4\nmax-requests 10;\n")
    r = pyd_run("configtest", "-c", str(path))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"pyd: using configuration file {path}",
        f"{path}:2:10: error: missing ';' after \"workers\"",
        "    workers 4",
        "             ^",
        f"pyd: configuration file {path} test failed",
    ]


def test_configtest_quiet_still_prints_errors(config):
    path = config("workers 0;\n")
    r = pyd_run("configtest", "-q", "-c", str(path))
    assert r.returncode == 1
    assert f"{path}:1:9: error: \"workers\": 0 is out of range" in r.stderr


def test_configtest_reports_every_problem(config):
    path = config("workers 0;\nmax-request 1;\n")
    r = pyd_run("configtest", "-c", str(path))
    assert r.returncode == 1
    assert f"{path}:1:9: error:" in r.stderr and f"{path}:2:1: error:" in r.stderr


def test_configtest_missing_file(tmp_path):
    r = pyd_run("configtest", "-c", str(tmp_path / "none.conf"))
    assert r.returncode == 1
    assert f"error: config file {tmp_path}/none.conf does not exist" in r.stderr.splitlines()
    assert "Traceback" not in r.stderr


def test_configtest_bad_override_points_at_the_command_line(config):
    path = config(f"user {ME};\n")
    r = pyd_run("configtest", "-c", str(path), "--workers=0")
    assert r.returncode == 1
    assert "command line: error: \"workers\": 0 is out of range" in r.stderr
    assert "    --workers=0\n" in r.stderr


def test_configtest_unknown_environment_override(config):
    path = config(f"user {ME};\n")
    r = pyd_run("configtest", "-c", str(path), env={"PYD_WORKERZ": "3"})
    assert r.returncode == 1
    assert ('environment: error: unknown directive "workerz" in PYD_WORKERZ '
            '(did you mean "workers"?)') in r.stderr


def test_configtest_yaml_config(config):
    path = config(f"user: {ME}\nworkers: 3\n", "pyd.yaml")
    r = pyd_run("configtest", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^workers +3 +auto +" + re.escape(f"{path}:2") + "$", r.stdout, re.M)


def test_import_check_reports_a_failing_app_at_its_directive(tmp_path, config):
    (tmp_path / "brokenapp.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "goodapp.py").write_text("def application(environ, start_response):\n"
                                         "    return []\nnot_callable = 1\n")
    path = config(f"user {ME};\ncwd {tmp_path};\n"
                  "Pool:HTTPServer {\n"
                  "    listen 127.0.0.1:8080;\n"
                  "    app brokenapp:application;\n"
                  "    location /ok/ { app goodapp:application; }\n"
                  "    location /no/ { app goodapp:not_callable; }\n"
                  "    location /gone/ { app goodapp:missing; }\n"
                  "}\n")
    r = pyd_run("configtest", "-c", str(path))
    assert r.returncode == 1, r.stderr
    err = r.stderr
    assert f"{path}:5:5: error: cannot import brokenapp:application: RuntimeError: boom at import" \
        f" (at {tmp_path}/brokenapp.py:1)\n        app brokenapp:application;\n        ^~~" in err
    assert f"{path}:7:21: error: goodapp:not_callable is not callable" in err
    assert f"{path}:8:23: error: cannot import goodapp:missing: module 'goodapp' has no " \
           "attribute 'missing'" in err
    assert "goodapp:application" not in err
    assert err.splitlines()[-1] == f"pyd: configuration file {path} test failed"
    assert "Traceback" not in err


def test_import_check_can_be_skipped(tmp_path, config):
    path = config(f"user {ME};\ncwd {tmp_path};\n"
                  "Pool:HTTPServer { listen 127.0.0.1:8080; app nosuchmodule:app; }\n")
    assert pyd_run("configtest", "-c", str(path)).returncode == 1
    assert pyd_run("configtest", "--no-imports", "-c", str(path)).returncode == 0


def test_settings_table_shows_where_each_value_came_from(config):
    path = config(f"user {ME};\nmax-requests 100;\nlog-level debug;\n")
    r = pyd_run("configtest", "--no-imports", "-c", str(path), "--max-requests=5",
                "--verbose-tty", env={"PYD_WORKERS": "3"})
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert re.fullmatch(rf"user +{ME} +- +{re.escape(str(path))}:1", rows["user"])
    assert re.fullmatch(r"workers +3 +auto +environment \(PYD_WORKERS\)", rows["workers"])
    assert re.fullmatch(r"max-requests +5 +0 +command line", rows["max-requests"])
    assert re.fullmatch(r"verbose-tty +on +off +command line", rows["verbose-tty"])
    assert re.fullmatch(rf"log-level +debug +info +{re.escape(str(path))}:3", rows["log-level"])
    assert re.fullmatch(r"graceful-timeout +30s +30s +default", rows["graceful-timeout"])
    assert rows["directive"].split() == ["directive", "value", "default", "from"]


def test_settings_table_lists_sections(config):
    path = config(f"user {ME};\nPool:HTTPServer:web {{ listen 127.0.0.1:8080, [::1]:8080; }}\n")
    r = pyd_run("configtest", "--no-imports", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  Pool:HTTPServer:web +127\.0\.0\.1:8080, \[::1\]:8080  \("
                     + re.escape(f"{path}:2") + r"\)$", r.stdout, re.M)


def test_import_check_does_not_wait_for_threads_an_app_starts(tmp_path, config):
    (tmp_path / "threadapp.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,)).start()\n"
        "def application(environ, start_response):\n    return []\n")
    path = config(f"user {ME};\ncwd {tmp_path};\n"
                  "Pool:HTTPServer { listen 127.0.0.1:8080; app threadapp:application; }\n")
    r = pyd_run("configtest", "-q", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("", "")


def test_import_check_cannot_enter_cwd(tmp_path, config):
    path = config(f"user {ME};\ncwd {tmp_path}/missing;\n"
                  "Pool:HTTPServer { listen 127.0.0.1:8080; app someapp:application; }\n")
    r = pyd_run("configtest", "-q", "-c", str(path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}:2:1: error: cannot enter cwd {tmp_path}/missing: "
                               "No such file or directory\n    cwd ")

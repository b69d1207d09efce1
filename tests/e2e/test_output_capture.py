"""A daemon's workers write to /dev/null: their output (print(), warnings, the traceback of a
failed greenlet or thread, what a subprocess or a C library writes to fd 2) goes into the log,
one record per line, on pyd.stdout and pyd.stderr, with the worker's pid. Before, it vanished."""

from __future__ import annotations

import os
import re
import textwrap

from harness import free_port, http_get

APP = textwrap.dedent('''
    import os, subprocess, sys, threading, warnings

    import gevent

    def fail_in_a_greenlet():
        raise RuntimeError("greenlet-failed-here")

    def fail_in_a_thread():
        raise ValueError("thread-failed-here")

    def app(environ, start_response):
        what = environ["PATH_INFO"]
        if what == "/print":
            print("printed-line one")
            print("printed-line two", flush=True)
            sys.stdout.write("no newline at the end")
            sys.stdout.flush()
        elif what == "/stderr":
            print("to-stderr", file=sys.stderr)
            warnings.warn("a-warning-from-the-app")
            os.write(2, b"raw-fd-2-write\\n")
            subprocess.run(["sh", "-c", "echo from-a-subprocess >&2"], check=True)
        elif what == "/greenlet":
            gevent.spawn(fail_in_a_greenlet).join()
        elif what == "/thread":
            t = threading.Thread(target=fail_in_a_thread)
            t.start()
            t.join()
        elif what == "/long":
            print("x" * 40000)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
''')


def test_worker_output_goes_to_the_log_when_daemonized(pyd_factory, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "capture_app.py").write_text(APP)
    os.chmod(tmp_path, 0o755)
    os.chmod(app_dir, 0o755)
    port = free_port()
    p = pyd_factory(f"user root;\nworkers 1;\ncwd {app_dir};\n"
                    f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app capture_app:app; }}\n")
    p.start()  # a daemon: the master and its workers have /dev/null as stdout and stderr
    (worker,) = p.workers()
    for path in ("/long", "/stderr", "/greenlet", "/thread", "/print"):  # /print ends unended
        assert http_get(port, path)[0] == 200
    p.wait_for_log(r"from-a-subprocess")
    p.wait_for_log(r"thread-failed-here")
    p.stop()  # the line without an end is logged when the worker exits
    log = p.log()

    def lines(channel: str) -> list[str]:
        return re.findall(rf"^.*\[{worker}\] pyd\.{channel}: (.*)$", log, re.M)

    out, err = lines("stdout"), lines("stderr")
    assert out[-3:] == ["printed-line one", "printed-line two", "no newline at the end"]
    assert ["x" * 16384, "x" * 16384, "x" * (40000 - 2 * 16384)] == [x for x in out
                                                                     if x.startswith("xxx")]
    assert "to-stderr" in err and "raw-fd-2-write" in err and "from-a-subprocess" in err
    assert any("a-warning-from-the-app" in x for x in err)
    assert any("RuntimeError: greenlet-failed-here" in x for x in err)
    assert any("ValueError: thread-failed-here" in x for x in err)
    assert any(x.startswith("Traceback (most recent call last)") for x in err)
    # each line its own record, with the level of its stream
    assert re.search(rf"INFO    \[{worker}\] pyd\.stdout: printed-line one$", log, re.M)
    assert re.search(rf"WARNING \[{worker}\] pyd\.stderr: to-stderr$", log, re.M)

"""Autoreload end to end: an edited app is served within 2 seconds with no failed request; an
edit that does not compile is reported and the old workers keep serving; autoreload-paths.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from harness import Load, free_port, http_get

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

APP = '''
import helper


def app(environ, start_response):
    body = helper.VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def start(pyd_factory, site: Path, extra: str = ""):
    (site / "app.py").write_text(APP)
    (site / "helper.py").write_text('VERSION = "one"\n')
    port = free_port()
    p = pyd_factory(f"user root;\nworkers 2;\ncwd {site};\ngraceful-timeout 5s;\nautoreload on;\n"
                    f"{extra}\nPool:HTTPServer {{ listen 127.0.0.1:{port}; app app:app; "
                    "access-log off; }\n")
    p.start()
    # the workers report their source files once they serve; wait until the monitor has them
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = re.search(r"autoreload: watching (\d+) source files", p.fullstatus())
        if m and int(m.group(1)) >= 2:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(p.fullstatus())
    return p, port


def body(port: int) -> bytes:
    status, _, data = http_get(port)
    assert status == 200
    return data


def wait_for_body(port: int, expected: bytes, timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if body(port) == expected:
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"still {body(port)!r}, not {expected!r}, after {timeout}s")


def replaced(p, old: list[int]) -> None:
    """Until every old worker is gone and two new ones serve (a reload finished)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = p.workers()
        if len(now) == 2 and not set(now) & set(old):
            return
        time.sleep(0.05)
    raise AssertionError(f"workers {p.workers()} still include some of {old}")


def test_an_edit_is_served_within_2s_without_a_failed_request(pyd_factory, tmp_path,
                                                              monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # workers cache bytecode
    p, port = start(pyd_factory, tmp_path)
    assert body(port) == b"one"
    workers = set(p.workers())
    load = Load(port, clients=8, keepalive=True).start(duration=30)
    load_close = Load(port, clients=4, keepalive=False).start(duration=30)
    try:
        time.sleep(0.5)
        (tmp_path / "helper.py").write_text('VERSION = "two"\n')  # an imported module, not the app
        took = wait_for_body(port, b"two", 2.0)
        time.sleep(0.5)
        # Same size and, put back, the same mtime: the cached bytecode would still look valid
        before = (tmp_path / "helper.py").stat()
        (tmp_path / "helper.py").write_text('VERSION = "333"\n')
        os.utime(tmp_path / "helper.py", ns=(before.st_atime_ns, before.st_mtime_ns))
        took2 = wait_for_body(port, b"333", 2.0)
        time.sleep(0.5)
    finally:
        load.stop()
        load_close.stop()
    assert took < 2.0 and took2 < 2.0
    assert load.failed == 0 and load.resets == 0, load.report()
    assert load_close.failed == 0 and load_close.resets == 0, load_close.report()
    assert load.ok > 50 and load_close.ok > 20
    assert not workers & set(p.workers()), "the workers were replaced"
    assert list((tmp_path / "__pycache__").glob("helper.*.pyc")), "bytecode was cached"
    assert re.search(r"pyd\.autoreload: autoreload: \S*helper\.py changed; reloading the workers",
                     p.log())


def test_a_broken_edit_keeps_the_old_workers_serving(pyd_factory, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "page.html").write_text("<p>one</p>")
    p, port = start(pyd_factory, tmp_path, f"autoreload-paths {templates};")
    workers = p.workers()
    (tmp_path / "helper.py").write_text('VERSION = "two\n')  # unterminated string
    m = p.wait_for_log(r"autoreload: not reloading, the workers keep serving the code they "
                       r"loaded:\n\s+(\S+):(\d+):\d+: SyntaxError: ([^\n]+)", timeout=5)
    assert m.group(1) == str(tmp_path / "helper.py") and m.group(2) == "1"
    assert "unterminated string literal" in m.group(3)
    time.sleep(1.0)
    assert body(port) == b"one"
    assert p.workers() == workers, "nothing was reloaded"
    assert "reloading the workers" not in p.log()

    (tmp_path / "helper.py").write_text('VERSION = "fixed"\n')
    wait_for_body(port, b"fixed", 3.0)
    replaced(p, workers)

    # a file under autoreload-paths, of any kind, reloads too; an editor's swap file does not
    workers = p.workers()
    (templates / ".page.html.swp").write_text("x")
    time.sleep(1.0)
    assert p.workers() == workers
    (templates / "page.html").write_text("<p>two</p>")
    p.wait_for_log(r"autoreload: \S*page\.html changed; reloading the workers", timeout=5)
    replaced(p, workers)

"""What the HTTP sweep measures: the scenarios, their correctness checks, and the served directory.

Every scenario is checked with one real request before it is loaded, so a server that answers
wrongly is reported as an error rather than timed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import procs, wrk

BENCH = Path(__file__).resolve().parent.parent
STATIC_NAME = "file.bin"
STATIC_SIZE = 1 << 20
POST_SIZE = 1 << 20


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    app: str                    # the callable in apps.py
    path: str = "/"
    headers: tuple[str, ...] = ()
    post: bool = False          # send the 1 MB body (wrk Lua script)
    static: bool = False        # servers use their own file serving where they have it
    nginx: bool = False         # nginx takes part (return 200 / static)
    check: Callable[[int], str | None] = lambda port: None


def _expect(port: int, path: str, body: bytes | None = None, length: int | None = None,
            method: str = "GET", data: bytes | None = None) -> str | None:
    try:
        status, got = procs.http_get(port, path, method=method, body=data, timeout=10)
    except (OSError, http.client.HTTPException) as e:
        return f"check request failed: {type(e).__name__}: {e}"
    if status != 200:
        return f"check request answered {status}"
    if body is not None and got != body:
        return f"check request answered {got[:40]!r}, expected {body[:40]!r}"
    if length is not None and len(got) != length:
        return f"check request answered {len(got)} bytes, expected {length}"
    return None


def _expect_close(port: int) -> str | None:
    """The server must answer and then close when the client sends `Connection: close`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except TimeoutError:
        return "does not close the connection when the client sends `Connection: close`"
    except OSError as e:
        return f"check request failed: {type(e).__name__}: {e}"
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(b"Hello, World!"):
        return f"check request answered {data[:60]!r}"
    return None


SCENARIOS = [
    Scenario("hello", "hello-world, keep-alive", "hello", nginx=True,
             check=lambda port: _expect(port, "/", b"Hello, World!")),
    Scenario("hello-close", "hello-world, Connection: close", "hello",
             headers=("Connection: close",), nginx=True, check=_expect_close),
    Scenario("64k", "64 KB response", "big",
             check=lambda port: _expect(port, "/", length=65536)),
    Scenario("static", "1 MB static file", "static", path=f"/static/{STATIC_NAME}",
             static=True, nginx=True,
             check=lambda port: _expect(port, f"/static/{STATIC_NAME}", length=STATIC_SIZE)),
    Scenario("post", "1 MB POST, read fully by the app", "upload", post=True,
             check=lambda port: _expect(port, "/", str(POST_SIZE).encode(), method="POST",
                                        data=b"x" * POST_SIZE)),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def make_root() -> Path:
    """A fresh /tmp directory with apps.py, static/file.bin and the POST script.

    Under /tmp with modes 755/644 because pyd's workers (and nginx's) run as nobody.
    """
    root = Path(tempfile.mkdtemp(prefix="pyd-bench-", dir="/tmp"))
    root.chmod(0o755)
    shutil.copy(BENCH / "apps.py", root / "apps.py")
    (root / "apps.py").chmod(0o644)
    static = root / "static"
    static.mkdir(mode=0o755)
    static.chmod(0o755)
    (static / STATIC_NAME).write_bytes(os.urandom(STATIC_SIZE))
    (static / STATIC_NAME).chmod(0o644)
    (root / "post.lua").write_text(wrk.POST_LUA)
    return root


def wrk_command(scenario: Scenario, root: Path, port: int, duration: float,
                connections: int = wrk.CONNECTIONS) -> list[str]:
    return wrk.command(f"http://127.0.0.1:{port}{scenario.path}", duration,
                       connections=connections, headers=list(scenario.headers),
                       script=root / "post.lua" if scenario.post else None)

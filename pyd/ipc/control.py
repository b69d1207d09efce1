"""The master's control socket: a root-only unix socket the CLI talks to, and its tiny protocol.

A request is one JSON line `{"cmd": ..., "args": {...}}`; the master answers with JSON lines:
any number of `{"progress": text}`, then `{"ok": bool, "message": text, "data": {...}}`.
A client is given READ_TIMEOUT to send its line and SEND_TIMEOUT for each answer line to
leave: one that says nothing or reads nothing holds a connection that long, never a command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 5.0  # for the whole request line: the CLI sends it at once
SEND_TIMEOUT = 10.0  # for each answer line; a client that stops reading misses the rest


def socket_path(config) -> str:
    if config.control_socket:
        return config.control_socket
    base, _ = os.path.splitext(config.pidfile)
    return base + ".sock"


class ControlError(Exception):
    """The master cannot be reached: not running, or not ours to talk to."""


# -- the master side (gevent) --------------------------------------------------------------------

class ControlServer:
    """Accepts CLI connections in the master; `handler(cmd, args, progress)` does the work."""

    def __init__(self, path: str, handler: Callable[[str, dict, Callable[[str], None]], dict],
                 read_timeout: float = READ_TIMEOUT, send_timeout: float = SEND_TIMEOUT):
        self.path = path
        self.handler = handler
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.sock = None
        self.greenlet = None

    def start(self) -> None:
        import gevent
        from gevent import socket

        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: only the master's user may talk to it
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(16)
        self.sock = sock
        self.greenlet = gevent.spawn(self._accept)

    def _accept(self) -> None:
        import gevent

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            gevent.spawn(self._serve, conn)

    def _serve(self, conn) -> None:
        import gevent

        try:
            conn.settimeout(self.send_timeout)
            f = conn.makefile("rwb")
            line = None
            with gevent.Timeout(self.read_timeout, False):  # the whole line, not each read
                line = f.readline(MAX_REQUEST)
            if line is None:
                return  # said nothing in time: closed
            try:
                request = json.loads(line)
                cmd, args = request["cmd"], request.get("args", {})
            except (ValueError, KeyError, TypeError):
                self._send(f, {"ok": False, "message": "bad request"})
                return
            gone = []

            def progress(text: str) -> None:
                # The command goes on whether or not its client still listens.
                if not gone:
                    try:
                        self._send(f, {"progress": text})
                    except OSError:
                        gone.append(True)

            try:
                answer = self.handler(cmd, args, progress)
            except Exception as e:  # a bug must not take the master down
                import logging

                logging.getLogger("pyd.master").exception("control command %s failed", cmd)
                answer = {"ok": False, "message": f"internal error: {e}"}
            if not gone:
                self._send(f, answer)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _send(f, obj: dict) -> None:
        f.write(json.dumps(obj).encode() + b"\n")
        f.flush()

    def close(self, unlink: bool = True) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        if self.sock is not None:
            self.sock.close()
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass


# -- the CLI side (plain sockets) ----------------------------------------------------------------

def request(path: str, cmd: str, args: dict | None = None, timeout: float | None = 30.0,
            on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Send one command and return the final answer; progress lines go to on_progress."""
    for answer in stream(path, cmd, args, timeout):
        if "progress" in answer:
            if on_progress:
                on_progress(answer["progress"])
            continue
        return answer
    raise ControlError("the master closed the connection without answering")


def stream(path: str, cmd: str, args: dict | None, timeout: float | None) -> Iterator[dict]:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except PermissionError:
        sock.close()
        raise ControlError(f"permission denied on the control socket {path} "
                           "(it is root-only: run as root)") from None
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ControlError("pyd is not running") from None
    with sock:
        sock.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        f = sock.makefile("rb")
        try:
            for line in f:
                yield json.loads(line)
        except TimeoutError:
            raise ControlError(f"the master did not answer {cmd} within {timeout:.0f}s") from None

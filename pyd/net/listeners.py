"""Listening sockets: bound by the master (as root) before any fork, kept for its whole life.

(gevent is patched by then: these are gevent sockets, which must stay in blocking mode.)

Workers inherit them; `update` adds and closes them by address; `upgrade` hands them to the new
master through the environment, so no connection is refused while pyd replaces itself.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from pyd.config.values import Address

INHERIT_ENV = "PYD__LISTENERS"  # "fd=address;fd=address" for a re-executed master
BACKLOG = 2048


class ListenError(Exception):
    """An address cannot be bound: one line naming it and why."""


@dataclass(eq=False)
class Listener:
    address: Address
    sock: socket.socket

    @property
    def key(self) -> str:
        return str(self.address)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self, unlink: bool = True) -> None:
        self.sock.close()
        if unlink and self.address.is_unix:
            try:
                os.unlink(self.address.path)
            except OSError:
                pass

    def __str__(self) -> str:
        return self.key


def bind(address: Address, *, mode: int | None = None, owner: tuple[int, int] | None = None,
         backlog: int = BACKLOG) -> Listener:
    """Bind and listen on one address; a unix socket left by a dead process is replaced."""
    if address.is_unix:
        return Listener(address, _bind_unix(address.path, mode, owner, backlog))
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot resolve {address}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it (Linux): a response written in parts never waits on
        # Nagle and a delayed ACK, and no connection pays a setsockopt of its own.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            # [::]:80 and 0.0.0.0:80 may both be listed, as in nginx.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {address}: {_why(e)}") from None
    return Listener(address, sock)


def _bind_unix(path: str, mode: int | None, owner: tuple[int, int] | None,
               backlog: int) -> socket.socket:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ListenError(f"cannot listen on unix:{path}: a file that is not a socket is "
                              "in the way")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody answers: left behind by a dead process
        else:
            raise ListenError(f"cannot listen on unix:{path}: another process is listening")
        finally:
            probe.close()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        if owner is not None:
            os.chown(path, *owner)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on unix:{path}: {_why(e)}") from None
    return sock


def _why(e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return "the address is already in use"
    if e.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root)"
    if e.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    return e.strerror or str(e)


# -- handing listeners to a re-executed master ---------------------------------------------------

def export(listeners: list[Listener]) -> str:
    for listener in listeners:
        os.set_inheritable(listener.fileno(), True)
    return ";".join(f"{listener.fileno()}={listener.key}" for listener in listeners)


def inherited(env: dict[str, str] | None = None) -> dict[str, socket.socket]:
    """Sockets passed by the previous master, by address; consumed from the environment."""
    env = os.environ if env is None else env
    spec = env.pop(INHERIT_ENV, "")
    out = {}
    for item in filter(None, spec.split(";")):
        fd, _, key = item.partition("=")
        try:
            sock = socket.socket(fileno=int(fd))
        except (OSError, ValueError):
            continue
        os.set_inheritable(sock.fileno(), False)
        out[key] = sock
    return out

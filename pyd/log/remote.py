"""Syslog and GELF servers: UDP, TCP and unix datagram sockets, written by one master thread each.

Messages arrive finished (formats.py built them in the process that logged); here they are
only sent. UDP and unix sockets never wait long; a TCP server that stops reading times the
send out, the connection is dropped and retried later, and what the queue cannot hold in the
meantime is counted as lost. Nothing here can make a request wait.
"""

from __future__ import annotations

import socket as _socket_module
import time

from pyd.config.endpoint import Endpoint
from pyd.log.formats import MESSAGES
from pyd.log.health import Health
from pyd.log.native import getaddrinfo, socket
from pyd.log.sinks import Sink
from pyd.system.backoff import Backoff

CONNECT_TIMEOUT = 3.0
SEND_TIMEOUT = 5.0
MAX_BACKOFF = 30.0
UDP_MAX = 65000  # beyond this a datagram cannot be sent at all: cut it


class RemoteSink(Sink):
    kind = MESSAGES

    def __init__(self, key: str, label: str, health: Health, endpoint: Endpoint,
                 chunker=None):
        super().__init__(key, label, health)
        self.endpoint = endpoint
        self.sock = None
        self.address = None
        self.retry_at = 0.0
        self.backoff = Backoff(1.0, MAX_BACKOFF)
        self.chunker = chunker  # GELF over UDP: graypy's chunker for messages over one packet

    # -- connection -----------------------------------------------------------------------------

    def _connect(self) -> bool:
        if self.sock is not None:
            return True
        now = time.monotonic()
        if now < self.retry_at:
            return False
        e = self.endpoint
        try:
            if e.scheme == "unix":
                sock = socket(_socket_module.AF_UNIX, _socket_module.SOCK_DGRAM)
                sock.settimeout(SEND_TIMEOUT)
                try:
                    sock.connect(e.path)
                except OSError:
                    sock.close()
                    raise
            else:
                kind = _socket_module.SOCK_DGRAM if e.scheme == "udp" else \
                    _socket_module.SOCK_STREAM
                family, _, _, _, address = getaddrinfo(e.host, e.port, 0, kind)[0]
                sock = socket(family, kind)
                sock.settimeout(CONNECT_TIMEOUT)
                try:
                    sock.connect(address)
                except OSError:
                    sock.close()
                    raise
                sock.settimeout(SEND_TIMEOUT)
        except (OSError, _socket_module.gaierror) as err:
            self._failed(err)
            return False
        self.sock = sock
        self.backoff.reset()
        return True

    def _failed(self, error: BaseException) -> None:
        self.health.lost(self.label, 0, error)
        self._drop_socket()
        self.retry_at = time.monotonic() + self.backoff.failed()

    def _drop_socket(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # -- the thread -----------------------------------------------------------------------------

    def deliver(self, items: list[bytes]) -> None:
        if not self._connect():
            self.health.lost(self.label, len(items), None)
            return
        if self.endpoint.scheme == "tcp":
            self._send_stream(items)
        else:
            self._send_datagrams(items)

    def _send_stream(self, items: list[bytes]) -> None:
        data = b"".join(items)
        try:
            self.sock.sendall(data)
        except OSError as e:  # a timeout too: the server stopped reading
            self.health.lost(self.label, len(items), e)
            self._failed(e)

    def _send_datagrams(self, items: list[bytes]) -> None:
        for i, message in enumerate(items):
            packets = [message]
            if self.chunker is not None and len(message) > self.chunker.chunk_size:
                packets = list(self.chunker.chunk_message(message))
            try:
                for packet in packets:
                    self.sock.send(packet[:UDP_MAX])
            except OSError as e:  # ECONNREFUSED after an ICMP port unreachable, ENOENT, ...
                self.health.lost(self.label, len(items) - i, e)
                self._failed(e)
                return

    def close(self) -> None:
        self._drop_socket()

    def close_in_child(self) -> None:
        self._drop_socket()

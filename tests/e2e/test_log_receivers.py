"""Syslog and GELF end to end: a real pyd sending to real receivers on loopback, decoded here.

GELF as graypy sends it (UDP zlib-compressed and chunked, TCP NUL-framed), syslog over UDP,
TCP and a unix datagram socket; and a receiver that stops reading, or is not there at all,
must not slow a request down.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import socket
import statistics
import termios
import threading
import time
import zlib

import pytest
from harness import free_port, http_get

pytestmark = pytest.mark.e2e

APP = '''
import logging, os
log = logging.getLogger("app.web")
BIG = os.urandom(12000).hex()  # 24 KB that compress badly: GELF over UDP must chunk it

def app(environ, start_response):
    path, q = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/warn":
        log.warning("warned %s", q, extra={"request_id": "req-" + q, "pool": "web"})
    elif path == "/big":
        log.warning("big %s %s", q, BIG)
    elif path == "/fail":
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed %s", q)
    elif path == "/bulk":
        log.warning("bulk %s %s", q, "b" * 8000)
    else:
        logging.getLogger("app.quiet").info("hit %s", q)
    body = BIG.encode() if path == "/big" else b"ok"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


class Receiver:
    """A loopback listener in a thread, keeping every message it decodes."""

    def __init__(self, kind: str, path: str | None = None, read: bool = True):
        self.kind, self.messages, self.read = kind, [], read
        self.raw_bytes = 0
        self.chunks: dict[bytes, dict[int, bytes]] = {}
        self.stopping = False
        self.held: list[socket.socket] = []
        if kind.endswith("unix"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(path)
            self.address = path
        else:
            stream = kind.endswith("tcp")
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if stream
                                      else socket.SOCK_DGRAM)
            if not read:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.sock.bind(("127.0.0.1", 0))
            if stream:
                self.sock.listen(8)
            self.address = self.sock.getsockname()
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.address[1]

    def _run(self) -> None:
        while not self.stopping:
            try:
                if self.kind.endswith("tcp"):
                    conn, _ = self.sock.accept()
                    if not self.read:
                        self.held.append(conn)  # accepted, never read: the sender fills up
                        continue
                    threading.Thread(target=self._stream, args=(conn,), daemon=True).start()
                else:
                    self._datagram(self.sock.recv(65536))
            except (TimeoutError, OSError):
                continue

    def _stream(self, conn: socket.socket) -> None:
        sep = b"\0" if self.kind.startswith("gelf") else b"\n"
        buf = b""
        conn.settimeout(0.2)
        while not self.stopping:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            *whole, buf = buf.split(sep)
            for m in whole:
                self._keep(m)

    def _datagram(self, data: bytes) -> None:
        if data[:2] == b"\x1e\x0f":  # a GELF chunk: id, sequence number, count, payload
            ident, seq, count = data[2:10], data[10], data[11]
            parts = self.chunks.setdefault(ident, {})
            parts[seq] = data[12:]
            if len(parts) < count:
                return
            data = b"".join(parts[i] for i in range(count))
            del self.chunks[ident]
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.raw_bytes += len(data)
        if self.kind.startswith("gelf"):
            if data[:1] == b"\x78":
                data = zlib.decompress(data)
            elif data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            self.messages.append(json.loads(data))
        else:
            self.messages.append(data.decode("utf-8", "replace"))

    def wait_for(self, test, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.messages):
                if test(m):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"{self.kind}: nothing matched in {self.messages[-5:]}")

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        for s in self.held + [self.sock]:
            s.close()


@pytest.fixture
def receivers(tmp_path):
    made: list[Receiver] = []

    def make(kind: str, **kw) -> Receiver:
        r = Receiver(kind, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def start(pyd_factory, tmp_path, sections: str):
    (tmp_path / "web.py").write_text(APP)
    port = free_port()
    p = pyd_factory(f"user root;\nworkers 2;\ncwd {tmp_path};\n{sections}\n"
                    f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app web:app; }}\n")
    p.start()
    return p, port


def test_gelf_and_syslog_reach_real_receivers(pyd_factory, tmp_path, receivers):
    gelf_udp, gelf_tcp = receivers("gelf-udp"), receivers("gelf-tcp")
    sys_udp, sys_tcp = receivers("syslog-udp"), receivers("syslog-tcp")
    sock_path = f"/tmp/pyd-test-syslog-{os.getpid()}-{free_port()}.sock"
    sys_unix = receivers("syslog-unix", path=sock_path)
    try:
        p, port = start(pyd_factory, tmp_path, f"""
Log:gu {{ channels app.*; level warning; gelf udp://127.0.0.1:{gelf_udp.port}; }}
Log:gt {{ channels app.web; level warning; gelf tcp://127.0.0.1:{gelf_tcp.port}; }}
Log:su {{ channels app.*; level warning; syslog 127.0.0.1:{sys_udp.port}; }}
Log:st {{ channels app.*; level warning; syslog tcp://127.0.0.1:{sys_tcp.port};
          facility local0; format json; }}
Log:sx {{ channels app.*; level warning; syslog unix:{sock_path}; facility daemon; }}
""")
        workers = set(p.workers())
        for path in ("/warn?1", "/big?2", "/fail?3", "/hit?4"):
            assert http_get(port, path)[0] == 200

        for r in (gelf_udp, gelf_tcp):
            m = r.wait_for(lambda m: m["short_message"] == "warned 1")
            assert m["_request_id"] == "req-1" and m["_pool"] == "web"
            assert m["level"] == 4 and m["_pid"] in workers and m["_channel"] == "app.web"
            assert m["host"] and m["version"] == "1.0"
            f = r.wait_for(lambda m: m["short_message"] == "failed 3")
            assert "ZeroDivisionError" in f["full_message"] and f["level"] == 3
            big = r.wait_for(lambda m: m["short_message"].startswith("big 2 "))
            assert len(big["short_message"]) == len("big 2 ") + 24000
        assert not any(m["short_message"].startswith("hit") for m in gelf_udp.messages)

        line = sys_udp.wait_for(lambda m: "warned 1" in m)
        assert re.fullmatch(r"<12>\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ pyd\[(\d+)\]: app.web: warned 1",
                            line), line
        assert int(re.search(r"pyd\[(\d+)\]", line).group(1)) in workers
        assert "#012" in sys_udp.wait_for(lambda m: "failed 3" in m)  # newlines encoded

        framed = sys_tcp.wait_for(lambda m: "warned 1" in m)
        assert framed.startswith("<132>")  # local0, warning
        body = json.loads(framed.split("]: ", 1)[1])
        assert body["message"] == "warned 1" and body["request_id"] == "req-1"

        local = sys_unix.wait_for(lambda m: "warned 1" in m)
        assert re.fullmatch(r"<28>\w{3} [ \d]\d \d\d:\d\d:\d\d pyd\[\d+\]: app.web: warned 1",
                            local), local
    finally:
        if os.path.exists(sock_path):
            os.unlink(sock_path)


def test_a_blocked_or_absent_receiver_does_not_slow_requests(pyd_factory, tmp_path, receivers):
    blocked = receivers("gelf-tcp", read=False)
    absent_tcp, absent_udp = free_port(), free_port()
    p, port = start(pyd_factory, tmp_path, f"""
Log:blocked {{ channels app.web; level warning; gelf tcp://127.0.0.1:{blocked.port}; }}
Log:gone {{ channels app.web; level warning; syslog tcp://127.0.0.1:{absent_tcp}; }}
Log:gone2 {{ channels app.web; level warning; gelf udp://127.0.0.1:{absent_udp}; }}
""")
    quiet, loud = [], []
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    deadline = time.monotonic() + 7  # beyond the 5 s send timeout of the blocked connection
    n = 0
    while time.monotonic() < deadline:
        for path, into in (("/hit", quiet), ("/bulk", loud)):
            started = time.monotonic()
            conn.sendall(f"GET {path}?{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while not data.endswith(b"ok"):
                chunk = conn.recv(4096)
                assert chunk, "the server closed the connection"
                data += chunk
            into.append(time.monotonic() - started)
            n += 1
    conn.close()
    assert len(loud) > 200, "too few requests to fill the blocked receiver"
    # 8 KB per /bulk record: megabytes for a receiver that reads nothing, so the master's
    # sender is stuck in a send for seconds, while requests go on as fast as those that
    # log nothing there.
    assert max(loud) < 1.0, f"a request waited {max(loud):.2f}s"
    assert statistics.median(loud) < 3 * statistics.median(quiet) + 0.005, (
        statistics.median(loud), statistics.median(quiet))
    # The sender gave up on the stuck connection (5 s send timeout) and connected again,
    # with the first one still full of what was never read.
    deadline = time.monotonic() + 12
    while len(blocked.held) < 2 and time.monotonic() < deadline:
        assert http_get(port, f"/bulk?{n}")[0] == 200  # something to send after the backoff
        n += 1
        time.sleep(0.2)
    assert len(blocked.held) >= 2, "the master never gave up on the blocked receiver"
    unread = fcntl.ioctl(blocked.held[0].fileno(), termios.FIONREAD, b"\0\0\0\0")
    assert int.from_bytes(unread, "little") > 0
    # The absent one is reported at once (then at most once a minute), and serving went on.
    p.wait_for_log(rf"logging degraded: [^\n]*syslog tcp://127.0.0.1:{absent_tcp}: \d+ lost "
                   r"\(Connection refused\)")
    assert http_get(port, "/hit")[0] == 200

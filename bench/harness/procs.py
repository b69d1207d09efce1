"""Processes the harness starts: free ports, readiness polls, process trees, CPU and RSS, stopping.

Only processes the harness started are ever signalled, one pid at a time: a server's tree is the
set of descendants of the pid the harness started (or read from the pidfile of a pyd it started).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """An unused loopback port (the kernel's choice; a tiny race with other programs is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may contain spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def _all_parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    return parents


def tree(root: int) -> list[int]:
    """root and all its live descendants (this kernel has no /proc/PID/task/TID/children)."""
    parents = _all_parents()
    if root not in parents:
        return []
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the processes, plus what their reaped children used (cutime+cstime).

    Adding the reaped children's time keeps a worker that exited during a run (a recycle) counted:
    its time moves into its parent's cutime when the parent waits for it.
    """
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all cores spent running processes (or stolen by the hypervisor), from /proc/stat.

    irq and softirq time are left out: on loopback most of the TCP work runs as softirq, charged
    to no process, and it belongs to the benchmark rather than to other programs.
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(
            int, f.readline().split()[1:9])
    return (user + nice + system + steal) / CLK_TCK


def rss_bytes(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[21]) * PAGE_SIZE if fields else 0


def vm_rss_bytes(pid: int) -> int:
    """VmRSS from /proc/PID/status, as `ps` and operators read it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Usage:
    cpu_s: float = 0.0
    rss_total_peak: int = 0     # the trees' RSS summed, at its peak
    rss_process_peak: int = 0   # the largest single process
    pids: set[int] = field(default_factory=set)
    cpu_by_root: dict[int, float] = field(default_factory=dict)
    client_cpu_s: float = 0.0   # filled by measure.load
    other_cores: float = 0.0


class TreeMonitor:
    """Samples process trees' RSS in a thread while a load runs; CPU is taken at start and stop.

    Several roots (a front nginx and its backend) are watched together; CPU is kept per root too.
    """

    def __init__(self, roots: int | list[int], interval: float = 0.25):
        self.roots = [roots] if isinstance(roots, int) else list(roots)
        self.interval = interval
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True)
        self._cpu0: dict[int, float] = {}

    def _trees(self) -> dict[int, list[int]]:
        return {root: tree(root) for root in self.roots}

    def __enter__(self) -> TreeMonitor:
        trees = self._trees()
        self._cpu0 = {root: cpu_seconds(pids) for root, pids in trees.items()}
        self._sample(trees)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        trees = self._trees()
        self._sample(trees)
        self.usage.cpu_by_root = {root: max(0.0, cpu_seconds(pids) - self._cpu0[root])
                                  for root, pids in trees.items()}
        self.usage.cpu_s = sum(self.usage.cpu_by_root.values())

    def _sample(self, trees: dict[int, list[int]]) -> None:
        sizes = []
        for pids in trees.values():
            sizes += [rss_bytes(p) for p in pids]
            self.usage.pids.update(pids)
        self.usage.rss_total_peak = max(self.usage.rss_total_peak, sum(sizes))
        self.usage.rss_process_peak = max(self.usage.rss_process_peak, max(sizes, default=0))

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(self._trees())


def http_get(port: int, path: str = "/", *, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 5.0,
             host: str = "127.0.0.1") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(port: int, path: str = "/", *, timeout: float = 30.0,
              alive: Callable[[], bool] | None = None) -> None:
    """Poll until a request gets any HTTP answer; raise TimeoutError or RuntimeError (died)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("exited before answering")
        try:
            http_get(port, path, timeout=2.0)
            return
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise TimeoutError(f"no answer on port {port} within {timeout:.0f}s ({last})")


def wait_tcp(port: int, *, timeout: float = 30.0, alive: Callable[[], bool] | None = None) -> None:
    """Poll until the port accepts a connection (for FastCGI and uwsgi-protocol backends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not accepting within {timeout:.0f}s")


def kill_tree(pids: list[int], *, first: signal.Signals = signal.SIGTERM,
              grace: float = 10.0) -> None:
    """Signal each pid (all started by the harness), wait up to grace seconds, then SIGKILL."""
    for pid in pids:
        _signal(pid, first)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"

"""pyd with one worker holding 10,000 idle keep-alive connections: its RSS, and its throughput.

Run `python3 bench/idle_connections.py [--quick] [--connections N]`; writes
bench/RESULTS-idle-connections.md and results-idle-connections.json. Each idle connection sends
one request, reads the answer and then stays open, as a browser's idle keep-alive connection does.
Throughput is hello-world with wrk (-t2 -c64, its own fresh connections) before, while the idle
connections are open, and after they are closed. Targets: RSS growth <= 100 MB, throughput
meanwhile within 20% of before.
"""

from __future__ import annotations

import resource
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, env, procs, wrk  # noqa: E402
from harness.measure import Measurement, fill, load  # noqa: E402
from harness.report import fmt  # noqa: E402
from harness.servers import Pyd, Site, Unavailable  # noqa: E402

RSS_TARGET_MB = 100
THROUGHPUT_TARGET = 0.8
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BATCH = 250


def raise_fd_limit(wanted: int) -> int:
    """As many descriptors as allowed, up to wanted: the soft limit to the hard one, or beyond as
    root. The pyd started afterwards inherits the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    target = max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def open_idle(port: int, count: int, log) -> tuple[list[socket.socket], str]:
    """Open up to count connections, one request each; return them and why it stopped short."""
    socks: list[socket.socket] = []
    while len(socks) < count:
        batch: list[socket.socket] = []
        try:
            for _ in range(min(BATCH, count - len(socks))):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                batch.append(s)
                s.sendall(REQUEST)
            for s in batch:
                data = b""
                while not data.endswith(b"Hello, World!"):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed by the server before answering")
                    data += chunk
        except OSError as e:
            for s in batch:
                s.close()
            return socks, f"stopped at {len(socks)}: {type(e).__name__}: {e}"
        socks += batch
        if len(socks) % 2000 == 0:
            log(f"  {len(socks)} idle connections open")
    return socks, ""


def still_open(socks: list[socket.socket]) -> int:
    """How many of the idle connections the server has not closed (nothing to read, no EOF)."""
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            alive += s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def worker_pids(master: int) -> list[int]:
    return [p for p in procs.tree(master) if p != master]


def throughput(running, port: int, duration: float, repeat: int, label: str,
               log) -> list[Measurement]:
    out = []
    for i in range(repeat):
        m = Measurement("pyd", label, 1, i + 1)
        try:
            result, usage = load(running, wrk.command(f"http://127.0.0.1:{port}/", duration),
                                 duration)
            fill(m, result, usage)
        except RuntimeError as e:
            m.status, m.reason = "error", str(e)
        log(f"{label} {i + 1}: {m.rps:,.0f} req/s, {m.errors} errors" if m.status == "ok"
            else f"{label} {i + 1}: {m.reason}")
        out.append(m)
    return out


def median_rps(ms: list[Measurement]) -> float | None:
    values = [m.rps for m in ms if m.status == "ok"]
    return statistics.median(values) if values else None


def main() -> int:
    args = compare.arguments(__doc__.splitlines()[0], extra=lambda p: p.add_argument(
        "--connections", type=int, default=10000, help="idle connections (default 10000)"))
    session = compare.Session("idle-connections")
    fd_limit = raise_fd_limit(args.connections + 1024)
    # max-connections counts the idle connections too: at its default (10000) a worker holding
    # 10,000 of them pauses accepting, and wrk's fresh connections would never be served.
    max_conns = args.connections + 1000
    pyd = Pyd(pool_extra=[f"max-connections {max_conns};"])
    site = Site(root=session.root, app="hello", port=procs.free_port())
    data: dict = {"connections_wanted": args.connections, "fd_limit": fd_limit,
                  "max_connections": max_conns}
    notes: list[str] = []
    socks: list[socket.socket] = []
    try:
        running = pyd.start(site)
    except Unavailable as e:
        running, data["unavailable"] = None, str(e)
        notes.append(f"pyd: not available ({e})")
    try:
        if running:
            run_phases(running, site, args, data, notes, socks)
    except KeyboardInterrupt:
        session.interrupted = True
    finally:
        for s in socks:
            s.close()
        if running:
            running.stop()
        session.close(args.keep)
    write(session, args, data, notes, pyd, site)
    return 0


def run_phases(running, site, args, data, notes, socks) -> None:
    log = env.log
    workers = worker_pids(running.root_pid)
    worker = workers[0]
    data["worker_fd_limit"] = _fd_limit_of(worker)
    wrk.run(wrk.command(f"http://127.0.0.1:{site.port}/", 1), 1)  # warm-up
    before = throughput(running, site.port, args.duration, args.repeat, "before", log)
    data["rss_before"] = procs.vm_rss_bytes(worker)
    t0 = time.monotonic()
    opened, why = open_idle(site.port, args.connections, log)
    socks += opened
    data["open_seconds"] = round(time.monotonic() - t0, 1)
    data["connections_open"] = len(opened)
    if why:
        notes.append(f"only {len(opened)} of {args.connections} idle connections: {why}")
    time.sleep(1)  # let the worker settle before reading its RSS
    data["rss_idle"] = procs.vm_rss_bytes(worker)
    during = throughput(running, site.port, args.duration, args.repeat, "during", log)
    data["rss_after_load"] = procs.vm_rss_bytes(worker)
    data["still_open"] = still_open(opened)
    data["seconds_idle"] = round(time.monotonic() - t0, 1)
    if worker_pids(running.root_pid) != workers:
        notes.append("the worker was replaced during the run: RSS figures mix two processes")
    for s in opened:
        s.close()
    socks.clear()
    time.sleep(1)
    after = throughput(running, site.port, args.duration, args.repeat, "after", log)
    data["rss_after_close"] = procs.vm_rss_bytes(worker)
    data["measurements"] = before + during + after
    data["rps"] = {"before": median_rps(before), "during": median_rps(during),
                   "after": median_rps(after)}


def _fd_limit_of(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
    except OSError:
        pass
    return "unknown"


def write(session, args, data, notes, pyd, site) -> None:
    mb = {k: data[k] / 2**20 for k in ("rss_before", "rss_idle", "rss_after_load",
                                        "rss_after_close") if k in data}
    growth = mb["rss_idle"] - mb["rss_before"] if "rss_idle" in mb else None
    growth_load = mb["rss_after_load"] - mb["rss_before"] if "rss_after_load" in mb else None
    rps = data.get("rps", {})
    ratio = rps["during"] / rps["before"] if rps.get("during") and rps.get("before") else None
    data.update(rss_growth_mb=growth, rss_growth_after_load_mb=growth_load, ratio=ratio)
    n = data.get("connections_open", 0)
    lines = session.header("pyd: 10,000 idle keep-alive connections on one worker",
                           {"pyd": pyd.version(), "wrk": env.wrk_version()})
    lines += [f"One worker; {n:,} idle keep-alive connections (of {args.connections:,} wanted), "
              "each after one request. Throughput: wrk -t2 -c64 hello-world on its own "
              f"connections, median of {args.repeat} runs of {args.duration:g} s in each phase. "
              "RSS is the worker's VmRSS.", "",
              "| figure | value | target |", "|---|---|---|",
              f"| idle connections open | {n:,} (opened in {data.get('open_seconds', '-')} s; "
              f"{data.get('still_open', '-')} still open after the load) | {args.connections:,} |",
              f"| worker RSS before | {fmt(mb.get('rss_before'), 1)} MB | |",
              f"| worker RSS with the idle connections | {fmt(mb.get('rss_idle'), 1)} MB | |",
              f"| RSS growth | {fmt(growth, 1)} MB ({_per_conn(growth, n)}) | <= {RSS_TARGET_MB} "
              f"MB: {_verdict(growth is not None and growth <= RSS_TARGET_MB, growth)} |",
              f"| RSS growth after the load meanwhile | {fmt(growth_load, 1)} MB | |",
              f"| worker RSS after closing them | {fmt(mb.get('rss_after_close'), 1)} MB | |",
              f"| req/s before | {fmt(rps.get('before'))} | |",
              f"| req/s meanwhile | {fmt(rps.get('during'))} | |",
              f"| meanwhile / before | {fmt(ratio, 2, 'x')} | >= {THROUGHPUT_TARGET}x: "
              f"{_verdict(ratio is not None and ratio >= THROUGHPUT_TARGET, ratio)} |",
              f"| req/s after closing them | {fmt(rps.get('after'))} | |",
              "", f"Descriptors: this client's limit {data['fd_limit']}, the worker's "
              f"{data.get('worker_fd_limit', '-')}. `max-connections {data['max_connections']};` "
              "is set because the limit counts idle connections too (default 10000).", "",
              "pyd's config:", "```", pyd.config(site).strip().replace(str(site.port), "$PORT"), "```"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    session.write(lines, data | {"notes": notes})


def _per_conn(growth: float | None, n: int) -> str:
    return f"{growth * 1024 / n:.1f} KB per connection" if growth is not None and n else "-"


def _verdict(ok: bool, value) -> str:
    return "not measured" if value is None else ("met" if ok else "missed")


if __name__ == "__main__":
    sys.exit(main())

"""pyd's lifecycle figures: idle worker RSS, time from `pyd start` to serving, failures over recycles.

Run `python3 bench/lifecycle.py [--quick]`; writes bench/results/RESULTS-lifecycle.md and
results-lifecycle.json.
- idle worker RSS: 4 workers started, no request sent, VmRSS of each after 3 s (target <= 30 MB);
- start time: from running `pyd start` (which daemonizes) to the first successful request, with
  4 workers, median of 5 (a client polls every 10 ms from the moment the command is run);
- recycles: `max-requests 100;`, 2 workers, wrk -t2 -c16 keep-alive in runs of a few seconds
  until at least 100 workers have retired; every wrk error and non-2xx answer counts as a failed
  request (target 0).
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, env, procs, wrk  # noqa: E402
from harness.servers import START_TIMEOUT, Pyd, Site, Unavailable  # noqa: E402

RSS_TARGET_MB = 30
START_WORKERS = 4
START_RUNS = 5
RECYCLES_WANTED = 100
RECYCLE_WORKERS = 2
RECYCLE_CLIENTS = 16


def idle_rss(session, log) -> dict:
    """Start 4 workers, send nothing, read each worker's VmRSS."""
    pyd = Pyd()
    site = Site(root=session.root, app="hello", port=procs.free_port(), workers=START_WORKERS)
    try:
        running = pyd.start(site)
    except Unavailable as e:
        return {"unavailable": str(e)}
    try:
        time.sleep(3)
        master = running.root_pid
        workers = [p for p in procs.tree(master) if p != master]
        rss = {p: procs.vm_rss_bytes(p) / 2**20 for p in workers}
        log("idle RSS: " + ", ".join(f"{v:.1f} MB" for v in rss.values()))
        return {"workers_mb": sorted(rss.values()), "master_mb": procs.vm_rss_bytes(master) / 2**20}
    finally:
        running.stop()


def start_time(session, log) -> dict:
    """Seconds from running `pyd start` to the first successful request, START_RUNS times."""
    pyd = Pyd()
    firsts, returns, failures = [], [], []
    for i in range(START_RUNS):
        site = Site(root=session.root, app="hello", port=procs.free_port(), workers=START_WORKERS)
        conf = pyd.paths(site)["conf"]
        conf.write_text(pyd.config(site))
        t0 = time.monotonic()
        proc = subprocess.Popen(pyd.cli("start", conf), cwd=site.root, env=pyd.cli_env(),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = returned = None
        while time.monotonic() - t0 < START_TIMEOUT:
            if returned is None and proc.poll() is not None:
                returned = time.monotonic() - t0
                if proc.returncode != 0:
                    break
            try:
                if procs.http_get(site.port, timeout=1)[0] == 200:
                    first = time.monotonic() - t0
                    break
            except (OSError, http.client.HTTPException):
                time.sleep(0.01)
        try:
            out = proc.communicate(timeout=START_TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            out = ""
        returned = returned or time.monotonic() - t0
        pyd.stop_if_running(site)
        if first is None:
            failures.append(out.strip().splitlines()[-1] if out.strip() else "no answer")
            log(f"start {i + 1}: failed ({failures[-1]})")
            continue
        firsts.append(first)
        returns.append(returned)
        log(f"start {i + 1}: first answer after {first:.2f} s, `pyd start` returned after "
            f"{returned:.2f} s")
    return {"first_answer_s": firsts, "command_returned_s": returns, "failures": failures}


def retired_count(log_path: Path) -> int:
    try:
        with open(log_path, errors="replace") as f:
            return sum(1 for line in f if " retiring: " in line)
    except OSError:
        return 0


def recycles(session, chunk: float, cap: float, log) -> dict:
    """wrk in chunks until RECYCLES_WANTED workers retired (or cap seconds); errors summed."""
    pyd = Pyd(top=["max-requests 100;"])
    site = Site(root=session.root, app="hello", port=procs.free_port(), workers=RECYCLE_WORKERS)
    try:
        running = pyd.start(site)
    except Unavailable as e:
        return {"unavailable": str(e)}
    totals = {"requests": 0, "errors": 0, "non_2xx": 0, "connect": 0, "read": 0, "write": 0,
              "timeout": 0, "runs": 0}
    t0 = time.monotonic()
    cmd = wrk.command(f"http://127.0.0.1:{site.port}/", chunk, connections=RECYCLE_CLIENTS)
    try:
        while retired_count(pyd.paths(site)["log"]) < RECYCLES_WANTED \
                and time.monotonic() - t0 < cap:
            try:
                r = wrk.run(cmd, chunk)
            except RuntimeError as e:
                totals["wrk_failure"] = str(e)
                break
            totals["runs"] += 1
            totals["requests"] += r.requests
            totals["errors"] += r.errors
            totals["non_2xx"] += r.non_2xx
            for kind in ("connect", "read", "write", "timeout"):
                totals[kind] += getattr(r, f"errors_{kind}")
            log(f"recycles: {retired_count(pyd.paths(site)['log'])} workers retired, "
                f"{totals['requests']:,} requests, {totals['errors']} failed")
        status = subprocess.run(pyd.cli("fullstatus", pyd.paths(site)["conf"]),
                                env=pyd.cli_env(), capture_output=True, text=True,
                                timeout=30).stdout
    finally:
        running.stop()
    totals["retired"] = retired_count(pyd.paths(site)["log"])
    totals["seconds"] = round(time.monotonic() - t0, 1)
    totals["command"] = " ".join(cmd).replace(str(site.port), "$PORT")
    totals["fullstatus_restarts"] = next((line for line in status.splitlines()
                                          if line.startswith("restarts by reason")), "")
    return totals


def main() -> int:
    args = compare.arguments(__doc__.splitlines()[0])
    session = compare.Session("lifecycle")
    log = env.log
    data: dict = {}
    try:
        data["idle_rss"] = idle_rss(session, log)
        data["start"] = start_time(session, log)
        data["recycles"] = recycles(session, chunk=3.0 if args.quick else 5.0,
                                    cap=60.0 if args.quick else 180.0, log=log)
    except KeyboardInterrupt:
        session.interrupted = True
    finally:
        session.close(args.keep)
    write(session, data)
    return 0


def write(session, data: dict) -> None:
    lines = session.header("pyd lifecycle figures", {"pyd": Pyd().version(),
                                                     "wrk": env.wrk_version()})
    lines += ["| figure | value | target |", "|---|---|---|"]
    rss = data.get("idle_rss", {})
    if "workers_mb" in rss:
        worst = max(rss["workers_mb"])
        lines.append(f"| idle worker RSS ({START_WORKERS} workers, VmRSS) | "
                     f"{', '.join(f'{v:.1f}' for v in rss['workers_mb'])} MB (master "
                     f"{rss['master_mb']:.1f} MB) | <= {RSS_TARGET_MB} MB: "
                     f"{'met' if worst <= RSS_TARGET_MB else 'missed'} |")
    else:
        lines.append(f"| idle worker RSS | pyd: not available ({rss.get('unavailable', '-')}) | |")
    st = data.get("start", {})
    firsts = st.get("first_answer_s", [])
    if firsts:
        lines.append(f"| `pyd start` to first answer ({START_WORKERS} workers, median of "
                     f"{len(firsts)}) | {statistics.median(firsts):.2f} s (runs: "
                     f"{', '.join(f'{v:.2f}' for v in firsts)}; the command returned after "
                     f"{statistics.median(st['command_returned_s']):.2f} s) | |")
    if st.get("failures"):
        lines.append(f"| failed starts | {len(st['failures'])}: {st['failures'][0]} | 0 |")
    rc = data.get("recycles", {})
    if "unavailable" in rc:
        lines.append(f"| failed requests over recycles | pyd: not available ({rc['unavailable']}) "
                     "| |")
    elif rc:
        lines.append(f"| failed requests over {rc['retired']} recycles ({rc['requests']:,} "
                     f"requests, {RECYCLE_CLIENTS} keep-alive clients, {rc['seconds']} s) | "
                     f"{rc['errors']} (connect {rc['connect']}, read {rc['read']}, write "
                     f"{rc['write']}, timeout {rc['timeout']}, non-2xx {rc['non_2xx']}) | 0: "
                     f"{'met' if rc['errors'] == 0 and rc['retired'] >= RECYCLES_WANTED else 'missed'} |")
    if rc and "unavailable" not in rc:
        lines += ["", f"Recycle load: `{rc['command']}` repeated {rc['runs']} times (wrk "
                  f"reconnects between runs); pyd's `fullstatus` at the end: "
                  f"`{rc['fullstatus_restarts'] or '-'}`. Config: `workers {RECYCLE_WORKERS}; "
                  "max-requests 100;` (jitter 0, max-recycling 1 by default)."]
        if rc["retired"]:
            lines.append(f"\nRequests served per retired worker: {rc['requests'] / rc['retired']:,.0f} "
                         "on average (`max-requests 100`): a worker keeps serving after it marks "
                         "itself retiring, until its replacement is up (the master starts the "
                         "replacement first).")
        if rc.get("wrk_failure"):
            lines.append(f"\nwrk failed: {rc['wrk_failure']}")
        if rc["retired"] < RECYCLES_WANTED:
            lines.append(f"\nOnly {rc['retired']} recycles happened within the time allowed.")
    lines += ["", f"Config for idle RSS and start time: `workers {START_WORKERS};`, "
              "`Pool:HTTPServer { listen 127.0.0.1:$PORT; app apps:hello; access-log off; }`, "
              "`user nobody;` as root."]
    session.write(lines, data | {"targets": {"idle_worker_rss_mb": RSS_TARGET_MB,
                                             "failed_requests": 0}})


if __name__ == "__main__":
    sys.exit(main())

"""pyd's hello-world keep-alive throughput with the access log on, as a ratio to it off.

Run `python3 bench/access_log.py [--quick]`; writes bench/results/RESULTS-access-log.md and
results-access-log.json. Variants: `access-log off;`, `access-log combined;` and `access-log json;`,
one worker each, the log written to pyd's log file. Target: combined >= 0.9x off.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, env  # noqa: E402
from harness.report import ratio_cell, summary_table  # noqa: E402
from harness.scenarios import BY_NAME  # noqa: E402
from harness.servers import Pyd, Running, Site  # noqa: E402
from harness.sweep import summarize  # noqa: E402

TARGET = 0.9


class LoggingPyd(Pyd):
    """pyd whose access-log lines are counted when it stops, to show the log was really written."""

    def __init__(self, access_log: str):
        super().__init__(access_log=access_log)
        self.lines_logged: list[int] = []

    def start(self, site: Site) -> Running:
        running = super().start(site)
        stop, log = running.stop, self.paths(site)["log"]

        def stop_and_count() -> None:
            stop()
            try:
                with open(log, errors="replace") as f:
                    self.lines_logged.append(sum(1 for line in f if " pyd.http.access: " in line))
            except OSError:
                self.lines_logged.append(0)

        running.stop = stop_and_count
        return running


def main() -> int:
    args = compare.arguments(__doc__.splitlines()[0], repeat=5)
    session = compare.Session("access-log")
    servers = {fmt: LoggingPyd(fmt) for fmt in ("off", "combined", "json")}
    variants = [compare.Variant(f"access-log {fmt}", server, title=f"pyd, access-log {fmt}")
                for fmt, server in servers.items()]
    try:
        ms = compare.run_rounds(session, variants, scenario="access-log",
                                check=BY_NAME["hello"].check, repeat=args.repeat,
                                duration=args.duration)
        config = servers["combined"].config(Site(root=session.root, app="hello", port=8000))
    finally:
        session.close(args.keep)
    sums = summarize(ms)
    got = compare.by_name(sums)
    titles = {v.name: v.title for v in variants}
    off = got.get("access-log off")
    ratios = {name: (s.rps / off.rps if off and off.rps and s.rps else None)
              for name, s in got.items() if name != "access-log off"}
    lines = session.header("pyd access log: on vs off", {"pyd": Pyd().version(),
                                                        "wrk": env.wrk_version()})
    lines += ["Hello-world keep-alive, 1 worker, wrk -t2 -c64 after a 1 s warm-up; medians of "
              f"{args.repeat} interleaved rounds of {args.duration:g} s. The access log goes "
              "to pyd's log file (channel pyd.http.access, the default route).", ""]
    lines += summary_table(sorted(sums, key=lambda s: list(titles).index(s.server)), titles)
    lines += ["", "| format | / access-log off | access lines per server run, warm-up included (median) |", "|---|---|---|"]
    for fmt, server in servers.items():
        if fmt == "off":
            continue
        logged = sorted(server.lines_logged)
        median = logged[len(logged) // 2] if logged else None
        target = TARGET if fmt == "combined" else None
        lines.append(f"| {fmt} | {ratio_cell(ratios.get(f'access-log {fmt}'), target)} "
                     f"| {median if median is not None else '-'} |")
    lines += ["", "pyd's config (combined; `off` and `json` differ in that line only):", "```",
              config.strip().replace("8000", "$PORT"), "```"]
    notes = sorted({f"{s.server}: {s.status} ({s.reason})" for s in sums if s.status != "ok"}
                   | {f"{s.server}: {n}" for s in sums for n in s.notes})
    if servers["off"].lines_logged and max(servers["off"].lines_logged) > 0:
        notes.append("`access-log off` still wrote access lines: the directive is not honoured")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    session.write(lines, {"ratios": ratios, "target": {"combined": TARGET}, "summary": sums,
                          "lines_logged": {f: s.lines_logged for f, s in servers.items()},
                          "measurements": ms})
    return 0


if __name__ == "__main__":
    sys.exit(main())

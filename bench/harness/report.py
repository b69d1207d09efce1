"""Writing the sweep's results: bench/RESULTS.md for people, bench/results.json for programs.

Ratios are pyd's median req/s over a peer's, from the same run; the issue's targets stand next to
them. A run in which pyd served nothing is headed as a peer-only baseline.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path

from .measure import Measurement
from .scenarios import SCENARIOS
from .servers import Nginx, Pyd, Site
from .sweep import PEER_ORDER, Summary

# (scenario, workers, peer) -> the least pyd/peer ratio the issue asks for.
TARGETS = {("hello", 1, "gunicorn"): 4.0, ("hello", 1, "granian"): 1.0,
           ("hello", 1, "nginx"): 0.55, ("hello-close", 1, "gunicorn"): 3.0}
SENTINEL_PORT = 65000


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def ratio_cell(ratio: float | None, target: float | None) -> str:
    if ratio is None:
        return "-"
    text = f"{ratio:.2f}x"
    if target is not None:
        text += f" (target >= {target:g}x: {'met' if ratio >= target else 'missed'})"
    return text


def ratios(summaries: list[Summary]) -> dict[tuple[str, int, str], float | None]:
    by = {(s.scenario, s.workers, s.server): s for s in summaries}
    out = {}
    for (scenario, workers, server), s in by.items():
        if server == "pyd":
            continue
        mine = by.get((scenario, workers, "pyd"))
        if mine is None:
            continue
        ok = mine.rps and s.rps
        out[(scenario, workers, server)] = mine.rps / s.rps if ok else None
    return out


def cpu_ratios(summaries: list[Summary]) -> dict[tuple[str, int, str], float | None]:
    """A peer's CPU per request over pyd's: above 1, pyd spends less CPU on a request.

    Less sensitive to a busy machine than req/s, which depends on the share of cores a server
    gets (a multi-threaded server takes a larger share when other programs compete).
    """
    by = {(s.scenario, s.workers, s.server): s for s in summaries}
    out = {}
    for (scenario, workers, server), s in by.items():
        mine = by.get((scenario, workers, "pyd"))
        if server != "pyd" and mine is not None:
            ok = mine.cpu_us_per_request and s.cpu_us_per_request
            out[(scenario, workers, server)] = (s.cpu_us_per_request / mine.cpu_us_per_request
                                                if ok else None)
    return out


def summary_table(rows: list[Summary], titles: dict[str, str]) -> list[str]:
    lines = ["| server | workers | req/s (median) | range | p99 ms | CPU s | CPU µs/req "
             "| RSS MB, all processes | largest process MB | errors | runs | busy elsewhere |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        name = s.title or titles.get(s.server, s.server)
        reason = s.reason.replace("|", "/")  # a log tail must not split the table's cells
        if s.status != "ok":
            lines.append(f"| {name} | {s.workers} | {s.server}: not available ({reason}) "
                         f"| | | | | | | | 0 | |" if s.status == "unavailable" else
                         f"| {name} | {s.workers} | error: {reason} | | | | | | | | 0 | |")
            continue
        lines.append(
            f"| {name} | {s.workers} | {fmt(s.rps)} | {fmt(s.rps_min)}-{fmt(s.rps_max)} "
            f"| {fmt(s.p99_ms, 2)} | {fmt(s.cpu_s, 1)} | {fmt(s.cpu_us_per_request, 0)} "
            f"| {fmt(s.rss_total_mb, 0)} | {fmt(s.rss_process_mb, 0)} | {s.errors} | {s.runs} "
            f"| {fmt(s.other_cores, 2)} |")
    return lines


def portable(text: str, root: Path) -> str:
    """Commands as a reader can reuse them: the temporary directory as $ROOT, repo-relative paths."""
    repo = str(Path(__file__).resolve().parent.parent.parent) + "/"
    return (text.replace(str(root), "$ROOT").replace(repo, "")
            .replace(str(SENTINEL_PORT), "$PORT"))


def commands(root: Path, servers: dict, scenario_cmds: dict[str, str]) -> list[str]:
    site = Site(root=root, app="hello", port=SENTINEL_PORT, workers=1)
    out = ["Ports are ephemeral (shown as $PORT); `-w/--workers/--processes/worker_processes/"
           "workers` is 1 or 2; the app is `apps:hello`, `apps:big`, `apps:static` or "
           "`apps:upload` by scenario. Servers run one at a time.", "", "```"]
    for server in servers.values():
        if isinstance(server, Pyd | Nginx):
            continue
        out.append(f"# {server.title}")
        out.append(shlex.join(server.command(site)))
    if "granian" in servers:
        out.append("# Granian, static scenario: adds --static-path-route /static "
                   "--static-path-mount $ROOT/static")
    out.append("# pyd")
    pythonpath = f"PYTHONPATH=<git archive {Pyd.revision[:7]} pyd> " if Pyd.source else ""
    out.append(pythonpath + shlex.join(servers["pyd"].command(site))
               + "   # then `pyd stop -c` the same file")
    out.append("# nginx")
    out.append(shlex.join(servers["nginx"].command(site)))
    out.append("```")
    static_site = Site(root=root, app="hello", port=SENTINEL_PORT, workers=1, static=True)
    out += ["", "pyd's config (static scenario; the others have no `location`):", "```",
            servers["pyd"].config(static_site).strip(),
            "```", "", "nginx's config:", "```",
            servers["nginx"].config(static_site).strip(),
            "```", "", "wrk, per scenario (after a warm-up run of the same command):", "```"]
    out += [f"# {name}\n{cmd}" for name, cmd in scenario_cmds.items()]
    out.append("```")
    return [portable(line, root) for line in out]


def write(path_md: Path, path_json: Path, *, meta: dict, measurements: list[Measurement],
          summaries: list[Summary], servers: dict, root: Path, notes: list[str]) -> None:
    titles = {name: s.title for name, s in servers.items()}
    r, cpu = ratios(summaries), cpu_ratios(summaries)
    pyd_ok = any(s.server == "pyd" and s.status == "ok" for s in summaries)
    pyd_reasons = sorted({s.reason for s in summaries if s.server == "pyd" and s.status != "ok"})
    md = ["# pyd HTTP benchmark", ""]
    if not pyd_ok and "pyd" in meta["options"]["servers"]:
        md += [f"**Peer-only baseline: pyd was not available** ({'; '.join(pyd_reasons)}). "
               "The peers' figures stand; pyd's row and the ratios fill in once its pool exists.",
               ""]
    md += [f"Generated by `{('bench/run ' + meta['argv']).strip()}` on {meta['date']} (UTC), "
           f"in {meta['elapsed']}.", "",
           "Every figure is the median of the runs listed; in each round every server runs "
           "each scenario once, one server at a time, servers rotated between rounds. CPU is "
           "utime+stime of the server's whole process tree (reaped children included) during "
           "the measured run; RSS is the peak during it, sampled every 0.25 s. The machine is "
           "shared and noisy: compare ratios within this run, not absolute figures across runs. "
           "MB are 2^20 bytes. *Busy elsewhere* is how many cores other programs kept busy during the run (all "
           "busy CPU time less the server's, wrk's and the harness's): near 0 is a quiet run. "
           "Under such load a multi-threaded server takes a larger share of the cores, so each "
           "ratio table also gives CPU per request (peer over pyd; above 1, pyd spends less).",
           "", "## Machine", ""]
    md += [f"- {k}: {v}" for k, v in meta["machine"].items()]
    md += ["", "## Versions", ""]
    md += [f"- {titles.get(k, k)}: {v}" for k, v in meta["versions"].items()]
    md += ["", "## Targets (one worker each, same run)", "",
           "| scenario | pyd / peer | ratio | target |", "|---|---|---|---|"]
    for (scenario, workers, peer), target in TARGETS.items():
        value = r.get((scenario, workers, peer))
        state = "not measured" if value is None else ("met" if value >= target else "missed")
        md.append(f"| {scenario} | pyd / {titles.get(peer, peer)} | {fmt(value, 2, 'x')} "
                  f"| >= {target:g}x: {state} |")
    for scenario in SCENARIOS:
        rows = [s for s in summaries if s.scenario == scenario.name]
        if not rows:
            continue
        order = ["pyd", *PEER_ORDER]
        rows.sort(key=lambda s: (s.workers, order.index(s.server) if s.server in order else 99))
        md += ["", f"## {scenario.title} (`{scenario.name}`)", ""]
        md += summary_table(rows, titles)
        peers = [p for p in PEER_ORDER if any(s.server == p for s in rows)]
        workers = sorted({s.workers for s in rows})
        if "pyd" in {s.server for s in rows} and peers:
            row_titles = {s.server: s.title or titles.get(s.server, s.server) for s in rows}
            md += ["", "| pyd / | " + " | ".join(row_titles[p] for p in peers) + " |",
                   "|---|" + "---|" * len(peers)]
            for w in workers:
                cells = [ratio_cell(r.get((scenario.name, w, p)), TARGETS.get((scenario.name, w, p)))
                         for p in peers]
                md.append(f"| {w} worker{'s' if w > 1 else ''}, req/s | " + " | ".join(cells)
                          + " |")
            for w in workers:
                cells = [fmt(cpu.get((scenario.name, w, p)), 2, "x") for p in peers]
                md.append(f"| {w} worker{'s' if w > 1 else ''}, CPU per request (peer / pyd) | "
                          + " | ".join(cells) + " |")
    md += ["", "## Commands", ""]
    md += commands(root, servers, meta["wrk_commands"])
    all_notes = list(notes) + sorted({f"{titles.get(s.server, s.server)}, {s.scenario}, "
                                      f"{s.workers} worker(s): {n}"
                                      for s in summaries for n in s.notes})
    if all_notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in all_notes]
    path_md.write_text(portable("\n".join(md), root) + "\n")
    path_json.write_text(portable(json.dumps({
        **meta,
        "peer_only_baseline": not pyd_ok,
        "targets": [{"scenario": s, "workers": w, "peer": p, "target": t,
                     "ratio": r.get((s, w, p))} for (s, w, p), t in TARGETS.items()],
        "ratios": [{"scenario": s, "workers": w, "peer": p, "ratio": v,
                    "cpu_per_request_peer_over_pyd": cpu.get((s, w, p))}
                   for (s, w, p), v in sorted(r.items())],
        "summary": [asdict(s) for s in summaries],
        "measurements": [m.to_dict() for m in measurements],
        "notes": all_notes,
    }, indent=1), root) + "\n")

"""Hello-world behind nginx: pyd's FastCGI pool against gunicorn -k gevent and uWSGI behind it.

Run `python3 bench/fastcgi.py [--quick]`; writes bench/results/RESULTS-fastcgi.md and results-fastcgi.json.
Variants (one backend worker, one nginx worker process each):
  nginx -> pyd Pool:FastCGI, with fastcgi_keep_conn on + upstream keepalive 16, and without;
  nginx -> gunicorn -k gevent over proxy_pass (HTTP/1.1, upstream keepalive 16);
  nginx -> uWSGI over uwsgi_pass to --socket (gevent mode).
Targets: pyd >= 2x nginx->gunicorn-gevent and >= 1.0x nginx->uWSGI.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, env  # noqa: E402
from harness.fronted import Fronted  # noqa: E402
from harness.report import fmt, ratio_cell, summary_table  # noqa: E402
from harness.scenarios import BY_NAME  # noqa: E402
from harness.servers import UWSGI, Gunicorn, Pyd, Site  # noqa: E402
from harness.sweep import summarize  # noqa: E402

TARGETS = {"gunicorn": 2.0, "uwsgi": 1.0}


def upstream(keepalive: bool):
    def block(site: Site) -> str:
        extra = "\n        keepalive 16;" if keepalive else ""
        return f"""    upstream backend {{
        server 127.0.0.1:{site.backend_port};{extra}
    }}"""
    return block


def fastcgi_location(keep_conn: bool):
    def block(site: Site) -> str:
        keep = "\n            fastcgi_keep_conn on;" if keep_conn else ""
        return f"""        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_pass backend;{keep}
        }}"""
    return block


def proxy_location(site: Site) -> str:
    return """        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }"""


def uwsgi_location(site: Site) -> str:
    return """        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass backend;
        }"""


def variants() -> list[compare.Variant]:
    pyd = Pyd("FastCGI", access_log=None)  # access-log belongs to Pool:HTTPServer
    return [
        compare.Variant("pyd-keepconn", Fronted(
            "pyd-keepconn", "nginx -> pyd FastCGI (fastcgi_keep_conn on, keepalive 16)", pyd,
            locations=fastcgi_location(True), upstream=upstream(True))),
        compare.Variant("pyd", Fronted(
            "pyd", "nginx -> pyd FastCGI (a connection per request)", pyd,
            locations=fastcgi_location(False), upstream=upstream(False))),
        compare.Variant("gunicorn", Fronted(
            "gunicorn", "nginx -> gunicorn -k gevent (proxy_pass, keepalive 16)", Gunicorn(),
            locations=proxy_location, upstream=upstream(True))),
        compare.Variant("uwsgi", Fronted(
            "uwsgi", "nginx -> uWSGI (uwsgi_pass, gevent)", UWSGI("uwsgi"),
            locations=uwsgi_location, upstream=upstream(False))),
    ]


def main() -> int:
    args = compare.arguments(__doc__.splitlines()[0])
    session = compare.Session("fastcgi")
    vs = variants()
    titles = {v.name: v.server.title for v in vs}
    try:
        ms = compare.run_rounds(session, vs, scenario="fastcgi", check=BY_NAME["hello"].check,
                                repeat=args.repeat, duration=args.duration)
    finally:
        session.close(args.keep)
    sums = summarize(ms)
    got = compare.by_name(sums)
    lines = session.header("pyd FastCGI behind nginx", {
        "pyd": vs[0].server.backend.version(), "gunicorn": Gunicorn().version(),
        "uWSGI": UWSGI().version(), "nginx": vs[0].server.nginx.version(),
        "wrk": env.wrk_version()})
    lines += ["Hello-world (`apps:hello`) through nginx (1 worker process) to one backend "
              "worker; wrk -t2 -c64 keep-alive against nginx, after a 1 s warm-up; medians of "
              f"{args.repeat} interleaved rounds of {args.duration:g} s. CPU and RSS cover "
              "nginx and the backend together; the CPU split is below.", ""]
    lines += summary_table(sorted(sums, key=lambda s: list(titles).index(s.server)), titles)
    lines += ["", "| variant | backend CPU s | nginx CPU s |", "|---|---|---|"]
    for v in vs:
        lines.append(f"| {titles[v.name]} | {fmt(compare.cpu_part(ms, v.name, 'backend'), 1)} "
                     f"| {fmt(compare.cpu_part(ms, v.name, 'nginx'), 1)} |")
    lines += ["", "## Ratios", "", "| pyd variant | / nginx->gunicorn-gevent | / nginx->uWSGI |",
              "|---|---|---|"]
    ratios = {}
    for mine in ("pyd-keepconn", "pyd"):
        cells = []
        for peer, target in TARGETS.items():
            a, b = got.get(mine), got.get(peer)
            r = a.rps / b.rps if a and b and a.rps and b.rps else None
            ratios[f"{mine}/{peer}"] = r
            cells.append(ratio_cell(r, target))
        lines.append(f"| {titles[mine]} | " + " | ".join(cells) + " |")
    lines += ["", "## Configs", "", "nginx's `location /` per variant (the rest as in "
              "RESULTS.md's nginx config, with `worker_processes 1`):", "```"]
    demo = Site(root=Path("$ROOT"), app="hello", port=9000, backend_port=9000)
    for v in vs:
        lines += [f"# {titles[v.name]}", v.server.nginx.upstream(demo),
                  v.server.nginx.locations(demo)]
    lines += ["```", "", "Backends (port $PORT):", "```",
              "# pyd: Pool:FastCGI { listen 127.0.0.1:$PORT; app apps:hello; } with workers 1",
              "# " + " ".join(Gunicorn().command(demo)),
              "# " + " ".join(UWSGI("uwsgi").command(demo)), "```"]
    lines = [line.replace(str(Path(__file__).resolve().parent) + "/", "bench/")
             .replace("9000", "$PORT") for line in lines]
    notes = sorted({f"{titles[s.server]}: {'not available' if s.status == 'unavailable' else s.status} "
                    f"({s.reason})" for s in sums if s.status != "ok"}
                   | {f"{titles[s.server]}: {n}" for s in sums for n in s.notes})
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    session.write(lines, {"ratios": ratios, "targets": TARGETS, "summary": sums,
                          "measurements": ms})
    return 0


if __name__ == "__main__":
    sys.exit(main())

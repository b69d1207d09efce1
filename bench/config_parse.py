"""Benchmark: parse and validate a generated 5,000-line config spread over 50 included files.

Not a test: run `python bench/config_parse.py [-n RUNS]`; it prints the median time of
`pyd.config.load()` (read, parse, include, substitute, validate). The target is under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyd.config import load  # noqa: E402

FILES = 50
LINES_PER_FILE = 100
TARGET = 0.5


def included_file(n: int) -> str:
    """About LINES_PER_FILE lines: a pool with locations and an App with settings."""
    lines = [f"# conf.d/{n:02d}.conf: generated for the benchmark", ""]
    lines += [f"Pool:HTTPServer:site{n} {{",
              f"    listen 127.0.0.1:{10000 + n}, [::1]:{10000 + n}, unix:/tmp/pyd-{n}.sock;",
              f"    app app{n};"]
    for i in range(12):
        lines += [f"    location /static{i}/ {{",
                  f"        alias \"/srv/site{n}/static {i}\";  # a comment",
                  "        index index.html, index.htm;",
                  "    }",
                  f"    location /api{i}/ {{ app shop{n}.api{i}:application; }}",
                  ""]
    lines += ["}", "", f"App:app{n} {{", f"    class shop{n}.app:Shop;", "    privileged;"]
    while len(lines) < LINES_PER_FILE - 1:
        i = len(lines)
        lines.append(f"    setting_{i} \"value {i}\\twith escapes\" '${{raw}}' ${{HOME:-/root}} "
                     f"{i}K, {i}s;")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main_file() -> str:
    return "\n".join([
        "# generated for the benchmark",
        "user nobody;",
        "workers 4;",
        "max-requests 10000;",
        "max-requests-jitter 1000;",
        "max-memory-usage 256M;",
        "graceful-timeout 1m 30s;",
        "log-level info;",
        "include conf.d/*.conf;",
    ]) + "\n"


def write_tree(root: str) -> int:
    """Write the main file and its includes under root; returns the number of lines written."""
    os.makedirs(os.path.join(root, "conf.d"))
    total = 0
    text = main_file()
    with open(os.path.join(root, "pyd.conf"), "w") as f:
        f.write(text)
    total += text.count("\n")
    for n in range(FILES):
        text = included_file(n)
        with open(os.path.join(root, "conf.d", f"{n:02d}.conf"), "w") as f:
            f.write(text)
        total += text.count("\n")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=11, help="how many loads (default 11)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as root:
        lines = write_tree(root)
        path = os.path.join(root, "pyd.conf")
        env = {"HOME": "/root"}
        config = load(path, env=env)  # a warm-up, and a check that the generated config is valid
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            load(path, env=env)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    verdict = "ok" if median < TARGET else "OVER TARGET"
    print(f"config_parse: {lines} lines in {FILES + 1} files, {len(config.sections)} sections; "
          f"median of {args.runs} loads: {median:.3f} s (target < {TARGET} s: {verdict})")
    return 0 if median < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

"""bench/micro.py keeps measuring the cores it names: every case runs on the working tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_micro_benchmark_runs_on_the_working_tree():
    r = subprocess.run([sys.executable, str(REPO / "bench" / "micro.py"), "--number", "20",
                        "--repeat", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)["results"]
    assert {"h1 GET, kept alive, 200 answered", "FastCGI nginx request, answered",
            "access-log line, combined", "access-log line, json"} <= set(results)
    unavailable = {name: v for name, v in results.items() if isinstance(v, str)}
    assert not unavailable
    assert all(v > 0 for v in results.values())

"""Pool:Metrics end to end: a real pyd, real traffic, scrapes from the master itself."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from harness import free_port, http_get, wait_port, wait_until
from prometheus_client.parser import text_string_to_metric_families as parse

pytestmark = pytest.mark.e2e

APP = '''
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    if environ["PATH_INFO"] == "/read":
        environ["wsgi.input"].read()
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [body]
'''


def config(site: Path, port: int, mport: int, extra: str = "") -> str:
    return (f"user root;\nworkers 2;\ncwd {site};\ngraceful-timeout 10s;\n{extra}\n"
            f"Pool:HTTPServer {{ listen 127.0.0.1:{port}; app app:app; access-log off;\n"
            f"  location /api/ {{ app app:app; }} }}\n"
            f"Pool:Metrics {{ listen 127.0.0.1:{mport}; }}\n")


def scrape(mport: int) -> dict:
    status, headers, body = http_get(mport, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in parse(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_counts_match_exactly_and_stay_monotonic_across_recycling(pyd_factory, site):
    port, mport = free_port(), free_port()
    p = pyd_factory(config(site, port, mport, "max-requests 15;"), directory=site)
    p.start()
    wait_port(mport)
    assert http_get(mport, "/ready")[0] == 200
    assert http_get(mport, "/health")[0] == 200
    before = scrape(mport)
    assert total(before, "pyd_http_requests_total") == 0
    last: dict = {}
    sent = {"/": 0, "/api/": 0}
    for i in range(90):
        path = "/api/x" if i % 3 == 0 else "/"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            assert r.status == 200 and r.read() == b"hello"
        sent["/api/" if path.startswith("/api/") else "/"] += 1
        if i % 10 == 0:
            now = scrape(mport)
            for key, value in last.items():  # no count ever goes down, recycles or not
                if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
                    assert now.get(key, 0) >= value, key
            last = now

    def settled():
        s = scrape(mport)
        return s if total(s, "pyd_http_requests_total") == 90 else None

    s = wait_until(settled, 10, "the counts of 90 requests")
    for loc, n in sent.items():
        assert total(s, "pyd_http_requests_total", pool="HTTPServer", location=loc,
                     method="GET", code="200") == n
        assert total(s, "pyd_http_request_duration_seconds_count", location=loc) == n
        assert total(s, "pyd_http_response_bytes_total", location=loc) == 5 * n

    def recycled():  # 90 requests past max-requests 15: workers were replaced on the way
        s = scrape(mport)
        return s if total(s, "pyd_worker_exits_total", reason="requests") >= 2 else None

    s = wait_until(recycled, 20, "two workers recycled")
    assert total(s, "pyd_http_requests_total") == 90  # their counts retired, not lost
    assert total(s, "pyd_worker_starts_total") >= 4
    assert total(s, "pyd_build_info") == 1
    assert total(s, "pyd_master_rss_bytes") > 0
    assert len([k for k in s if k[0] == "pyd_worker_rss_bytes"]) >= 2
    # the master alone answers: no worker holds the metrics listener
    for pid in p.workers():
        assert f"127.0.0.1:{mport}" not in _listening(pid)

    def accepted():
        return total(scrape(mport), "pyd_connections_accepted_total") >= 90 or None

    wait_until(accepted, 5, "the accepted connections (reported once a second)")


def _listening(pid: int) -> str:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if f"pid={pid}," in line)


def test_ready_turns_503_when_a_graceful_stop_begins(pyd_factory, site):
    port, mport = free_port(), free_port()
    p = pyd_factory(config(site, port, mport), directory=site)
    p.start()
    wait_port(mport)
    assert http_get(mport, "/ready")[0] == 200
    result = {}

    def slow():
        result["answer"] = http_get(port, "/slow?3", timeout=20)

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: total(scrape(mport), "pyd_http_requests_in_flight") == 1, 5,
               "the slow request in flight")
    os.kill(p.master_pid, signal.SIGQUIT)
    wait_until(lambda: http_get(mport, "/ready")[0] == 503, 2, "/ready answering 503")
    status, _, body = http_get(mport, "/ready")
    assert status == 503 and body == b"stopping\n"
    assert http_get(mport, "/health")[0] == 200  # alive, still draining
    t.join(20)
    assert result["answer"][0] == 200  # the request in flight was finished


def test_an_update_is_counted_and_a_config_error_too(pyd_factory, site):
    port, mport = free_port(), free_port()
    p = pyd_factory(config(site, port, mport), directory=site)
    p.start()
    wait_port(mport)
    for _ in range(5):
        http_get(port, "/")
    p.cli("update", check=True)
    conf = p.conf.read_text()
    p.conf.write_text(conf + "\nworkers nope;\n")
    assert p.cli("update").returncode != 0
    p.conf.write_text(conf)

    def counted():
        s = scrape(mport)
        return s if total(s, "pyd_worker_exits_total", reason="update") >= 2 else None

    s = wait_until(counted, 20, "the old workers replaced")
    assert total(s, "pyd_config_reloads_total", outcome="applied") == 1
    assert total(s, "pyd_config_reloads_total", outcome="invalid") == 1
    assert total(s, "pyd_http_requests_total") == 5  # the old workers' counts were kept


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not "
                                                               "installed")
def test_a_real_prometheus_scrapes_pyd(pyd_factory, site, tmp_path):
    import json

    port, mport, pport = free_port(), free_port(), free_port()
    p = pyd_factory(config(site, port, mport), directory=site)
    p.start()
    wait_port(mport)
    for _ in range(7):
        http_get(port, "/")
    wait_until(lambda: total(scrape(mport), "pyd_http_requests_total") == 7, 5, "7 counted")
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: pyd\n    static_configs: [{{targets: ['127.0.0.1:{mport}']}}]\n")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={prom / 'prometheus.yml'}",
         f"--storage.tsdb.path={prom / 'data'}", f"--web.listen-address=127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def asked():
            url = (f"http://127.0.0.1:{pport}/api/v1/query?query="
                   "sum(pyd_http_requests_total)")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    data = json.load(r)
            except OSError:
                return None
            result = data.get("data", {}).get("result")
            return result[0]["value"][1] if result else None

        assert wait_until(asked, 30, "prometheus' answer", step=0.5) == "7"
        with urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v1/targets", timeout=5) as r:
            targets = json.load(r)["data"]["activeTargets"]
        assert targets[0]["health"] == "up", targets
    finally:
        proc.kill()
        proc.wait(10)
    promtool = shutil.which("promtool")
    if promtool:
        body = http_get(mport, "/metrics")[2]
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


def test_only_allowed_clients_are_answered(pyd_factory, site):
    port, mport = free_port(), free_port()
    text = config(site, port, mport).replace(
        f"listen 127.0.0.1:{mport}; }}", f"listen 127.0.0.1:{mport}; allowed-clients 10.0.0.0/8; }}")
    p = pyd_factory(text, directory=site)
    p.start()
    wait_port(mport)
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed unanswered: loopback is not in 10.0.0.0/8


def test_fastcgi_requests_are_counted_by_pool(pyd_factory, site):
    from fcgi_client import FastCGIClient

    port, fport, mport = free_port(), free_port(), free_port()
    text = config(site, port, mport) + (f"Pool:FastCGI {{ listen 127.0.0.1:{fport}; "
                                        "app app:app; }\n")
    p = pyd_factory(text, directory=site)
    p.start()
    wait_port(fport)
    with FastCGIClient(("127.0.0.1", fport)) as c:
        for _ in range(3):
            r = c.request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/read",
                           "PATH_INFO": "/read", "CONTENT_LENGTH": "4"}, b"abcd",
                          request_id=1, keep_conn=True)
            assert r.cgi()[0].startswith("200")

    def counted():
        s = scrape(mport)
        return s if total(s, "pyd_http_requests_total", pool="FastCGI") == 3 else None

    s = wait_until(counted, 10, "3 FastCGI requests counted")
    assert total(s, "pyd_http_requests_total", pool="FastCGI", method="POST", code="200") == 3
    assert total(s, "pyd_http_request_bytes_total", pool="FastCGI") == 12  # read by the app
    assert total(s, "pyd_http_response_bytes_total", pool="FastCGI") == 15
    assert total(s, "pyd_http_requests_total", pool="HTTPServer") == 0

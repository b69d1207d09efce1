"""The HTTP families, from one scrape's Sample: requests, durations, bytes, connections."""

from __future__ import annotations

from pyd.ipc import counters as ct
from pyd.metrics.collect import Sample
from pyd.metrics.exposition import Family, bound

_BOUNDS = (*ct.BUCKETS, float("inf"))


def http_families(s: Sample) -> list[Family]:
    c = s.counts
    requests = Family("pyd_http_requests", "counter",
                      "HTTP and FastCGI requests answered, by pool, location, method and status")
    for key in sorted(k for k in c if k[0] == "req"):
        _, pool, loc, method, code = key
        requests.add(c[key], pool=pool, location=loc, method=method, code=code)
    duration = Family("pyd_http_request_duration_seconds", "histogram",
                      "How long requests took, from their head to the end of the response")
    bytes_in = Family("pyd_http_request_bytes", "counter", "Request body bytes read")
    bytes_out = Family("pyd_http_response_bytes", "counter",
                       "Response body bytes sent (after compression)")
    for pool, loc in s.routes:
        total = 0
        for i, le in enumerate(_BOUNDS):
            total += c.get(("bucket", pool, loc, i), 0)
            duration.add(total, "_bucket", pool=pool, location=loc, le=bound(le))
        duration.add(float(c.get(("sum", pool, loc), 0.0)), "_sum", pool=pool, location=loc)
        duration.add(total, "_count", pool=pool, location=loc)
        bytes_in.add(c.get(("in", pool, loc), 0), pool=pool, location=loc)
        bytes_out.add(c.get(("out", pool, loc), 0), pool=pool, location=loc)
    in_flight = Family("pyd_http_requests_in_flight", "gauge",
                       "Requests being served now").add(s.in_flight)
    open_ = Family("pyd_connections_open", "gauge", "Open client connections, parked included")
    parked = Family("pyd_connections_parked", "gauge",
                    "Idle keep-alive connections parked without a greenlet")
    accepted = Family("pyd_connections_accepted", "counter", "Connections accepted")
    for pool in s.pools:
        open_.add(s.open.get(pool, 0), pool=pool)
        parked.add(s.parked.get(pool, 0), pool=pool)
        accepted.add(c.get(("accepted", pool), 0), pool=pool)
    return [requests, duration, bytes_in, bytes_out, in_flight, open_, parked, accepted]

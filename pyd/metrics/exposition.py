"""The exposition formats: Prometheus text 0.0.4, and OpenMetrics 1.0 when a scraper asks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass
class Family:
    """One metric family: `name` without a counter's _total; samples (suffix, labels, value)."""

    name: str
    type: str  # counter, gauge, histogram
    help: str
    samples: list = field(default_factory=list)

    def add(self, value, suffix: str = "", **labels) -> Family:
        self.samples.append((suffix, tuple(labels.items()), value))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def bound(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(float(le))


def render(families: list[Family], openmetrics: bool = False) -> bytes:
    out: list[str] = []
    for f in families:
        head = f.name if openmetrics or f.type != "counter" else f.name + "_total"
        out.append(f"# HELP {head} {_escape(f.help)}\n# TYPE {head} {f.type}\n")
        for suffix, labels, value in f.samples:
            if f.type == "counter" and not suffix:
                suffix = "_total"
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
            out.append(f"{f.name}{suffix}{{{text}}} {_number(value)}\n" if text
                       else f"{f.name}{suffix} {_number(value)}\n")
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def wants_openmetrics(accept: bytes | None) -> bool:
    """Whether an Accept header asks for OpenMetrics (and does not refuse it with q=0)."""
    if not accept:
        return False
    for part in accept.decode("latin-1").split(","):
        media, _, params = part.strip().partition(";")
        if media.strip().lower() == "application/openmetrics-text":
            q = 1.0
            for p in params.split(";"):
                k, _, v = p.strip().partition("=")
                if k.strip() == "q":
                    try:
                        q = float(v)
                    except ValueError:
                        q = 0.0
            return q > 0
    return False

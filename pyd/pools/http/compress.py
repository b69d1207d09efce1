"""Content negotiation for compression: which coding an Accept-Encoding allows and prefers.

(Streaming compressors for responses live here too, chosen by the same negotiation.)
"""

from __future__ import annotations


def parse_accept_encoding(header: str) -> dict[str, float]:
    """{coding: q} from an Accept-Encoding header; malformed q-values count as 0."""
    out: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        params = params.strip()
        if params:
            name, _, value = params.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        out[coding] = q
    return out


def accepts(header: str, coding: str) -> bool:
    """Does the client accept this coding (explicitly, or through `*`)?"""
    prefs = parse_accept_encoding(header)
    if coding in prefs:
        return prefs[coding] > 0
    return prefs.get("*", 0.0) > 0


def choose(header: str, available: tuple[str, ...]) -> str | None:
    """The coding the client prefers most among `available` (ties: our order), or None."""
    prefs = parse_accept_encoding(header)
    best, best_q = None, 0.0
    for coding in available:
        q = prefs.get(coding, prefs.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best

"""Column tables for people: the one layout of every table the CLI prints.

Each column as wide as its widest cell, two spaces between columns, no trailing blanks. The
rows come as cells already written (fullstatus's workers, configtest's settings, the service's
programs and jobs, which the master sends as rows).
"""

from __future__ import annotations

from collections.abc import Sequence


def render(rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a table; the first row is usually the header."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]

"""The CLI's one table layout (fullstatus, configtest, cron, process)."""

from __future__ import annotations

from pyd.cli.table import render


def test_columns_are_as_wide_as_their_widest_cell_two_spaces_apart():
    rows = [("worker", "pid", "state"), ("1", "4242", "idle"), ("12", "7", "retiring")]
    assert render(rows) == ["worker  pid   state",
                            "1       4242  idle",
                            "12      7     retiring"]


def test_no_line_ends_in_blanks_even_when_its_last_cells_are_empty():
    lines = render([("process", "pid", "note"), ("queue", "-", ""), ("web:1", "17", "")])
    assert lines == ["process  pid  note", "queue    -", "web:1    17"]


def test_rows_may_come_as_lists_as_json_brings_them():
    assert render([["a", "bb"], ["ccc", "d"]]) == ["a    bb", "ccc  d"]


def test_no_rows_no_lines():
    assert render([]) == []

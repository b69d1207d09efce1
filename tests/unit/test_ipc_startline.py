"""The start line a new master writes on its start pipe, and how the CLI or an old master reads it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pyd.ipc import startline
from pyd.ipc.startline import StartLine, StartLineError


def test_a_ready_line_says_the_pid_and_the_workers():
    assert startline.ready_line(4242, 3) == b"READY 4242 3\n"
    assert startline.parse(startline.ready_line(4242, 3)) == StartLine(True, 4242, 3)


def test_an_error_keeps_its_lines():
    message = "pyd.conf:3:5: error: unknown directive\n  lisen 80;\n    ^"
    line = startline.error_line(message)
    assert line == b"ERROR " + message.encode() + b"\n"
    assert startline.parse(line) == StartLine(False, error=message)


def test_nothing_said_is_none():
    assert startline.parse(b"") is None
    assert startline.parse(b"  \n") is None


@pytest.mark.parametrize("data", [b"READY\n", b"READY 12\n", b"READY x 3\n", b"READY -1 3\n",
                                  b"hello\n", b"ERRORS 1\n"])
def test_a_bad_line_is_a_clear_error(data):
    with pytest.raises(StartLineError, match="start line|READY line"):
        startline.parse(data)


def test_an_error_without_a_message_still_says_it_failed():
    assert startline.parse(b"ERROR \n") == StartLine(False, error="an error without a message")


def test_a_huge_error_is_cut_to_the_bound():
    line = startline.error_line("x" * (3 * startline.MAX_SIZE))
    assert len(line) == startline.MAX_SIZE and line.endswith(b"\n")
    assert startline.parse(line).error == "x" * (startline.MAX_SIZE - 7)


def test_undecodable_bytes_do_not_stop_the_reader():
    assert startline.parse(b"ERROR caf\xe9\n").error == "caf\ufffd"


def pipe():
    r, w = os.pipe()
    return r, w


def test_the_reader_takes_the_line_and_stops_at_its_end():
    r, w = pipe()
    try:
        os.write(w, startline.ready_line(7, 2))  # the writer keeps its end open (a worker may)
        assert startline.wait(r, 5.0) == StartLine(True, 7, 2)
    finally:
        os.close(r)
        os.close(w)


def test_the_reader_gets_a_line_written_later():
    r, w = pipe()

    def later():
        time.sleep(0.1)
        os.write(w, startline.error_line("cannot bind 0.0.0.0:80\nin use"))
        os.close(w)

    t = threading.Thread(target=later)
    t.start()
    try:
        assert startline.wait(r, 5.0) == StartLine(False, error="cannot bind 0.0.0.0:80\nin use")
    finally:
        t.join()
        os.close(r)


def test_a_writer_gone_without_a_word_is_none():
    r, w = pipe()
    os.close(w)
    try:
        assert startline.wait(r, 5.0) is None
    finally:
        os.close(r)


def test_no_line_in_time_is_a_timeout_even_with_a_part_of_one():
    r, w = pipe()
    try:
        os.write(w, b"READY 12")
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            startline.read(r, 0.2)
        assert time.monotonic() - began < 2.0
    finally:
        os.close(r)
        os.close(w)


def test_the_reader_reads_no_more_than_the_bound():
    r, w = pipe()
    try:
        os.set_blocking(w, False)
        try:
            os.write(w, b"E" * (startline.MAX_SIZE + 100))  # no newline at all
        except BlockingIOError:
            pass
        assert len(startline.read(r, 2.0)) <= startline.MAX_SIZE
    finally:
        os.close(r)
        os.close(w)

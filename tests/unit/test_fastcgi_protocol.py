"""The sans-IO FastCGI codec: framing, request state, management answers, malformed input, fuzzing,
and a real peer (libfcgi's cgi-fcgi) talking to a tiny blocking server built on the codec."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import struct
import subprocess
import threading

import pytest
from fcgi_client import (
    FastCGIClient,
    begin_request,
    params_records,
    parse_records,
    request_bytes,
    stream_records,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyd.protocols import fastcgi as p
from pyd.protocols.fastcgi import (
    NEED_DATA,
    AbortRequest,
    BeginRequest,
    ConnectionClosed,
    FastCGIConnection,
    Params,
    ProtocolError,
    Stdin,
    StdinEnd,
    decode_params,
    encode_params,
    encode_record,
)

NGINX_PARAMS = {
    b"QUERY_STRING": b"a=1&b=2", b"REQUEST_METHOD": b"POST", b"CONTENT_TYPE": b"text/plain",
    b"CONTENT_LENGTH": b"11", b"SCRIPT_NAME": b"/app", b"REQUEST_URI": b"/app/x?a=1&b=2",
    b"DOCUMENT_URI": b"/app/x", b"DOCUMENT_ROOT": b"/srv/www", b"SERVER_PROTOCOL": b"HTTP/1.1",
    b"REQUEST_SCHEME": b"http", b"GATEWAY_INTERFACE": b"CGI/1.1", b"SERVER_SOFTWARE": b"nginx",
    b"REMOTE_ADDR": b"127.0.0.1", b"REMOTE_PORT": b"51234", b"SERVER_ADDR": b"127.0.0.1",
    b"SERVER_PORT": b"80", b"SERVER_NAME": b"localhost", b"HTTP_HOST": b"localhost",
    b"HTTP_COOKIE": b"c=" + b"x" * 300,  # forces a 4-byte value length
}
BODY = b"hello world"


def record(rtype: int, rid: int, content: bytes = b"", padding: int | None = None) -> bytes:
    """A record with chosen padding (encode_record always pads to 8)."""
    if padding is None:
        return encode_record(rtype, rid, content)
    return p.RECORD_HEADER.pack(1, rtype, rid, len(content), padding) + content + b"\xAA" * padding


def begin(rid: int, role: int = p.RESPONDER, keep_conn: bool = True) -> bytes:
    return record(p.BEGIN_REQUEST, rid, struct.pack("!HB5x", role, p.KEEP_CONN if keep_conn else 0))


def simple_request(rid: int = 1, params=NGINX_PARAMS, body: bytes = BODY, keep_conn=True) -> bytes:
    return request_bytes(rid, params, body, keep_conn=keep_conn)


def drain(conn: FastCGIConnection, events: list | None = None, limit: int = 100_000) -> list:
    """Events until NEED_DATA or ConnectionClosed, appended to `events` (kept if one raises)."""
    events = [] if events is None else events
    for _ in range(limit):
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
    raise AssertionError("next_event never asked for data")


def run(data: bytes, chunks: list[int] | None = None, eof: bool = False, **kwargs):
    """Feed `data` (cut at `chunks` sizes, or whole); (events, error text or None, answers)."""
    conn = FastCGIConnection(**kwargs)
    events: list = []
    answers = b""
    pieces = [data] if chunks is None else _cut(data, chunks)
    try:
        for piece in pieces:
            conn.receive_data(piece)
            drain(conn, events)
            answers += conn.data_to_send()
        if eof:
            conn.receive_data(b"")
            drain(conn, events)
    except ProtocolError as e:
        answers += conn.data_to_send()
        return events, str(e), answers
    return events, None, answers


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        pieces.append(data[pos:pos + max(1, size)])
        pos += max(1, size)
    if pos < len(data):
        pieces.append(data[pos:])
    return pieces


def bytewise(data: bytes, **kwargs):
    return run(data, [1] * len(data), **kwargs)


def merged(events: list) -> list:
    """Events with consecutive Stdin chunks of a request joined: chunking may differ by feed."""
    out: list = []
    for event in events:
        if isinstance(event, Stdin) and out and isinstance(out[-1], Stdin) \
                and out[-1].request_id == event.request_id:
            out[-1] = Stdin(event.request_id, out[-1].data + event.data)
        else:
            out.append(event)
    return out


# -- the common path ------------------------------------------------------------------------------

def test_simple_request_events():
    events, error, answers = run(simple_request(keep_conn=False))
    assert error is None and answers == b""
    assert events == [BeginRequest(1, p.RESPONDER, False), Params(1, NGINX_PARAMS),
                      Stdin(1, BODY), StdinEnd(1)]


def test_keep_conn_flag_and_property():
    conn = FastCGIConnection()
    conn.receive_data(simple_request(1, keep_conn=True))
    assert drain(conn)[0].keep_conn is True and conn.keep_conn
    conn.end_request(1)
    conn.receive_data(simple_request(2, keep_conn=False))
    assert drain(conn)[0].keep_conn is False
    assert not conn.keep_conn


def test_bytewise_equals_whole_for_a_composite_stream():
    data = (simple_request(1) + record(p.GET_VALUES, 0, encode_params({p.MAX_REQS: b""}))
            + record(99, 0, b"x", padding=3) + begin(2, role=p.FILTER) + simple_request(3)
            + record(p.ABORT_REQUEST, 3))
    whole = run(data)
    assert whole[1] is None
    assert bytewise(data) == whole
    assert len(whole[0]) == 9


def test_split_at_every_offset():
    data = simple_request(7) + simple_request(8, body=b"z" * 100)
    expected = run(data)
    for offset in range(1, len(data)):
        events, error, answers = run(data, [offset])
        assert (merged(events), error, answers) == (merged(expected[0]), None, b""), offset


def test_params_split_anywhere_even_inside_length_fields():
    params = {b"A" * 200: b"B" * 300, b"SHORT": b"v", b"EMPTY": b"", b"": b"empty name"}
    stream = encode_params(params)
    for cut in range(1, len(stream)):
        data = (begin(1) + record(p.PARAMS, 1, stream[:cut]) + record(p.PARAMS, 1, stream[cut:])
                + record(p.PARAMS, 1) + record(p.STDIN, 1))
        events, error, _ = run(data)
        assert error is None and events[1] == Params(1, params), cut
    # one record per byte of the stream
    data = begin(1) + params_records(1, params, chunk=1) + record(p.STDIN, 1)
    assert run(data)[0][1] == Params(1, params)


def test_four_byte_lengths_for_short_values_are_accepted():
    # libfcgi's cgi-fcgi alternates 1- and 4-byte lengths even for short names.
    stream = struct.pack("!IB", 0x80000004, 0x01) + b"NAMEv" + struct.pack("!BI", 1, 0x80000002) + b"Nvv"
    assert decode_params(stream) == [(b"NAME", b"v"), (b"N", b"vv")]


def test_padding_is_skipped():
    for padding in (0, 1, 7, 8, 255):
        data = (begin(1) + record(p.PARAMS, 1, encode_params({b"K": b"V"}), padding)
                + record(p.PARAMS, 1, b"", padding) + record(p.STDIN, 1, b"abc", padding)
                + record(p.STDIN, 1, b"", padding))
        events, error, _ = run(data)
        assert error is None
        assert events[1:] == [Params(1, {b"K": b"V"}), Stdin(1, b"abc"), StdinEnd(1)]


def test_stdin_streams_chunk_by_chunk():
    body = os.urandom(100_000)
    events, error, _ = run(begin(1) + params_records(1, {}) + stream_records(p.STDIN, 1, body, 30_000))
    assert error is None
    assert [len(e.data) for e in events if isinstance(e, Stdin)] == [30_000, 30_000, 30_000, 10_000]
    assert b"".join(e.data for e in events if isinstance(e, Stdin)) == body
    assert events[-1] == StdinEnd(1)


def test_small_reads_of_a_large_body_keep_the_buffer_bounded():
    body = os.urandom(300_000)
    data = begin(1) + params_records(1, {}) + stream_records(p.STDIN, 1, body, 65535)
    events, error, _ = run(data, [1000] * (len(data) // 1000 + 1))
    assert error is None
    assert b"".join(e.data for e in events if isinstance(e, Stdin)) == body


def test_multiplexed_interleaved_requests():
    bodies = {1: b"a" * 5000, 2: b"", 3: os.urandom(9000)}
    per_request = [parse_records(request_bytes(rid, {b"ID": str(rid).encode()}, body,
                                               keep_conn=True, stdin_chunk=1000))[0]
                   for rid, body in bodies.items()]
    interleaved = []
    while any(per_request):
        for records in per_request:
            if records:
                interleaved.append(encode_record(*records.pop(0)))
    events, error, _ = run(b"".join(interleaved))
    assert error is None
    for rid, body in bodies.items():
        mine = [e for e in events if e.request_id == rid]
        assert mine[0] == BeginRequest(rid, p.RESPONDER, True)
        assert mine[1] == Params(rid, {b"ID": str(rid).encode()})
        assert b"".join(e.data for e in mine if isinstance(e, Stdin)) == body
        assert mine[-1] == StdinEnd(rid)
    # really interleaved: request 1's body is still arriving after request 3 began
    order = [(type(e), e.request_id) for e in events]
    assert order.index((BeginRequest, 3)) < order.index((StdinEnd, 1))


# -- refusals and management answers --------------------------------------------------------------

def end_request_record(rid: int, protocol_status: int, app_status: int = 0) -> bytes:
    return encode_record(p.END_REQUEST, rid, struct.pack("!IB3x", app_status, protocol_status))


@pytest.mark.parametrize("role", [p.AUTHORIZER, p.FILTER, 0, 77])
def test_unknown_roles_are_refused_and_their_records_ignored(role):
    data = begin(5, role=role) + params_records(5, {b"A": b"B"}) + stream_records(p.STDIN, 5, b"x")
    conn = FastCGIConnection()
    conn.receive_data(data)
    assert drain(conn) == []
    assert conn.data_to_send() == end_request_record(5, p.UNKNOWN_ROLE)
    assert conn.data_to_send() == b""
    assert not conn.is_active(5)
    # the id can begin again
    conn.receive_data(simple_request(5))
    assert drain(conn)[0] == BeginRequest(5, p.RESPONDER, True)


def test_refused_request_without_keep_conn_clears_keep_conn():
    conn = FastCGIConnection()
    conn.receive_data(begin(1, role=p.FILTER, keep_conn=False))
    drain(conn)
    assert not conn.keep_conn and conn.requests_in_flight == 0


def test_no_multiplexing_refuses_a_second_request():
    conn = FastCGIConnection(multiplex=False)
    conn.receive_data(simple_request(1) + simple_request(2))
    events = drain(conn)
    assert {e.request_id for e in events} == {1}
    assert conn.data_to_send() == end_request_record(2, p.CANT_MPX_CONN)
    conn.end_request(1)
    conn.receive_data(simple_request(2))
    assert drain(conn)[0] == BeginRequest(2, p.RESPONDER, True)


def test_overloaded_past_max_requests_in_flight():
    conn = FastCGIConnection(max_requests_in_flight=2)
    conn.receive_data(begin(1) + begin(2) + begin(3))
    assert [e.request_id for e in drain(conn)] == [1, 2]
    assert conn.data_to_send() == end_request_record(3, p.OVERLOADED)
    assert conn.requests_in_flight == 2


@pytest.mark.parametrize("multiplex", [True, False])
def test_get_values_answers_known_variables_only(multiplex):
    asked = encode_params([(p.MAX_CONNS, b""), (b"FCGI_UNKNOWN_THING", b""), (p.MAX_REQS, b""),
                           (p.MPXS_CONNS, b"")])
    events, error, answers = run(record(p.GET_VALUES, 0, asked), max_conns=7, max_reqs=50,
                                 multiplex=multiplex)
    assert events == [] and error is None
    (rtype, rid, content), = parse_records(answers)[0]
    assert (rtype, rid) == (p.GET_VALUES_RESULT, 0)
    assert decode_params(content) == [(p.MAX_CONNS, b"7"), (p.MAX_REQS, b"50"),
                                      (p.MPXS_CONNS, b"1" if multiplex else b"0")]
    assert len(answers) % 8 == 0


def test_get_values_with_nothing_known_gets_an_empty_result():
    events, error, answers = run(record(p.GET_VALUES, 0, encode_params({b"X": b""})))
    assert parse_records(answers)[0] == [(p.GET_VALUES_RESULT, 0, b"")]


@pytest.mark.parametrize("rid", [0, 3])
@pytest.mark.parametrize("rtype", [0, 12, 200, 255])
def test_unknown_record_types_are_answered(rtype, rid):
    data = (begin(3) if rid else b"") + record(rtype, rid, b"whatever", padding=5)
    events, error, answers = run(data)
    assert error is None
    assert answers == encode_record(p.UNKNOWN_TYPE, 0, bytes([rtype]) + bytes(7))


def test_management_types_sent_back_on_the_null_id_are_unknown():
    # GET_VALUES_RESULT and UNKNOWN_TYPE are the application's to send: it does not understand them.
    _, error, answers = run(record(p.GET_VALUES_RESULT, 0) + record(p.UNKNOWN_TYPE, 0, bytes(8)))
    assert error is None
    assert [c[0] for _, _, c in parse_records(answers)[0]] == [p.GET_VALUES_RESULT, p.UNKNOWN_TYPE]


def test_need_data_is_a_named_sentinel():
    assert FastCGIConnection().next_event() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


def test_data_to_send_is_cleared():
    conn = FastCGIConnection()
    assert conn.data_to_send() == b""
    conn.receive_data(record(99, 0) + record(98, 0))
    drain(conn)
    assert len(conn.data_to_send()) == 32
    assert conn.data_to_send() == b""


# -- inactive ids, abort, end of stream -----------------------------------------------------------

def test_records_for_inactive_ids_are_ignored():
    # never begun
    data = record(p.PARAMS, 9, b"\x01\x01ab") + record(p.STDIN, 9, b"x") + record(p.ABORT_REQUEST, 9)
    assert run(data) == ([], None, b"")
    # ended early (an app answered before the body arrived): trailing STDIN is dropped
    conn = FastCGIConnection()
    conn.receive_data(begin(1) + params_records(1, {}) + record(p.STDIN, 1, b"part"))
    assert drain(conn)[-1] == Stdin(1, b"part")
    conn.end_request(1, 0)
    conn.receive_data(record(p.STDIN, 1, b"rest") + record(p.STDIN, 1) + record(p.DATA, 1, b"d"))
    assert drain(conn) == []


def test_abort_request():
    conn = FastCGIConnection()
    conn.receive_data(begin(1) + params_records(1, {}) + record(p.STDIN, 1, b"a")
                      + record(p.ABORT_REQUEST, 1) + record(p.STDIN, 1, b"b") + record(p.STDIN, 1)
                      + record(p.ABORT_REQUEST, 1))
    events = drain(conn)
    assert events[-2:] == [Stdin(1, b"a"), AbortRequest(1)]
    assert conn.is_active(1)
    # still active: its id cannot be reused until the application ends it
    out = conn.end_request(1, 0, p.REQUEST_COMPLETE)
    assert parse_records(out)[0][-1] == (p.END_REQUEST, 1, struct.pack("!IB3x", 0, 0))
    assert not conn.is_active(1)


def test_abort_during_params_drops_the_rest():
    conn = FastCGIConnection()
    conn.receive_data(begin(1) + record(p.PARAMS, 1, b"\x01\x01a") + record(p.ABORT_REQUEST, 1)
                      + record(p.PARAMS, 1, b"b") + record(p.PARAMS, 1) + record(p.STDIN, 1))
    assert drain(conn) == [BeginRequest(1, p.RESPONDER, True), AbortRequest(1)]


def test_eof_gives_connection_closed():
    conn = FastCGIConnection()
    conn.receive_data(simple_request(1))
    conn.receive_data(b"")
    events = drain(conn)
    assert events[-1] == ConnectionClosed() and len(events) == 5
    assert conn.next_event() == ConnectionClosed()
    conn.receive_data(b"")  # a repeated close is harmless
    with pytest.raises(ProtocolError, match="after the end"):
        conn.receive_data(b"more")
    with pytest.raises(ProtocolError):
        conn.next_event()


@pytest.mark.parametrize("cut", [1, 7, 8, 12, 8 + 16 + 3])
def test_eof_mid_record_is_just_connection_closed(cut):
    data = begin(1)[:cut] if cut < 16 else begin(1) + record(p.PARAMS, 1, b"\x01\x01ab", 4)[:cut - 16]
    events, error, _ = run(data, eof=True)
    assert error is None and events[-1] == ConnectionClosed()


def test_end_request_of_a_still_active_request_after_eof():
    conn = FastCGIConnection()
    conn.receive_data(begin(1))
    conn.receive_data(b"")
    drain(conn)
    assert conn.is_active(1)
    assert conn.end_request(1)


# -- the malformed-record corpus ------------------------------------------------------------------

MALFORMED = {
    "bad version": b"\x02" + begin(1)[1:],
    "version 0": b"\x00" + begin(1)[1:],
    "STDIN on id 0": record(p.STDIN, 0, b"x"),
    "PARAMS on id 0": record(p.PARAMS, 0, b""),
    "BEGIN on id 0": begin(0),
    "ABORT on id 0": record(p.ABORT_REQUEST, 0),
    "DATA on id 0": record(p.DATA, 0),
    "END_REQUEST on id 0": record(p.END_REQUEST, 0, bytes(8)),
    "reused id": begin(1) + begin(1),
    "reused id after params": simple_request(1) + begin(1),
    "BEGIN body too short": record(p.BEGIN_REQUEST, 1, b"\x00\x01\x01"),
    "BEGIN body too long": record(p.BEGIN_REQUEST, 1, bytes(9)),
    "params garbage": begin(1) + record(p.PARAMS, 1, b"\x05\x05abc") + record(p.PARAMS, 1),
    "params truncated length": begin(1) + record(p.PARAMS, 1, b"\x85\x00") + record(p.PARAMS, 1),
    "params missing value length": begin(1) + record(p.PARAMS, 1, b"\x01") + record(p.PARAMS, 1),
    "params one byte short": begin(1) + record(p.PARAMS, 1, b"\x01\x02ab") + record(p.PARAMS, 1),
    "params length past end": begin(1) + record(p.PARAMS, 1, b"\xff\xff\xff\xff\x00a")
    + record(p.PARAMS, 1),
    "oversize params": begin(1) + record(p.PARAMS, 1, encode_params({b"K": b"v" * 2000})),
    "oversize params in small records": begin(1) + params_records(1, {b"K": b"v" * 2000}, 100),
    "STDIN before PARAMS end": begin(1) + record(p.PARAMS, 1, b"\x01\x01ab") + record(p.STDIN, 1, b"x"),
    "empty STDIN before PARAMS": begin(1) + record(p.STDIN, 1),
    "PARAMS after PARAMS end": begin(1) + params_records(1, {}) + record(p.PARAMS, 1, b"\x01\x01ab"),
    "STDIN after STDIN end": simple_request(1) + record(p.STDIN, 1, b"late"),
    "STDOUT from the web server": begin(1) + record(p.STDOUT, 1, b"x"),
    "STDERR from the web server": record(p.STDERR, 4, b"x"),
    "END_REQUEST from the web server": begin(1) + record(p.END_REQUEST, 1, bytes(8)),
    "GET_VALUES on a request id": record(p.GET_VALUES, 1, b""),
    "GET_VALUES garbage": record(p.GET_VALUES, 0, b"\x09\x00FCGI"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_input_raises_protocol_error(name):
    data = MALFORMED[name]
    whole = run(data, max_params_size=1024)
    assert whole[1] is not None, f"{name}: accepted"
    # the same error at the same point, however the bytes arrive
    assert bytewise(data, max_params_size=1024) == whole
    conn = FastCGIConnection(max_params_size=1024)
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as first:
        drain(conn)
    # the connection stays dead
    for call in (conn.next_event, lambda: conn.receive_data(b"x"), lambda: conn.receive_data(b"")):
        with pytest.raises(ProtocolError) as again:
            call()
        assert str(again.value) == str(first.value)


def test_params_exactly_at_the_limit_are_accepted():
    stream = encode_params({b"K": b"v" * 1000})
    data = begin(1) + params_records(1, {b"K": b"v" * 1000}, chunk=7) + record(p.STDIN, 1)
    assert run(data, max_params_size=len(stream))[1] is None
    assert "exceeds" in run(data, max_params_size=len(stream) - 1)[1]


def test_error_messages_say_why():
    assert "version 2" in run(MALFORMED["bad version"])[1]
    assert "request 1" in run(MALFORMED["reused id"])[1] and "active" in run(MALFORMED["reused id"])[1]
    assert "1024" in run(MALFORMED["oversize params"], max_params_size=1024)[1]
    assert "before the PARAMS stream ended" in run(MALFORMED["STDIN before PARAMS end"])[1]


def test_events_before_a_broken_record_are_delivered():
    events, error, _ = run(simple_request(1) + b"\x07" + bytes(7))
    assert error and events[-1] == StdinEnd(1)


# -- output framing -------------------------------------------------------------------------------

def decode_output(data: bytes) -> list[tuple[int, int, bytes]]:
    records, used = parse_records(data)
    assert used == len(data)
    pos = 0
    while pos < len(data):  # every record starts 8-byte aligned
        _, _, _, clen, plen = p.RECORD_HEADER.unpack_from(data, pos)
        assert (clen + plen) % 8 == 0 and clen <= 65535 and plen < 8
        pos += 8 + clen + plen
    return records


def active_connection(*rids: int) -> FastCGIConnection:
    conn = FastCGIConnection()
    for rid in rids:
        conn.receive_data(begin(rid))
    drain(conn)
    return conn


@pytest.mark.parametrize("size", [1, 7, 8, 65527, 65528, 65529, 65535, 65536, 131056, 200_000])
def test_stdout_framing(size):
    conn = active_connection(3)
    data = os.urandom(size)
    out = conn.stdout(3, data)
    records = decode_output(out)
    assert all(rtype == p.STDOUT and rid == 3 and content for rtype, rid, content in records)
    assert b"".join(content for _, _, content in records) == data
    assert len(records) == -(-size // 65528)


def test_stdout_accepts_bytes_like():
    conn = active_connection(1)
    assert decode_output(conn.stdout(1, bytearray(b"abc")))[0][2] == b"abc"
    assert decode_output(conn.stdout(1, memoryview(b"x" * 70000)))[1][2] == b"x" * (70000 - 65528)


def test_end_request_closes_stdout_once_and_forgets():
    conn = active_connection(1, 2)
    assert conn.stdout(1, b"") == b""
    out = conn.stdout(1, b"Status: 200 OK\r\n\r\nhi") + conn.end_request(1, app_status=3)
    assert [(t, c) for t, _, c in decode_output(out)] == [
        (p.STDOUT, b"Status: 200 OK\r\n\r\nhi"), (p.STDOUT, b""),
        (p.END_REQUEST, struct.pack("!IB3x", 3, p.REQUEST_COMPLETE))]
    assert not conn.is_active(1)
    out = conn.stdout_end(2) + conn.end_request(2, app_status=-1, protocol_status=p.OVERLOADED)
    assert [(t, c) for t, _, c in decode_output(out)] == [
        (p.STDOUT, b""), (p.END_REQUEST, struct.pack("!IB3x", 0xFFFFFFFF, p.OVERLOADED))]


def test_stderr_is_framed_and_closed_at_end_request():
    conn = active_connection(4)
    out = conn.stderr(4, b"e" * 70000) + conn.stdout(4, b"o") + conn.end_request(4)
    kinds = [(t, len(c)) for t, _, c in decode_output(out)]
    assert kinds == [(p.STDERR, 65528), (p.STDERR, 70000 - 65528), (p.STDOUT, 1), (p.STDERR, 0),
                     (p.STDOUT, 0), (p.END_REQUEST, 8)]
    assert active_connection(5).stderr(5, b"") == b""


def test_output_for_inactive_requests_is_a_caller_error():
    conn = active_connection(1)
    conn.end_request(1)
    for call in (lambda: conn.stdout(1, b"x"), lambda: conn.stdout_end(1),
                 lambda: conn.stderr(1, b"x"), lambda: conn.end_request(1)):
        with pytest.raises(ValueError):
            call()
    conn = active_connection(2)
    conn.stdout_end(2)
    for call in (lambda: conn.stdout(2, b"late"), lambda: conn.stdout_end(2)):
        with pytest.raises(ValueError):
            call()


def test_encode_record_limits_and_padding():
    assert len(encode_record(p.STDOUT, 1, b"x" * 65535)) == 8 + 65535 + 1
    with pytest.raises(ValueError):
        encode_record(p.STDOUT, 1, b"x" * 65536)
    assert encode_record(p.STDIN, 1) == bytes([1, 5, 0, 1, 0, 0, 0, 0])


# -- hypothesis -----------------------------------------------------------------------------------

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names_values = st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=8)


@FAST
@given(names_values)
def test_params_round_trip(pairs):
    assert decode_params(encode_params(pairs)) == pairs
    assert decode_params(bytearray(encode_params(pairs))) == pairs
    # As text (the pool's WSGI environ): the same pairs, each byte one latin-1 character.
    assert decode_params(encode_params(pairs), text=True) == [
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]


@FAST
@given(names_values.filter(bool))
def test_truncated_params_are_rejected_unless_cut_between_pairs(pairs):
    encoded = [encode_params([pair]) for pair in pairs]
    boundaries = {sum(map(len, encoded[:i])): i for i in range(len(pairs) + 1)}
    stream = b"".join(encoded)
    for cut in range(len(stream)):
        if cut in boundaries:
            assert decode_params(stream[:cut]) == pairs[:boundaries[cut]]
        else:
            with pytest.raises(ProtocolError):
                decode_params(stream[:cut])


@st.composite
def valid_streams(draw):
    """A valid web-server byte stream: a few requests, interleaved, arbitrary record cuts and
    padding, management records between them; with the expected params and bodies."""
    rids = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True))
    expected = {}
    queues = []
    for rid in rids:
        params = dict(draw(names_values))
        body = draw(st.binary(max_size=2000))
        pchunk = draw(st.integers(1, 400))
        schunk = draw(st.integers(1, 900))
        stream = encode_params(params)
        records = [(p.BEGIN_REQUEST, rid, struct.pack("!HB5x", p.RESPONDER, 1))]
        records += [(p.PARAMS, rid, stream[i:i + pchunk]) for i in range(0, len(stream), pchunk)]
        records += [(p.PARAMS, rid, b"")]
        records += [(p.STDIN, rid, body[i:i + schunk]) for i in range(0, len(body), schunk)]
        records += [(p.STDIN, rid, b"")]
        queues.append(records)
        expected[rid] = (params, body)
    rnd = draw(st.randoms(use_true_random=False))
    out = []
    while any(queues):
        queue = rnd.choice([q for q in queues if q])
        rtype, rid, content = queue.pop(0)
        out.append(record(rtype, rid, content, rnd.randrange(0, 20)))
        if rnd.random() < 0.1:
            out.append(record(p.GET_VALUES, 0, encode_params({p.MAX_CONNS: b""})))
    return b"".join(out), expected


def check_events(events, expected):
    for rid, (params, body) in expected.items():
        mine = [e for e in events if e.request_id == rid]
        assert mine[0] == BeginRequest(rid, p.RESPONDER, True)
        assert mine[1] == Params(rid, params)
        assert b"".join(e.data for e in mine[2:-1]) == body
        assert mine[-1] == StdinEnd(rid)


@FAST
@given(valid_streams(), st.lists(st.integers(1, 300), max_size=60))
def test_valid_streams_parse_the_same_however_split(stream, cuts):
    data, expected = stream
    whole = run(data)
    assert whole[1] is None
    check_events(whole[0], expected)
    split = run(data, cuts)
    assert (merged(split[0]), split[1], split[2]) == (merged(whole[0]), None, whole[2])


def assert_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    conn = FastCGIConnection(max_params_size=4096, max_requests_in_flight=4)
    try:
        for piece in _cut(data, cuts) + [b""]:
            conn.receive_data(piece)
            # every event consumes a record of at least 8 bytes, so this bounds a live loop
            for _ in range(len(data) // 8 + 2):
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
            else:
                raise AssertionError("next_event kept returning events")
            conn.data_to_send()
    except ProtocolError:
        pass


@FAST
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20))
def test_fuzz_random_bytes(data, cuts):
    assert_only_protocol_errors(data, cuts)


@FAST
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=20))
def test_fuzz_random_bytes_behind_a_valid_header(data, cuts):
    # random content behind plausible headers reaches the record handlers, not just the version check
    rnd = random.Random(data)
    out = []
    while data:
        n = rnd.randrange(0, 40)
        out.append(record(rnd.randrange(0, 13), rnd.choice([0, 1, 2]), data[:n], rnd.randrange(0, 9)))
        data = data[n:]
    assert_only_protocol_errors(b"".join(out), cuts)


@FAST
@given(valid_streams(), st.lists(st.tuples(st.sampled_from("flip insert delete truncate"),
                                           st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
                                 min_size=1, max_size=4),
       st.lists(st.integers(1, 200), max_size=20))
def test_fuzz_mutated_valid_streams(stream, mutations, cuts):
    data = bytearray(stream[0])
    for kind, where, junk in mutations:
        if not data:
            break
        at = where % len(data)
        if kind == "flip":
            data[at] ^= junk[0] or 0xFF
        elif kind == "insert":
            data[at:at] = junk
        elif kind == "delete":
            del data[at:at + len(junk)]
        else:
            del data[at:]
    assert_only_protocol_errors(bytes(data), cuts)


# -- a real peer: libfcgi's cgi-fcgi, and the test client, against a codec-driven server ----------

def serve(listener: socket.socket, connections: int = 1) -> None:
    """A blocking FastCGI responder built on the codec: echoes what it received as text/plain."""
    for _ in range(connections):
        sock, _ = listener.accept()
        sock.settimeout(20)
        with sock:
            conn = FastCGIConnection()
            params: dict[int, dict[bytes, bytes]] = {}
            bodies: dict[int, bytearray] = {}
            while True:
                data = sock.recv(65536)
                conn.receive_data(data)
                out = []
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, ConnectionClosed):
                        break
                    rid = event.request_id
                    if isinstance(event, Params):
                        params[rid], bodies[rid] = event.params, bytearray()
                    elif isinstance(event, Stdin):
                        bodies[rid] += event.data
                    elif isinstance(event, StdinEnd):
                        env, body = params.pop(rid), bodies.pop(rid)
                        text = (b"method=%s\nscript=%s\nlength=%d\nsha256=%s\n" % (
                            env.get(b"REQUEST_METHOD", b"-"), env.get(b"SCRIPT_FILENAME", b"-"),
                            len(body), hashlib.sha256(body).hexdigest().encode()))
                        out.append(conn.stderr(rid, b"served " + env.get(b"SCRIPT_FILENAME", b"-")))
                        out.append(conn.stdout(rid, b"Status: 201 Created\r\n"
                                               b"Content-Type: text/plain\r\n\r\n" + text))
                        out.append(conn.end_request(rid, 0))
                    elif isinstance(event, AbortRequest):
                        out.append(conn.end_request(rid, 1))
                reply = conn.data_to_send() + b"".join(out)
                if reply:
                    sock.sendall(reply)
                if not data or (not conn.keep_conn and conn.requests_in_flight == 0 and out):
                    break


@pytest.fixture
def server():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(20)
    started = []

    def start(connections: int = 1) -> tuple[str, int]:
        thread = threading.Thread(target=serve, args=(listener, connections), daemon=True)
        thread.start()
        started.append(thread)
        return listener.getsockname()

    yield start
    for thread in started:
        thread.join(20)
        assert not thread.is_alive(), "the test server did not finish"
    listener.close()


@pytest.mark.skipif(shutil.which("cgi-fcgi") is None,
                    reason="cgi-fcgi not installed (Debian package libfcgi-bin)")
def test_cgi_fcgi_against_the_codec(server):
    host, port = server()
    body = os.urandom(200_000)
    env = {"REQUEST_METHOD": "POST", "SCRIPT_FILENAME": "/srv/app.py", "CONTENT_LENGTH": str(len(body)),
           "QUERY_STRING": "a=1", "SERVER_PROTOCOL": "HTTP/1.1", "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"{host}:{port}"], input=body, env=env,
                            capture_output=True, timeout=20)
    assert result.returncode == 0, result
    assert result.stdout == (b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n"
                             b"method=POST\nscript=/srv/app.py\nlength=200000\nsha256=%s\n"
                             % hashlib.sha256(body).hexdigest().encode())
    assert result.stderr == b"served /srv/app.py"


def test_client_multiplexes_against_the_codec(server):
    address = server()
    bodies = {1: b"", 2: os.urandom(70_000), 300: b"abc"}
    with FastCGIClient(address) as client:
        assert client.get_values([p.MAX_REQS, p.MPXS_CONNS]) == {p.MAX_REQS: b"1000",
                                                                  p.MPXS_CONNS: b"1"}
        requests = {rid: ({"REQUEST_METHOD": "PUT", "SCRIPT_FILENAME": f"/s{rid}"}, body)
                    for rid, body in bodies.items()}
        responses = client.multiplexed(requests)
        for rid, body in bodies.items():
            status, headers, text = responses[rid].cgi()
            assert status == "201 Created" and headers["content-type"] == "text/plain"
            assert b"sha256=%s" % hashlib.sha256(body).hexdigest().encode() in text
            assert responses[rid].stderr == b"served /s%d" % rid
            assert (responses[rid].app_status, responses[rid].protocol_status) == (0, 0)
            assert responses[rid].stdout_closed
        single = client.request({"REQUEST_METHOD": "GET"}, request_id=1, keep_conn=False)
        assert single.cgi()[0] == "201 Created"
        assert client.read_until(lambda ex: False).closed  # no keep-conn: the server closes


def test_client_sees_refusals_and_aborts(server):
    address = server()
    with FastCGIClient(address) as client:
        client.send(begin_request(4, keep_conn=True, role=p.AUTHORIZER))
        client.send(begin_request(5, keep_conn=True) + params_records(5, {"A": "B"}))
        client.abort(5)
        ex = client.read_until(lambda ex: all(i in ex.responses and ex.responses[i].complete
                                              for i in (4, 5)))
        assert ex.responses[4].protocol_status == p.UNKNOWN_ROLE
        assert (ex.responses[5].app_status, ex.responses[5].protocol_status) == (1, 0)


# -- PARAMS held per connection (many multiplexed requests each under the per-request limit) ----

def _begin(rid: int) -> bytes:
    return p.encode_record(p.BEGIN_REQUEST, rid, bytes([0, p.RESPONDER, p.KEEP_CONN, 0, 0, 0, 0, 0]))


def _params(rid: int, size: int) -> bytes:
    return p.encode_record(p.PARAMS, rid, p.encode_params([(b"HTTP_X", b"v" * size)]))


def test_params_of_the_requests_in_flight_are_bounded_per_connection():
    conn = p.FastCGIConnection(max_params_size=64 * 1024, max_params_total=200 * 1024)
    wire = b"".join(_begin(rid) + _params(rid, 60_000) + p.encode_record(p.PARAMS, rid)
                    for rid in range(1, 4))  # three of 60 KB: 180 KB held, under 200 KB
    conn.receive_data(wire)
    events = []
    while (ev := conn.next_event()) is not p.NEED_DATA:
        events.append(ev)
    assert [type(e).__name__ for e in events] == ["BeginRequest", "Params"] * 3
    conn.receive_data(_begin(4) + _params(4, 60_000))  # a fourth would hold 240 KB
    with pytest.raises(p.ProtocolError, match="in flight exceed 204800 bytes"):
        while conn.next_event() is not p.NEED_DATA:
            pass


def test_params_held_are_released_at_the_end_of_each_request():
    conn = p.FastCGIConnection(max_params_size=64 * 1024, max_params_total=100 * 1024)
    for rid in range(1, 30):  # one at a time, 60 KB each: never more than one held
        conn.receive_data(_begin(rid) + _params(rid, 60_000) + p.encode_record(p.PARAMS, rid)
                          + p.encode_record(p.STDIN, rid))
        seen = []
        while (ev := conn.next_event()) is not p.NEED_DATA:
            seen.append(type(ev).__name__)
        assert seen == ["BeginRequest", "Params", "StdinEnd"]
        conn.end_request(rid)

"""The sans-IO HTTP/1.1 core, without sockets: a corpus of malformed requests with the status each
must get, the valid exchanges (keep-alive, pipelining, chunked bodies, HTTP/1.0, HEAD,
100-continue), response framing, and hypothesis fuzzing (only ProtocolError escapes; the events
do not depend on how the bytes were split into reads)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyd.protocols.h1 import (
    CLOSED,
    END,
    NEED_DATA,
    PAUSED,
    Data,
    H1Connection,
    Limits,
    ProtocolError,
    Request,
)

LIMITS = Limits(max_request_line=256, max_header_size=1024, max_headers=20, max_body_size=100)
H = b"Host: example.com\r\n"
GOOD = b"GET /first HTTP/1.1\r\n" + H + b"\r\n"


def conn(limits: Limits = LIMITS, **kw) -> H1Connection:
    return H1Connection(limits, **kw)


def drive(c: H1Connection, chunks, eof: bool = True) -> list:
    """Feed `chunks`, answering each request with a small 200 once its body is read. The events
    seen, normalized: consecutive Data joined, a ProtocolError as ("ERR", status) at the end."""
    out: list = []

    def add(item):
        if item[0] == "DATA" and out and out[-1][0] == "DATA":
            out[-1] = ("DATA", out[-1][1] + item[1])
        else:
            out.append(item)

    feeds = [*chunks, b""] if eof else list(chunks)
    for chunk in feeds:
        c.receive_data(chunk)
        while True:
            try:
                ev = c.next_event()
            except ProtocolError as e:
                add(("ERR", e.status))
                return out
            if ev is NEED_DATA:
                break
            if ev is CLOSED:
                add(("CLOSED",))
                return out
            if ev is PAUSED:
                c.respond("200 OK", [("Content-Type", "text/plain")], b"ok")
                add(("SENT", c.keep_alive))
                if not c.keep_alive:
                    return out
                continue
            if type(ev) is Request:
                add(("REQ", ev.method, ev.target, ev.version, tuple(ev.headers), ev.keep_alive,
                     ev.content_length, ev.chunked, ev.expect_continue, ev.host))
            elif type(ev) is Data:
                add(("DATA", ev.data))
            elif ev is END:
                add(("END",))
            else:
                raise AssertionError(f"unexpected event {ev!r}")
    return out


def status_of(data: bytes, split: int | None = None, limits: Limits = LIMITS) -> int | None:
    chunks = [data] if split is None else [data[i:i + split] for i in range(0, len(data), split)]
    events = drive(conn(limits), chunks)
    errors = [e for e in events if e[0] == "ERR"]
    return errors[0][1] if errors else None


def parse_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers.setdefault(name.lower(), []).append(value)
    return int(lines[0].split()[1]), headers, body


def post(body_headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST / HTTP/" + version + b"\r\n" + H + body_headers + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked\r\n"

# -- the malformed corpus: (id, request, status) ---------------------------------------------------

MALFORMED = [
    # 414, 431, 413: limits
    ("target-too-long", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("query-too-long", b"GET /?" + b"q" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("absolute-too-long", b"GET http://x/" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("header-too-large", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 1100 + b"\r\n\r\n", 431),
    ("headers-too-large-sum", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(12)) + b"\r\n", 431),
    ("too-many-headers", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-%d: a\r\n" % i for i in range(21)) + b"\r\n", 431),
    ("header-name-too-large", b"GET / HTTP/1.1\r\n" + H + b"X" * 1100 + b": a\r\n\r\n", 431),
    ("trailers-too-large", post(CHUNKED, b"0\r\nT: " + b"t" * 1100 + b"\r\n\r\n"), 431),
    ("body-over-limit", post(b"Content-Length: 101\r\n", b"a" * 101), 413),
    ("body-way-over-limit", post(b"Content-Length: 99999999\r\n"), 413),
    ("chunked-over-limit", post(CHUNKED, b"65\r\n" + b"a" * 101 + b"\r\n0\r\n\r\n"), 413),
    ("chunked-over-limit-in-pieces", post(CHUNKED, b"32\r\n" + b"a" * 50 + b"\r\n33\r\n"
                                          + b"a" * 51 + b"\r\n0\r\n\r\n"), 413),
    # 400: line endings and folding
    ("bare-cr-request-line", b"GET / HTTP/1.1\r" + H + b"\r\n", 400),
    ("bare-lf-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", 400),
    ("bare-lf-after-header", b"GET / HTTP/1.1\r\n" + H + b"X: a\n\r\n", 400),
    ("bare-cr-end-of-head", b"GET / HTTP/1.1\r\n" + H + b"\r\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n folded\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n\tfolded\r\n\r\n", 400),
    ("whitespace-line", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n \r\n\r\n", 400),
    # 400: framing (smuggling)
    ("cl-and-te", post(b"Content-Length: 3\r\n" + CHUNKED, b"0\r\n\r\n"), 400),
    ("te-and-cl", post(CHUNKED + b"Content-Length: 3\r\n", b"0\r\n\r\n"), 400),
    ("duplicate-cl-same", post(b"Content-Length: 1\r\nContent-Length: 1\r\n", b"a"), 400),
    ("duplicate-cl-different", post(b"Content-Length: 1\r\ncontent-length: 2\r\n", b"ab"), 400),
    ("cl-list", post(b"Content-Length: 1, 1\r\n", b"a"), 400),
    ("cl-negative", post(b"Content-Length: -1\r\n"), 400),
    ("cl-plus", post(b"Content-Length: +1\r\n", b"a"), 400),
    ("cl-hex", post(b"Content-Length: 0x1\r\n", b"a"), 400),
    ("cl-space-inside", post(b"Content-Length: 1 1\r\n", b"a"), 400),
    ("cl-empty", post(b"Content-Length: \r\n"), 400),
    ("cl-overflow", post(b"Content-Length: 99999999999999999999999\r\n"), 400),
    ("cl-name-space", post(b"Content-Length : 1\r\n", b"a"), 400),
    ("chunk-size-invalid", post(CHUNKED, b"zz\r\n"), 400),
    ("chunk-size-negative", post(CHUNKED, b"-1\r\na\r\n"), 400),
    ("chunk-size-overflow", post(CHUNKED, b"fffffffffffffffffffff\r\n"), 400),
    ("chunk-size-space", post(CHUNKED, b"1 \r\na\r\n0\r\n\r\n"), 400),
    ("chunk-size-bare-lf", post(CHUNKED, b"1\na\r\n0\r\n\r\n"), 400),
    ("chunk-data-too-long", post(CHUNKED, b"3\r\nabcX\r\n0\r\n\r\n"), 400),
    ("chunk-data-bare-lf", post(CHUNKED, b"1\r\na\n0\r\n\r\n"), 400),
    ("chunk-ext-bad-quote", post(CHUNKED, b"1;a=\"\r\na\r\n0\r\n\r\n"), 400),
    ("te-chunked-twice", post(CHUNKED + CHUNKED, b"0\r\n\r\n"), 400),
    ("te-chunked-chunked", post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400),
    ("te-chunked-not-last", post(b"Transfer-Encoding: chunked, gzip\r\n"), 400),
    ("te-empty", post(b"Transfer-Encoding: \r\n"), 400),
    ("te-in-http10", post(CHUNKED, b"0\r\n\r\n", version=b"1.0"), 400),
    # 400: header names and values
    ("header-name-space", b"GET / HTTP/1.1\r\n" + H + b"X Y: a\r\n\r\n", 400),
    ("header-name-space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X : a\r\n\r\n", 400),
    ("header-name-empty", b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400),
    ("header-no-colon", b"GET / HTTP/1.1\r\n" + H + b"X\r\n\r\n", 400),
    ("header-name-8bit", b"GET / HTTP/1.1\r\n" + H + b"X-\xff: a\r\n\r\n", 400),
    ("header-name-quote", b"GET / HTTP/1.1\r\n" + H + b"X\"y: a\r\n\r\n", 400),
    ("header-name-nul", b"GET / HTTP/1.1\r\n" + H + b"X\x00: a\r\n\r\n", 400),
    ("header-value-nul", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("header-value-ctl", b"GET / HTTP/1.1\r\n" + H + b"X: \x01\r\n\r\n", 400),
    ("header-value-del", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    # 400: Host
    ("host-missing-11", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("host-duplicate-11", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host-duplicate-10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("host-invalid", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host-invalid-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host-invalid-at", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
    ("host-empty-11", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
    ("host-empty-10", b"GET / HTTP/1.0\r\nHost: \r\n\r\n", 400),
    # 400: the request-target's percent-encodings (in the path; the query is the app's)
    ("percent-not-hex", b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("percent-short", b"GET /a%4 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("percent-at-end", b"GET /a% HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("percent-absolute", b"GET http://example.com/%g0 HTTP/1.1\r\n" + H + b"\r\n", 400),
    # 400: an absolute-form target's authority (RFC 9112 3.2.2)
    ("absolute-userinfo", b"GET http://user@example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute-userinfo-only", b"GET http://@example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute-empty-host", b"GET http:///x HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute-empty-host-query", b"GET http://?x HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute-bad-host", b"GET http://a<b/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    # 400: the request line and its target
    ("target-relative", b"GET foo HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-star-not-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-space", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-ctl", b"GET /\x01 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-nul", b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-del", b"GET /\x7f HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-8bit", b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-fragment", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-ftp", b"GET ftp://x/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-after-version", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("leading-space", b" GET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tab-after-method", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method-with-slash", b"GE/T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
    ("nul-byte", b"\x00", 400),
    ("not-http", b"GET / FOO/1.1\r\n" + H + b"\r\n", 400),
    ("version-garbage", b"GET / HTTP/x.y\r\n" + H + b"\r\n", 400),
    ("version-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    ("version-long", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    ("upgrade-with-body", post(b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n",
                               b"abc"), 400),
    ("closed-mid-head", b"GET / HTTP/1.1\r\nHost: x", 400),
    ("closed-mid-body", post(b"Content-Length: 10\r\n", b"abc"), 400),
    ("closed-mid-chunked", post(CHUNKED, b"1\r\na\r\n0\r\n"), 400),
    # 501, 505, 417
    ("unknown-method", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("lowercase-method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("unknown-method-prefix-of-known", b"GETX / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("te-gzip", post(b"Transfer-Encoding: gzip\r\n"), 501),
    ("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    ("te-unknown", post(b"Transfer-Encoding: xchunked\r\n"), 501),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http-0.9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("http-2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("http-0.9-line", b"GET /\r\n", 505),  # no version: answered without the blank line
    ("http-0.9-with-fields", b"GET /x\r\n" + H + b"\r\n", 505),
    ("http-0.9-then-bad-field", b"POST /!HTTP/1.1\r\n\x00ost: x\r\n\r\n", 505),  # as if split
    ("expect-unknown", b"GET / HTTP/1.1\r\n" + H + b"Expect: something\r\n\r\n", 417),
    ("expect-list", b"GET / HTTP/1.1\r\n" + H + b"Expect: 100-continue, x\r\n\r\n", 417),
]
assert len(MALFORMED) >= 60
assert len({name for name, _, _ in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize("data,status", [(d, s) for _, d, s in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_request_gets_its_status(data, status):
    assert status_of(data) == status
    assert status_of(data, split=1) == status  # byte by byte: the same answer
    assert status_of(data, split=7) == status


@pytest.mark.parametrize("data,status", [(d, s) for _, d, s in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_requests_before_a_malformed_one_are_still_answered(data, status):
    for split in (None, 1, 5):
        stream = GOOD + GOOD + data
        chunks = [stream] if split is None else [stream[i:i + split]
                                                 for i in range(0, len(stream), split)]
        events = drive(conn(), chunks)
        kinds = [e[0] for e in events]
        assert kinds[:4] == ["REQ", "SENT", "REQ", "SENT"], events
        assert events[0][2] == b"/first" and events[2][2] == b"/first"
        assert events[-1] == ("ERR", status), events


def test_the_error_response_closes_and_says_the_status():
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProtocolError) as e:
        c.next_event()
    raw = c.error_response(e.value.status)
    status, headers, body = parse_response(raw)
    assert status == 400 and headers["connection"] == ["close"]
    assert headers["content-length"] == [str(len(body))] and body == b"400 Bad Request\n"
    assert not c.keep_alive
    with pytest.raises(ProtocolError):  # the connection stays failed
        c.next_event()


def test_bytes_after_an_error_are_ignored():
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\n" + H + b"X: a\x00\r\n\r\n")
    c.receive_data(GOOD)
    with pytest.raises(ProtocolError):
        c.next_event()


def test_an_unknown_method_waits_for_the_end_of_its_token():
    c = conn()
    c.receive_data(b"FO")
    assert c.next_event() is NEED_DATA
    c.receive_data(b"O")
    assert c.next_event() is NEED_DATA
    c.receive_data(b" / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError) as e:
        c.next_event()
    assert e.value.status == 501
    c = conn()
    c.receive_data(b"FOO")
    c.receive_data(b"")
    with pytest.raises(ProtocolError) as e:
        c.next_event()
    assert e.value.status == 400  # the peer closed before the request line was whole


def test_an_unknown_method_after_a_body_is_found_in_its_read():
    body = b"GETGET"  # a body that looks like methods does not confuse the replay
    stream = post(b"Content-Length: 6\r\n", body) + b"BREW / HTTP/1.1\r\n" + H + b"\r\n"
    for split in (None, 1, 3, 40):
        chunks = [stream] if split is None else [stream[i:i + split]
                                                 for i in range(0, len(stream), split)]
        events = drive(conn(), chunks)
        assert events[1] == ("DATA", body) and events[-1] == ("ERR", 501), (split, events)


def test_a_head_that_never_ends_is_refused_without_buffering_it():
    c = conn(Limits())
    c.receive_data(b"GET / HTTP/1.1\r\n" + H + b"X: ")
    started = time.monotonic()
    for _ in range(200):
        c.receive_data(b"a" * 4096)
    with pytest.raises(ProtocolError) as e:
        c.next_event()
    assert e.value.status == 431
    assert time.monotonic() - started < 2.0


def test_only_protocol_error_leaves_for_every_corpus_entry_cut_anywhere():
    for _, data, _ in MALFORMED:
        for cut in range(0, len(data), max(1, len(data) // 10)):
            drive(conn(), [data[:cut], data[cut:]])


# -- valid exchanges ---------------------------------------------------------------------------


def test_keep_alive_serves_requests_one_after_another():
    c = conn()
    for i in range(3):
        c.receive_data(b"GET /%d HTTP/1.1\r\n" % i + H + b"\r\n")
        req = c.next_event()
        assert type(req) is Request and req.target == b"/%d" % i and req.keep_alive
        assert c.next_event() is PAUSED
        raw = c.respond("200 OK", [], b"x")
        status, headers, body = parse_response(raw)
        assert status == 200 and body == b"x" and "connection" not in headers
        assert c.keep_alive and c.idle
        assert c.next_event() is NEED_DATA
    c.receive_data(b"")
    assert c.next_event() is CLOSED


def test_pipelined_requests_are_answered_in_order_and_paused_between():
    c = conn()
    c.receive_data(b"".join(b"GET /%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(3))
                   + post(b"Content-Length: 3\r\n", b"abc"))
    answers = []
    for i in range(3):
        req = c.next_event()
        assert req.target == b"/%d" % i
        assert c.next_event() is PAUSED and c.next_event() is PAUSED  # until the answer
        assert not c.idle
        answers.append(c.respond("200 OK", [], b"%d" % i))
    req = c.next_event()
    assert req.method == "POST" and req.content_length == 3
    assert c.next_event().data == b"abc"
    assert c.next_event() is END
    assert c.next_event() is PAUSED
    c.respond("201 Created", [], b"")
    assert c.next_event() is NEED_DATA
    assert [parse_response(a)[2] for a in answers] == [b"0", b"1", b"2"]


def test_a_streamed_answer_holds_the_next_request_until_end():
    c = conn()
    c.receive_data(GOOD + GOOD)
    c.next_event()
    assert c.next_event() is PAUSED
    c.start_response("200 OK", [])
    c.body(b"part")
    assert c.next_event() is PAUSED
    assert c.end() == b"0\r\n\r\n"
    assert type(c.next_event()) is Request


def test_chunked_request_body_with_extensions_and_trailers():
    c = conn()
    c.receive_data(post(CHUNKED + b"Trailer: T\r\n",
                        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: trailer\r\n\r\n") + GOOD)
    req = c.next_event()
    assert req.chunked and req.content_length is None and req.has_body
    data = b""
    while True:
        ev = c.next_event()
        if ev is END:
            break
        data += ev.data
    assert data == b"abcde"
    assert all(name != b"T" for name, _ in req.headers)  # trailers do not join the head
    c.respond("200 OK", [], b"")
    assert c.next_event().target == b"/first"


def test_chunked_body_split_into_single_bytes():
    stream = post(CHUNKED, b"a\r\n0123456789\r\n0\r\n\r\n")
    events = drive(conn(), [stream[i:i + 1] for i in range(len(stream))])
    assert events[1] == ("DATA", b"0123456789") and events[2] == ("END",)


def test_http10_without_keep_alive_closes_after_the_answer():
    c = conn()
    c.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    req = c.next_event()
    assert req.version == "1.0" and not req.keep_alive and req.host is None
    status, headers, _ = parse_response(c.respond("200 OK", [], b"x"))
    assert headers["connection"] == ["close"] and not c.keep_alive


def test_http10_keep_alive_is_kept_when_the_length_is_known():
    c = conn()
    c.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.next_event().keep_alive
    status, headers, _ = parse_response(c.respond("200 OK", [], b"x"))
    assert headers["connection"] == ["keep-alive"] and c.keep_alive


def test_http10_streamed_answer_is_close_delimited():
    c = conn()
    c.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    c.next_event()
    head = c.start_response("200 OK", [("Content-Type", "text/plain")])
    _, headers, _ = parse_response(head)
    assert "transfer-encoding" not in headers and headers["connection"] == ["close"]
    assert c.body(b"raw") == b"raw" and c.end() == b""
    assert not c.keep_alive


def test_head_gets_the_length_but_no_body():
    c = conn()
    c.receive_data(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n" + GOOD)
    assert c.next_event().method == "HEAD"
    raw = c.respond("200 OK", [("Content-Type", "text/plain")], b"twelve bytes")
    status, headers, body = parse_response(raw)
    assert headers["content-length"] == ["12"] and body == b""
    assert c.keep_alive
    assert c.next_event().target == b"/first"
    c.respond("200 OK", [], b"")
    c.receive_data(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n")
    c.next_event()
    head = c.start_response("200 OK", [])  # streamed: nothing says chunked, nothing is sent
    assert b"Transfer-Encoding" not in head and c.body(b"data") == b"" and c.end() == b""


def test_expect_100_continue():
    c = conn()
    c.receive_data(post(b"Content-Length: 3\r\nExpect: 100-continue\r\n"))
    req = c.next_event()
    assert req.expect_continue
    assert c.next_event() is NEED_DATA
    assert c.informational() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not req.expect_continue  # sent once
    c.receive_data(b"abc")
    assert c.next_event().data == b"abc"
    c10 = conn()
    c10.receive_data(post(b"Content-Length: 3\r\nExpect: 100-continue\r\n", version=b"1.0"))
    assert not c10.next_event().expect_continue  # an HTTP/1.0 client does not wait for it


def test_an_answer_before_the_body_skips_a_small_body_and_keeps_the_connection():
    c = conn()
    c.receive_data(post(b"Content-Length: 50\r\n", b"x" * 20))
    c.next_event()
    c.respond("413 Content Too Large", [], b"no")
    assert c.keep_alive
    c.receive_data(b"y" * 30 + GOOD)
    assert c.next_event().target == b"/first"


def test_an_answer_after_a_bad_body_closes():
    c = conn()
    c.receive_data(post(CHUNKED, b"zz\r\n"))
    c.next_event()
    with pytest.raises(ProtocolError):
        c.next_event()  # the app read the body and got the error, but answers anyway
    _, headers, _ = parse_response(c.respond("200 OK", [], b""))
    assert headers["connection"] == ["close"] and not c.keep_alive


def test_an_answer_before_a_large_body_closes():
    c = conn(Limits(max_body_size=None))
    c.receive_data(post(b"Content-Length: 1000000\r\n", b"x" * 10))
    c.next_event()
    _, headers, _ = parse_response(c.respond("200 OK", [], b""))
    assert headers["connection"] == ["close"] and not c.keep_alive


def test_an_upgrade_request_is_answered_plainly_then_the_connection_closes():
    c = conn()
    c.receive_data(b"GET /ws HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                   + GOOD)
    req = c.next_event()
    assert req.upgrade and not req.keep_alive
    c.respond("200 OK", [], b"")
    assert not c.keep_alive


def test_absolute_form_and_asterisk_form():
    events = drive(conn(), [b"GET http://example.com/x?y HTTP/1.1\r\n" + H + b"\r\n"
                            b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"])
    assert [e[2] for e in events if e[0] == "REQ"] == [b"http://example.com/x?y", b"*"]


def test_valid_host_forms():
    for host in (b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:8080",
                 b"xn--bcher-kva.example", b"a_b.local"):
        events = drive(conn(), [b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"])
        assert events[0][0] == "REQ", (host, events)


def test_the_authority_of_an_absolute_form_target_is_the_host():
    """RFC 9112 3.2.2: the target's host wins over Host; an HTTP/1.0 request without Host
    gets it from the target; the target itself is kept as sent."""
    events = drive(conn(), [b"GET http://good.example:8080/x?y HTTP/1.1\r\nHost: evil\r\n"
                            b"X: 1\r\n\r\n",
                            b"GET https://good.example?q HTTP/1.0\r\n\r\n"])
    reqs = [e for e in events if e[0] == "REQ"]
    assert reqs[0][2] == b"http://good.example:8080/x?y"
    assert reqs[0][4] == ((b"Host", b"good.example:8080"), (b"X", b"1"))
    assert reqs[0][-1] == b"good.example:8080"
    assert reqs[1][4] == ((b"Host", b"good.example"),) and reqs[1][-1] == b"good.example"


def test_a_request_line_without_a_version_is_answered_at_once():
    """HTTP/0.9: llhttp would wait for a blank line such a client never sends (until the
    header timeout); the answer comes with the read that ended the line, whatever came
    before it on the connection."""
    for chunks in ([b"GET /\r\n"], [b"GE", b"T /x", b"\r", b"\n"], [b"\r\nGET /\r\n"],
                   [GOOD, b"GET /\r\n"], [GOOD + b"GET /\r\n"], [GOOD + b"GET", b" /\r\n"]):
        events = drive(conn(), chunks, eof=False)
        assert events[-1] == ("ERR", 505), (chunks, events)
        assert [e[0] for e in events[:-1]] == ["REQ", "SENT"] * (len(events) // 2), events
    events = drive(conn(), [b"GET / HTTP/1.1\r\n"], eof=False)  # a version: wait for more
    assert events == []


def test_an_answer_before_100_continue_closes():
    """The client waits for 100 Continue, or sends its body after a while: nobody can tell
    what the next bytes are, so the answer says Connection: close."""
    c = conn()
    c.receive_data(post(b"Content-Length: 5\r\nExpect: 100-continue\r\n"))
    assert c.next_event().expect_continue
    _, headers, _ = parse_response(c.respond("404 Not Found", [], b"no"))
    assert headers["connection"] == ["close"] and not c.keep_alive
    c = conn()  # after 100 Continue the body is on its way: a small unread one is skipped
    c.receive_data(post(b"Content-Length: 5\r\nExpect: 100-continue\r\n"))
    c.next_event()
    c.informational()
    _, headers, _ = parse_response(c.respond("404 Not Found", [], b"no"))
    assert "connection" not in headers and c.keep_alive


# -- response framing ----------------------------------------------------------------------------


def answer(request: bytes = GOOD, **kw) -> H1Connection:
    c = conn(**kw)
    c.receive_data(request)
    c.next_event()
    return c


def test_content_length_framing():
    c = answer()
    head = c.start_response("200 OK", [("Content-Length", "5")])
    assert parse_response(head)[1]["content-length"] == ["5"]
    assert c.body(b"abc") == b"abc" and c.body(b"de") == b"de"
    with pytest.raises(ProtocolError) as e:
        c.body(b"!")
    assert e.value.local and not c.keep_alive


def test_fewer_bytes_than_announced_closes_the_connection():
    c = answer()
    c.start_response("200 OK", [("Content-Length", "5")])
    c.body(b"abc")
    c.end()
    assert not c.keep_alive


def test_chunked_framing_for_an_unknown_length():
    c = answer()
    head = c.start_response("200 OK", [("Content-Type", "text/plain")])
    assert parse_response(head)[1]["transfer-encoding"] == ["chunked"]
    assert c.body(b"hello") == b"5\r\nhello\r\n"
    assert c.body(b"") == b""  # an empty write is not the last chunk
    assert c.body(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert c.end() == b"0\r\n\r\n" and c.keep_alive


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status):
    c = answer()
    raw = c.respond(status, [("ETag", '"x"')], b"")
    code, headers, body = parse_response(raw)
    assert body == b"" and "content-length" not in headers and "transfer-encoding" not in headers
    assert c.keep_alive
    c = answer()
    head = c.start_response(status, [])
    assert b"Transfer-Encoding" not in head and c.body(b"ignored") == b"" and c.end() == b""


def test_a_204_never_carries_content_length():
    c = answer()
    raw = c.respond("204 No Content", [("Content-Length", "0")], b"")
    assert "content-length" not in parse_response(raw)[1]


def test_hop_by_hop_headers_of_the_app_are_dropped():
    c = answer()
    raw = c.respond("200 OK", [("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
                               ("Upgrade", "h2c"), ("TE", "trailers"), ("Trailer", "X"),
                               ("Proxy-Connection", "keep-alive"), ("X-Kept", "1")], b"ok")
    _, headers, body = parse_response(raw)
    for name in ("keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
                 "proxy-connection"):
        assert name not in headers
    assert headers["x-kept"] == ["1"] and headers["content-length"] == ["2"] and body == b"ok"


def test_connection_close_from_the_app_is_honoured():
    c = answer()
    _, headers, _ = parse_response(c.respond("200 OK", [("Connection", "close")], b""))
    assert headers["connection"] == ["close"] and not c.keep_alive


def test_closing_connection_says_so():
    c = answer()
    c.closing = True  # the server is draining
    _, headers, _ = parse_response(c.respond("200 OK", [], b""))
    assert headers["connection"] == ["close"] and not c.keep_alive


@pytest.mark.parametrize("status,headers", [
    ("200 OK\r\nSet-Cookie: evil=1", []),
    ("200 OK\nX: y", []),
    ("200 OK", [("X-Evil", "a\r\nSet-Cookie: evil=1")]),
    ("200 OK", [("X-Evil", "a\nb")]),
    ("200 OK", [("X-Evil", "a\rb")]),
    ("200 OK", [("X-Evil", "a\0b")]),
    ("200 OK", [("X-Evil\r\nSet-Cookie", "evil=1")]),
    ("200 OK", [("X Evil", "1")]),
    ("200 OK", [("", "1")]),
    ("200 OK", [(b"X-Bytes", "1")]),
    ("200 OK", [("X-Bytes", b"1")]),
    ("200 OK", [("X-Number", 1)]),
    ("200 OK", [("X-Utf8", "\u20ac")]),
    ("200 OK", [("Content-Length", "-1")]),
    ("200 OK", [("Content-Length", "1"), ("Content-Length", "2")]),
    ("2000 OK", []),
    ("OK", []),
    ("199 Early", []),
    ("600 Beyond", []),
    (200, []),
])
def test_invalid_response_heads_are_local_errors(status, headers):
    c = answer()
    with pytest.raises(ProtocolError) as e:
        c.start_response(status, headers)
    assert e.value.local and e.value.status == 500
    with pytest.raises(ProtocolError):  # refused again: a refusal is not remembered as good
        answer().start_response(status, headers)


def test_a_remembered_head_is_still_framed_for_each_request():
    """The checked (status, headers) are kept between responses; framing is not: the same
    head answers HEAD, HTTP/1.0, a draining connection and a streamed body each its own way."""
    headers = [("Content-Type", "text/plain"), ("X-Same", "1")]
    first = answer().respond("200 OK", list(headers), b"abc")
    assert parse_response(first)[2] == b"abc" and b"Content-Length: 3\r\n" in first

    c = answer(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n")
    raw = c.respond("200 OK", list(headers), b"abc")
    assert raw.endswith(b"\r\n\r\n") and b"Content-Length: 3\r\n" in raw

    c = answer(b"GET / HTTP/1.0\r\n" + H + b"\r\n")
    head = c.start_response("200 OK", list(headers))
    assert b"Connection: close" in head and not c.keep_alive and c.body(b"x") == b"x"

    c = answer()
    c.closing = True
    assert b"Connection: close" in c.respond("200 OK", list(headers), b"")

    c = answer()
    head = c.start_response("200 OK", list(headers))
    assert b"Transfer-Encoding: chunked" in head and c.body(b"x") == b"1\r\nx\r\n"

    c = answer()
    c.respond("200 OK", [*headers, ("Connection", "close")], b"")
    assert not c.keep_alive
    c = answer()
    c.respond("200 OK", list(headers), b"")
    assert c.keep_alive


def test_the_head_cache_stays_bounded():
    from pyd.protocols import h1
    for i in range(h1.HEAD_CACHE * 3):
        raw = answer().respond("200 OK", [("X-Unique", str(i))], b"")
        assert f"X-Unique: {i}\r\n".encode() in raw
    assert len(h1._HEADS) <= h1.HEAD_CACHE


def test_a_repeated_equal_content_length_is_sent_once():
    c = answer()
    raw = c.respond("200 OK", [("Content-Length", "2"), ("Content-Length", "2")], b"ok")
    assert parse_response(raw)[1]["content-length"] == ["2"]


def test_date_and_server_are_added_unless_the_app_sets_them():
    _, headers, _ = parse_response(answer().respond("200 OK", [], b""))
    assert len(headers["date"]) == 1 and headers["server"][0].startswith("pyd/")
    raw = answer().respond("200 OK", [("Server", "mine"), ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")],
                           b"")
    _, headers, _ = parse_response(raw)
    assert headers["server"] == ["mine"] and headers["date"] == ["Thu, 01 Jan 1970 00:00:00 GMT"]


def test_server_tokens_off_hides_the_version():
    _, headers, _ = parse_response(answer(server_tokens=False).respond("200 OK", [], b""))
    assert headers["server"] == ["pyd"]


def test_answering_twice_or_without_a_request_is_a_local_error():
    c = conn()
    with pytest.raises(ProtocolError) as e:
        c.start_response("200 OK", [])
    assert e.value.local
    c = answer()
    c.start_response("200 OK", [])
    with pytest.raises(ProtocolError):
        c.start_response("200 OK", [])


def test_abort_fails_the_connection():
    c = answer(GOOD + GOOD)
    c.start_response("200 OK", [])
    c.abort()
    assert not c.keep_alive
    with pytest.raises(ProtocolError):
        c.next_event()


# -- hypothesis ------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    GOOD,
    b"GET /a?b=c HTTP/1.1\r\nHost: h:1\r\nAccept: */*\r\nCookie: a=1\r\n\r\n",
    b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    post(b"Content-Length: 5\r\n", b"hello"),
    post(CHUNKED, b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"),
    post(b"Content-Length: 3\r\nExpect: 100-continue\r\n", b"abc"),
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"DELETE /x HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
]


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return [c for c in out if c]


def same_events_however_split(data: bytes, cuts: list[int]) -> None:
    whole = drive(conn(), [data])
    assert drive(conn(), splits(data, cuts)) == whole
    if len(data) <= 400:
        assert drive(conn(), [data[i:i + 1] for i in range(len(data))]) == whole


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=12))
def test_random_bytes(data, cuts):
    same_events_however_split(data, cuts)


@FUZZ
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=4),
       st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]),
                          st.integers(0, 2000), st.integers(0, 255)), max_size=4),
       st.lists(st.integers(0, 2000), max_size=12))
def test_mutated_valid_requests(requests, mutations, cuts):
    data = bytearray(b"".join(requests))
    for kind, pos, byte in mutations:
        pos %= len(data) + 1
        if kind == "flip" and pos < len(data):
            data[pos] = byte
        elif kind == "insert":
            data[pos:pos] = bytes([byte])
        elif kind == "delete":
            del data[pos:pos + 1]
        elif kind == "duplicate":
            data[pos:pos] = data[pos:pos + byte % 40]
        elif kind == "truncate":
            del data[pos:]
    same_events_however_split(bytes(data), cuts)


@FUZZ
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=5),
       st.lists(st.integers(0, 2000), max_size=12))
def test_valid_pipelines_deliver_every_request(requests, cuts):
    data = b"".join(requests)
    events = drive(conn(), splits(data, cuts))
    assert not [e for e in events if e[0] == "ERR"], events
    expected = 0
    for r in requests:
        expected += 1
        if b"Connection: close" in r or (b"HTTP/1.0" in r and b"keep-alive" not in r):
            break
    assert sum(e[0] == "REQ" for e in events) == expected


@FUZZ
@given(st.binary(min_size=1, max_size=300))
def test_garbage_after_a_valid_request(garbage):
    events = drive(conn(), [GOOD + garbage])
    assert events[0][0] == "REQ" and events[1] == ("SENT", True)


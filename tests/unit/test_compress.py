"""Compression without sockets: Accept-Encoding negotiation, which responses are compressed and
how their headers change, and the streaming encoders (each flushed chunk decodes on its own)."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pyd.web import compress
from pyd.web.compress import (
    ENCODERS,
    Compression,
    accepts,
    available_codings,
    choose,
    parse_accept_encoding,
)

ALL = ("zstd", "br", "gzip")


def test_the_optional_codings_are_offered_when_installed():
    assert available_codings() == ALL


@pytest.mark.parametrize("header,expected", [
    ("gzip", {"gzip": 1.0}),
    ("gzip;q=0.5, br;q=1.0", {"gzip": 0.5, "br": 1.0}),
    ("GZIP ; Q=0.3", {"gzip": 0.3}),
    ("br;q=2", {"br": 0.0}),
    ("br;q=-1", {"br": 0.0}),
    ("br;q=abc", {"br": 0.0}),
    ("br;q=nan", {"br": 0.0}),
    ("br;foo=bar;q=0.4", {"br": 0.4}),
    (" , ,gzip,", {"gzip": 1.0}),
    ("", {}),
])
def test_parse_accept_encoding(header, expected):
    assert parse_accept_encoding(header) == expected


@pytest.mark.parametrize("header,expected", [
    ("gzip, deflate, br, zstd", "zstd"),  # a browser: all equal, our order
    ("gzip, deflate, br", "br"),
    ("gzip", "gzip"),
    ("x-gzip", "gzip"),
    ("br;q=0.5, gzip;q=0.8", "gzip"),
    ("zstd;q=0.1, br;q=0.2, gzip;q=0.3", "gzip"),
    ("zstd;q=0.9, br;q=1", "br"),
    ("*", "zstd"),
    ("*;q=0.5, gzip;q=0.6", "gzip"),
    ("*, zstd;q=0, br;q=0", "gzip"),
    ("gzip;q=0", None),
    ("identity", None),
    ("deflate", None),
    ("compress, deflate", None),
    ("", None),
])
def test_choose_by_q_values(header, expected):
    assert choose(header, ALL) == expected


def test_choose_among_what_is_available():
    assert choose("br, zstd", ("gzip",)) is None
    assert choose("br;q=1, gzip;q=0.5", ("gzip",)) == "gzip"


def test_accepts():
    assert accepts("gzip, br", "br") and not accepts("gzip", "br")
    assert accepts("*", "br") and not accepts("*, br;q=0", "br")
    assert accepts("x-gzip", "gzip")


# -- the decision for one response -----------------------------------------------------------------

HTML = [("Content-Type", "text/html; charset=utf-8")]


def decide(headers=HTML, status="200 OK", length=5000, accept="gzip", method="GET", **kw):
    return Compression(**kw).decide(method, status, list(headers), length, accept)


def names(headers) -> dict:
    out: dict = {}
    for k, v in headers:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_a_compressible_response_gets_its_headers_changed():
    headers = HTML + [("Content-Length", "5000"), ("ETag", '"abc"'), ("Accept-Ranges", "bytes"),
                      ("X-Other", "1")]
    encoder, out = decide(headers)
    h = names(out)
    assert encoder.coding == "gzip"
    assert h["content-encoding"] == ["gzip"] and h["vary"] == ["Accept-Encoding"]
    assert "content-length" not in h and "accept-ranges" not in h
    assert h["etag"] == ['W/"abc"'] and h["x-other"] == ["1"]


def test_vary_is_merged_with_the_apps():
    _, out = decide(HTML + [("Vary", "Cookie")])
    assert names(out)["vary"] == ["Cookie, Accept-Encoding"]
    _, out = decide(HTML + [("Vary", "accept-encoding")])
    assert names(out)["vary"] == ["accept-encoding"]
    _, out = decide(HTML + [("Vary", "*")])
    assert names(out)["vary"] == ["*"]


def test_vary_without_compression_when_the_client_accepts_nothing_we_have():
    for accept in (None, "", "identity", "deflate"):
        encoder, out = decide(accept=accept)
        assert encoder is None and names(out)["vary"] == ["Accept-Encoding"]
        assert "content-encoding" not in names(out)


@pytest.mark.parametrize("kw", [
    {"status": "206 Partial Content"},
    {"status": "204 No Content"},
    {"status": "304 Not Modified"},
    {"method": "HEAD"},
    {"headers": HTML + [("Content-Encoding", "gzip")]},
    {"headers": HTML + [("Content-Range", "bytes 0-1/5000")]},
    {"headers": HTML + [("Cache-Control", "public, No-Transform")]},
    {"headers": [("Content-Type", "image/png")]},
    {"headers": [("Content-Type", "application/octet-stream")]},
    {"headers": []},
    {"length": 1023},
    {"length": 0},
    {"headers": HTML + [("Content-Length", "10")], "length": None},
])
def test_responses_never_compressed(kw):
    encoder, out = decide(**kw)
    given_headers = kw.get("headers", HTML)
    assert encoder is None
    assert names(out).get("content-encoding") == names(given_headers).get("content-encoding")


def test_types_and_minimum_length_are_configurable():
    only_json = {"types": ("application/json",), "min_length": 10}
    assert decide([("Content-Type", "application/json")], length=10, **only_json)[0]
    assert decide([("Content-Type", "Application/JSON; charset=utf-8")], length=10,
                  **only_json)[0]
    assert decide(HTML, length=10, **only_json)[0] is None
    assert decide([("Content-Type", "application/json")], length=9, **only_json)[0] is None
    for ctype in ("text/plain", "text/css", "application/javascript", "application/xml",
                  "image/svg+xml"):
        assert decide([("Content-Type", ctype)])[0], ctype


def test_unknown_length_is_compressed():
    assert decide(length=None)[0] is not None


def test_off_means_none():
    class S(dict):
        pass

    s = S({"gzip": False, "compress-types": ("text/*",), "compress-min-length": 1,
           "compress-level": 4})
    assert Compression.from_settings(s) is None
    s["gzip"] = True
    comp = Compression.from_settings(s)
    assert comp.codings == ALL and comp.min_length == 1


# -- the encoders ----------------------------------------------------------------------------------

DECODERS = {
    "gzip": lambda data: gzip.decompress(data),
    "br": lambda data: brotli.decompress(data),
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


def incremental(coding):
    if coding == "gzip":
        d = zlib.decompressobj(31)
        return d.decompress
    if coding == "br":
        d = brotli.Decompressor()
        return d.process
    d = zstandard.ZstdDecompressor().decompressobj()
    return d.decompress


@pytest.mark.parametrize("coding", ALL)
@pytest.mark.parametrize("level", [1, 4, 9])
def test_whole_bodies_round_trip(coding, level):
    body = b"".join(b"line %d of a text that repeats\n" % i for i in range(2000))
    data = ENCODERS[coding](level).whole(body)
    assert len(data) < len(body) // 4
    assert DECODERS[coding](data) == body


@pytest.mark.parametrize("coding", ALL)
def test_every_streamed_chunk_is_decodable_as_soon_as_it_is_sent(coding):
    encoder = ENCODERS[coding](4)
    decode = incremental(coding)
    received = b""
    for i in range(20):
        chunk = b"event %d: " % i + b"x" * i + b"\n"
        received += decode(encoder.compress(chunk))
        assert received.endswith(chunk)  # the client has it now, not when the stream ends
    received += decode(encoder.finish())
    assert received == b"".join(b"event %d: " % i + b"x" * i + b"\n" for i in range(20))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.sampled_from(ALL))
def test_streams_round_trip(chunks, coding):
    encoder = ENCODERS[coding](4)
    data = b"".join(encoder.compress(c) for c in chunks) + encoder.finish()
    assert DECODERS[coding](data) == b"".join(chunks)


def test_missing_optional_packages_are_not_offered(monkeypatch):
    monkeypatch.setattr(compress, "ENCODERS", {"gzip": compress.GzipEncoder})
    assert compress.available_codings() == ("gzip",)
    assert Compression().codings == ("gzip",)
    assert decide(accept="br, zstd")[0] is None

"""Request-targets to paths, and the redirects routing makes: never protocol-relative."""

from __future__ import annotations

import pytest

from pyd.web.routing import Route, Router, redirect_location, split_target


@pytest.mark.parametrize("path,location", [
    ("/api/", "/api/"),
    ("//evil.example.com/", "/evil.example.com/"),
    ("////evil.example.com", "/evil.example.com"),
    ("/\\evil.example.com/", "/%5Cevil.example.com/"),  # a browser reads \ as /
    ("/a b/%/\r\n/", "/a%20b/%25/%0D%0A/"),  # PATH_INFO is decoded: encoded again
    ("/caf\xc3\xa9/", "/caf%C3%A9/"),  # latin-1 text of UTF-8 bytes: the bytes come back
])
def test_redirect_locations_are_encoded_and_never_protocol_relative(path, location):
    assert redirect_location(path) == location
    assert redirect_location(path, "a=1") == location + "?a=1"


def test_a_location_prefix_redirect_is_never_protocol_relative():
    router = Router([Route("//evil.example.com/", lambda e, s: []), Route("/api/", None)])
    assert router.redirect_for("//evil.example.com") == "/evil.example.com/"
    assert router.redirect_for("/api") == "/api/"


@pytest.mark.parametrize("target,parts", [
    (b"http://h.example/p?q=1", (b"/p", b"q=1")),
    (b"http://h.example?q=1", (b"/", b"q=1")),  # the query of a target without a path
    (b"http://h.example?q=/x", (b"/", b"q=/x")),
    (b"http://h.example", (b"/", b"")),
    (b"/a?b", (b"/a", b"b")),
])
def test_split_target(target, parts):
    assert split_target(target) == parts

"""Unit tests of the config value types: what each accepts, its canonical text, its errors.

Every type must also round-trip: parse(format(v)) == v, which `configtest --print` relies on.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyd.config.values import (
    FLAG,
    JOIN,
    LIST,
    MAX_DURATION,
    ONE,
    Address,
    AddressType,
    AutoCount,
    BadValue,
    Boolean,
    Choice,
    Count,
    Duration,
    FileMode,
    Integer,
    ListOf,
    Network,
    ParseContext,
    Path,
    Ref,
    Size,
    String,
)

CTX = ParseContext("/etc/pyd")


def parse(vtype, *words):
    return vtype.parse(list(words), CTX)


def bad(vtype, *words) -> BadValue:
    with pytest.raises(BadValue) as info:
        vtype.parse(list(words), CTX)
    return info.value


def roundtrip(vtype, value):
    return vtype.parse(vtype.format(value), CTX)


# -- arity: how many words a type takes ----------------------------------------------------------

def test_arity_of_each_type():
    assert Integer().arity == ONE
    assert Size().arity == ONE
    assert Duration().arity == JOIN
    assert Boolean().arity == FLAG
    assert AddressType().arity == LIST
    assert ListOf(String()).arity == LIST
    assert String(join=True).arity == JOIN


def test_one_word_types_refuse_two_and_point_at_the_second():
    e = bad(Integer(), "1", "2")
    assert e.message == "expected one value (an integer), got 2"
    assert e.index == 1


def test_no_word_is_an_error_naming_what_was_expected():
    assert bad(Integer(), ).message == "expected an integer, got no value"
    assert bad(Size(), ).message == "expected a size such as 512, 64K, 128M or 1G, got no value"


# -- Integer ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0", 0), ("42", 42), ("+7", 7), ("-3", -3), ("007", 7), ("10k", 10_000), ("2M", 2_000_000),
    ("99999999999999999999", 99999999999999999999),
])
def test_integer_valid(text, value):
    assert parse(Integer(), text) == value


@pytest.mark.parametrize("text", ["", "1.5", "1_000", "0x10", "ten", "1 2", "٣", "²", "1K5", "--1"])
def test_integer_invalid(text):
    e = bad(Integer(), text)
    assert e.message == f'invalid integer "{text}": expected an integer'


def test_integer_range():
    port = Integer(min=1, max=65535)
    assert port.expected == "an integer from 1 to 65535"
    assert parse(port, "1") == 1 and parse(port, "65535") == 65535
    assert bad(port, "0").message == "0 is out of range: expected an integer from 1 to 65535"
    assert bad(port, "65536").message == "65536 is out of range: expected an integer from 1 to 65535"
    assert bad(Integer(min=0), "-1").message == "-1 is out of range: expected an integer of at least 0"


@given(st.integers(min_value=-10**30, max_value=10**30))
@settings(max_examples=60, deadline=None)
def test_integer_roundtrip(n):
    assert Integer().format(n) == [str(n)]
    assert roundtrip(Integer(), n) == n


# -- Count: an integer or auto ---------------------------------------------------------------------

def test_count_auto_is_the_cpu_count_and_prints_as_auto():
    value = parse(Count(), "auto")
    assert isinstance(value, AutoCount)
    assert value == (os.cpu_count() or 1)
    assert Count().format(value) == ["auto"]
    assert isinstance(roundtrip(Count(), value), AutoCount)
    assert parse(Count(), "AUTO") == value


def test_count_auto_reads_as_its_number_in_messages():
    value = AutoCount()
    assert f"{value}" == str(os.cpu_count() or 1)
    assert repr(value) == f"auto({os.cpu_count() or 1})"


def test_count_numbers_and_range():
    assert parse(Count(), "4") == 4 and Count().format(4) == ["4"]
    assert not isinstance(parse(Count(), "4"), AutoCount)
    assert bad(Count(), "0").message == '0 is out of range: expected an integer from 1 to 4096 or "auto"'
    assert bad(Count(), "4097").message.startswith("4097 is out of range")
    assert bad(Count(), "many").message == \
        'invalid integer "many": expected an integer from 1 to 4096 or "auto"'


# -- Size ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0", 0), ("512", 512), ("1025", 1025), ("64K", 64 << 10), ("64k", 64 << 10),
    ("128M", 128 << 20), ("128m", 128 << 20), ("1G", 1 << 30), ("1g", 1 << 30),
    ("2048K", 2 << 20),
])
def test_size_valid(text, value):
    assert parse(Size(), text) == value


@pytest.mark.parametrize("value, text", [
    (0, "0"), (512, "512"), (1025, "1025"), (1024, "1K"), (1536, "1536"), (2 << 20, "2M"),
    (3 << 30, "3G"), ((1 << 30) + (1 << 20), "1025M"),
])
def test_size_canonical(value, text):
    assert Size().format(value) == [text]


@pytest.mark.parametrize("text", ["", "1T", "-1", "1.5M", "1 K", "K", "1KB", "٣K", "0x10"])
def test_size_invalid(text):
    assert bad(Size(), text).message == \
        f'invalid size "{text}": expected a size such as 512, 64K, 128M or 1G'


def test_size_range():
    s = Size(min=1024, max=1 << 20)
    assert bad(s, "512").message == "512 is out of range: expected 1K to 1M"
    assert bad(s, "2M").message == "2M is out of range: expected 1K to 1M"
    assert parse(s, "1M") == 1 << 20


@given(st.integers(min_value=0, max_value=1 << 50))
@settings(max_examples=80, deadline=None)
def test_size_roundtrip(n):
    assert roundtrip(Size(), n) == n


# -- Duration -----------------------------------------------------------------------------------

@pytest.mark.parametrize("words, seconds", [
    (["250ms"], 0.25), (["10s"], 10.0), (["5m"], 300.0), (["1h"], 3600.0), (["2d"], 172800.0),
    (["1w"], 604800.0), (["90"], 90.0), (["0"], 0.0), (["1.5s"], 1.5), (["1.5h"], 5400.0),
    (["1h", "30m"], 5400.0), (["1h30m"], 5400.0), (["1h30m15s500ms"], 5415.5),
    (["1h, 30m"], 5400.0), (["0.001"], 0.001),
])
def test_duration_valid(words, seconds):
    assert parse(Duration(), *words) == seconds


@pytest.mark.parametrize("seconds, text", [
    (0.0, "0s"), (0.25, "250ms"), (10.0, "10s"), (90.0, "1m 30s"), (5400.0, "1h 30m"),
    (172800.0, "2d"), (604800.0, "7d"), (90061.001, "1d 1h 1m 1s 1ms"),
])
def test_duration_canonical(seconds, text):
    assert Duration().format(seconds) == [text]


@pytest.mark.parametrize("text", ["10x", "1H", "1M", "h", "1hm", "1h30", "1e3s", "٣s", "-1s",
                                  "1 h", "ten seconds"])
def test_duration_invalid(text):
    assert bad(Duration(), text).message == (
        f'invalid duration "{text}": expected a duration such as 250ms, 10s, 5m, 1h 30m or 2d')


def test_duration_finer_than_a_millisecond():
    assert bad(Duration(), "0.0001s").message == '"0.0001s" is finer than a millisecond'


def test_duration_range():
    assert bad(Duration(max=60), "2m").message == "2m is out of range: expected 0s to 1m"
    assert bad(Duration(min=1), "0").message == "0 is out of range: expected 1s to 36500d"
    assert parse(Duration(), "36500d") == MAX_DURATION
    assert bad(Duration(), "36501d").message == "36501d is out of range: expected 0s to 36500d"


@given(st.integers(min_value=0, max_value=MAX_DURATION * 1000))
@settings(max_examples=100, deadline=None)
def test_duration_roundtrip(ms):
    seconds = ms / 1000
    text = Duration().format(seconds)
    assert parse(Duration(), *text[0].split(" ")) == seconds
    assert roundtrip(Duration(), seconds) == seconds


# -- Boolean ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["on", "yes", "true", "1", "ON", "Yes", "TRUE"])
def test_boolean_true(text):
    assert parse(Boolean(), text) is True


@pytest.mark.parametrize("text", ["off", "no", "false", "0", "OFF", "No"])
def test_boolean_false(text):
    assert parse(Boolean(), text) is False


def test_boolean_alone_is_on_and_formats_as_on_off():
    assert parse(Boolean()) is True
    assert Boolean().format(True) == ["on"] and Boolean().format(False) == ["off"]
    assert roundtrip(Boolean(), False) is False


@pytest.mark.parametrize("text", ["maybe", "2", "", "enable"])
def test_boolean_invalid(text):
    assert bad(Boolean(), text).message == \
        f'invalid boolean "{text}": expected on/off, yes/no or true/false'


# -- Choice -------------------------------------------------------------------------------------

def test_choice_is_case_insensitive_and_canonical():
    levels = Choice("debug", "info", "WARNING")
    assert parse(levels, "INFO") == "info"
    assert parse(levels, "warning") == "WARNING"
    assert levels.format("info") == ["info"]
    assert bad(levels, "verbose").message == \
        'invalid value "verbose": expected one of debug, info, WARNING'


# -- String -------------------------------------------------------------------------------------

def test_string_keeps_text_exactly():
    odd = 'a "b" \\ $x ${Y} é 😀\n\t'
    assert parse(String(), odd) == odd
    assert roundtrip(String(), odd) == odd


def test_string_empty_and_pattern():
    assert bad(String(), "").message == "expected a string, got an empty string"
    assert parse(String(nonempty=False), "") == ""
    prefix = String(pattern=r"/.*", expected="a path prefix starting with /")
    assert parse(prefix, "/x/") == "/x/"
    assert bad(prefix, "x/").message == 'invalid value "x/": expected a path prefix starting with /'


def test_string_join_takes_several_words():
    assert parse(String(join=True), "run", "this", "now") == "run this now"


def test_messages_escape_unprintable_characters():
    assert bad(Integer(), "1\n2").message == 'invalid integer "1\\n2": expected an integer'
    assert bad(Integer(), 'a"b').message == 'invalid integer "a\\"b": expected an integer'


# -- Path ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, path", [
    ("/var/run/pyd.pid", "/var/run/pyd.pid"), ("run/pyd.pid", "/etc/pyd/run/pyd.pid"),
    ("../log", "/etc/log"), ("./a//b/", "/etc/pyd/a/b"), ("/a/../../b", "/b"), ("/", "/"),
])
def test_path_is_absolute_relative_to_the_file(text, path):
    assert parse(Path(), text) == path
    assert roundtrip(Path(), path) == path


def test_path_expands_home():
    assert parse(Path(), "~/x") == os.path.join(os.path.expanduser("~"), "x")


def test_path_invalid():
    assert bad(Path(), "").message == "expected a path, got an empty string"
    assert bad(Path(), "a\0b").message == "a path cannot contain a NUL byte"


# -- Address ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, address, canonical", [
    ("127.0.0.1:8080", Address("127.0.0.1", 8080), "127.0.0.1:8080"),
    ("[::1]:8080", Address("::1", 8080), "[::1]:8080"),
    ("[::]:80", Address("::", 80), "[::]:80"),
    ("*:80", Address("0.0.0.0", 80), "0.0.0.0:80"),
    ("8080", Address("0.0.0.0", 8080), "0.0.0.0:8080"),
    ("1", Address("0.0.0.0", 1), "0.0.0.0:1"),
    ("65535", Address("0.0.0.0", 65535), "0.0.0.0:65535"),
    ("localhost:8000", Address("localhost", 8000), "localhost:8000"),
    ("www.example.com:443", Address("www.example.com", 443), "www.example.com:443"),
    ("unix:/run/pyd.sock", Address(path="/run/pyd.sock"), "unix:/run/pyd.sock"),
    ("unix:pyd.sock", Address(path="/etc/pyd/pyd.sock"), "unix:/etc/pyd/pyd.sock"),
])
def test_address_valid(text, address, canonical):
    (value,) = parse(AddressType(), text)
    assert value == address
    assert AddressType().format((value,)) == [canonical]
    assert roundtrip(AddressType(), (value,)) == (value,)


def test_address_list_keeps_order():
    value = parse(AddressType(), "80", "[::1]:81", "unix:/x.sock")
    assert [str(a) for a in value] == ["0.0.0.0:80", "[::1]:81", "unix:/x.sock"]
    assert value[2].is_unix and not value[0].is_unix


@pytest.mark.parametrize("text, message", [
    ("0", 'invalid port "0" in "0": expected 1 to 65535'),
    ("70000", 'invalid port "70000" in "70000": expected 1 to 65535'),
    ("*:0", 'invalid port "0" in "*:0": expected 1 to 65535'),
    ("127.0.0.1:65536", 'invalid port "65536" in "127.0.0.1:65536": expected 1 to 65535'),
    ("127.0.0.1:http", 'invalid port "http" in "127.0.0.1:http": expected 1 to 65535'),
    ("x:²", 'invalid port "²" in "x:²": expected 1 to 65535'),
    ("[::1]:", 'invalid port "" in "[::1]:": expected 1 to 65535'),
    ("[::1]", 'invalid address "[::1]": an IPv6 address is written [::1]:8080'),
    ("[1.2.3.4]:80", 'invalid IPv6 address "1.2.3.4" in "[1.2.3.4]:80"'),
    ("::1:80", 'invalid address "::1:80": write an IPv6 address in brackets, [::1]:8080'),
    ("a_b:80", 'invalid host "a_b" in "a_b:80"'),
    ("-a:80", 'invalid host "-a" in "-a:80"'),
    ("999.1.1.1:80", 'invalid IPv4 address "999.1.1.1" in "999.1.1.1:80"'),
    ("1.2.3.4.5:80", 'invalid IPv4 address "1.2.3.4.5" in "1.2.3.4.5:80"'),
    ("unix:", "a unix socket address needs a path: unix:/run/pyd.sock"),
    ("unix:/" + "x" * 120, "unix socket path too long (121 bytes, at most 107)"),
    (":80", 'invalid address ":80": expected an address such as 127.0.0.1:8080'),
    ("²", 'invalid address "²": expected an address such as'),
    ("localhost", 'invalid address "localhost": expected an address such as'),
])
def test_address_invalid(text, message):
    assert bad(AddressType(), text).message.startswith(message)


def test_address_error_names_the_bad_item():
    assert bad(AddressType(), "80", "81", "0").index == 2


# -- Ref ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["shop.wsgi:application", "a:b", "a.b.c:d.e", "m:make_app()",
                                  "_m:_x"])
def test_ref_valid(text):
    assert parse(Ref(), text) == text
    assert roundtrip(Ref(), text) == text


@pytest.mark.parametrize("text", ["shop", "shop:", ":app", "a b:c", "a:b:c", "1a:b", "a.:b",
                                  "é:x", "a:b()()", "a-b:c"])
def test_ref_invalid(text):
    assert bad(Ref(), text).message == (f'invalid reference "{text}": expected '
                                        "module.path:attribute, such as shop.wsgi:application")


def test_ref_with_names_takes_an_app_section_name():
    assert parse(Ref(allow_name=True), "shop") == "shop"
    assert parse(Ref(allow_name=True), "my-app.v2") == "my-app.v2"
    assert bad(Ref(allow_name=True), "a b").message.startswith('invalid reference "a b"')


# -- Network, ListOf, FileMode ------------------------------------------------------------------

def test_network():
    value = parse(Network(), "10.0.0.1/8", "::1", "192.168.0.0/16")
    assert value == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"),
                     ipaddress.ip_network("192.168.0.0/16"))
    assert Network().format(value) == ["10.0.0.0/8", "::1/128", "192.168.0.0/16"]
    assert roundtrip(Network(), value) == value
    e = bad(Network(), "10.0.0.0/8", "nope")
    assert e.message == 'invalid network "nope": expected an IP network such as 10.0.0.0/8 or 127.0.0.1'
    assert e.index == 1


def test_list_of():
    paths = ListOf(Path())
    assert parse(paths, "a", "/b") == ("/etc/pyd/a", "/b")
    assert paths.expected == "one or more of: a path"
    assert roundtrip(paths, ("/x", "/y")) == ("/x", "/y")
    assert bad(ListOf(Integer()), "1", "x").index == 1
    assert bad(paths).message == "expected one or more of: a path, got no value"


@pytest.mark.parametrize("text, mode, canonical", [
    ("0660", 0o660, "0660"), ("660", 0o660, "0660"), ("0755", 0o755, "0755"),
    ("0000", 0, "0000"), ("4755", 0o4755, "04755"),
])
def test_file_mode(text, mode, canonical):
    assert parse(FileMode(), text) == mode
    assert FileMode().format(mode) == [canonical]
    assert roundtrip(FileMode(), mode) == mode


@pytest.mark.parametrize("text", ["0888", "66", "rw-", "0o660", "066600"])
def test_file_mode_invalid(text):
    assert bad(FileMode(), text).message == \
        f'invalid file mode "{text}": expected an octal file mode such as 0660'

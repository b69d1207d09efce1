"""Log formats, escaping, channels and routing, the Log: directives: unit tests, no processes."""

from __future__ import annotations

import json
import logging
import re
import sys
import zlib

import pytest

from pyd.config import ConfigError, load
from pyd.config.endpoint import Endpoint, EndpointType
from pyd.config.values import BadValue, ParseContext
from pyd.log.formats import (
    GelfFormat,
    JsonFormat,
    MessageFormat,
    SyslogFormat,
    TextFormat,
    escape_text,
)
from pyd.log.plan import LogSetupError, plan
from pyd.log.routing import Channels, Route, Router

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+)\s+\[(\d+)\] (\S+): (.*)\n",
                       re.S)


def record(msg="hello %s", args=("world",), level=logging.INFO, name="shop.views",
           exc=False, **extra) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    r = logging.LogRecord(name, level, "/srv/shop/views.py", 42, msg, args, exc_info)
    r.__dict__.update(extra)
    return r


# -- text ----------------------------------------------------------------------------------------

def test_text_line_has_time_level_pid_channel_message():
    r = record()
    line = TextFormat().format(r, r.getMessage())
    m = TEXT_LINE.fullmatch(line)
    assert m, line
    assert m.groups() == ("INFO", str(r.process), "shop.views", "hello world\n"[:-1])


def test_text_escapes_controls_so_a_message_cannot_forge_a_record():
    forged = "ok\n2024-01-01 00:00:00,000 ERROR   [1] pyd.master: forged\r\x1b[31mred\x00"
    r = record(forged, ())
    line = TextFormat().format(r, r.getMessage())
    lines = line.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("  2024-01-01")  # indented: not a record of its own
    assert "\r" not in line and "\x1b" not in line and "\x00" not in line
    assert "\\x0d" in line and "\\x1b[31mred" in line and "\\x00" in line


def test_text_traceback_is_indented_under_its_record():
    r = record("failed", (), level=logging.ERROR, exc=True)
    line = TextFormat().format(r, r.getMessage())
    first, *rest = line.rstrip("\n").split("\n")
    assert TEXT_LINE.fullmatch(first + "\n")
    assert rest and all(x.startswith("  ") for x in rest)
    assert "ValueError: boom" in line


def test_text_line_maker_matches_the_record_path():
    r = record("GET / 200", ())
    fmt = TextFormat()
    make = fmt.line_maker(r.name, logging.INFO, r.process)
    assert make("GET / 200", r.created) == fmt.format(r, r.getMessage())
    assert "\\x1b" in make("evil \x1b[2J", r.created)


def test_terminal_colours_the_level():
    r = record(level=logging.ERROR)
    assert "\x1b[31mERROR  \x1b[0m" in TextFormat(colour=True).format(r, r.getMessage())
    assert "\x1b" not in TextFormat(colour=False).format(r, r.getMessage())


def test_escape_text_leaves_clean_text_alone():
    assert escape_text("plain café ✓") == "plain café ✓"
    assert escape_text("a\tb") == "a\tb"  # tabs are kept
    assert escape_text("a\u2028b") == "a\\x2028b"  # a line separator is not


# -- json and message ----------------------------------------------------------------------------

def test_json_is_one_escaped_object_per_line_with_extras():
    r = record('quote " backslash \\ newline \n nul \x00 é', (), request_id="r-1", pool="web")
    line = JsonFormat().format(r, r.getMessage())
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.isascii() and "\x00" not in line
    obj = json.loads(line)
    assert obj["message"] == 'quote " backslash \\ newline \n nul \x00 é'
    assert obj["level"] == "info" and obj["channel"] == "shop.views" and obj["pid"] == r.process
    assert obj["request_id"] == "r-1" and obj["pool"] == "web"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", obj["time"])


def test_json_carries_the_exception():
    r = record("failed", (), level=logging.ERROR, exc=True)
    obj = json.loads(JsonFormat().format(r, r.getMessage()))
    assert "ValueError: boom" in obj["exception"]


def test_json_line_maker_escapes_too():
    make = JsonFormat().line_maker("pyd.http.access", logging.INFO, 7)
    obj = json.loads(make('"GET /\x1b HTTP/1.1"', 1700000000.5))
    assert obj["message"] == '"GET /\x1b HTTP/1.1"' and obj["pid"] == 7


def test_message_format_is_the_message_alone():
    fmt = MessageFormat()
    line = '127.0.0.1 - - [01/May/2024:12:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl" 0.001'
    assert fmt.line_maker("pyd.http.access", logging.INFO, 1)(line, 0.0) == line + "\n"
    assert fmt.format(record(line, ()), line) == line + "\n"
    assert fmt.line_maker("x", logging.INFO, 1)("a\nb", 0.0) == "a\n  b\n"


# -- syslog and gelf -----------------------------------------------------------------------------

def test_syslog_priority_stamp_host_and_tag():
    r = record("disk %s", ("full",), level=logging.ERROR)
    udp = SyslogFormat("text", "local0", "udp", "web1").format(r, r.getMessage())
    m = re.fullmatch(rb"<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) web1 pyd\[(\d+)\]: shop.views: disk full",
                     udp)
    assert m, udp
    assert int(m.group(1)) == 16 * 8 + 3  # local0, err
    unix = SyslogFormat("text", "daemon", "unix", "web1").format(r, r.getMessage())
    assert unix.startswith(b"<27>") and b" web1 " not in unix
    tcp = SyslogFormat("text", "user", "tcp", "web1").format(record("a\nb", ()), "a\nb")
    assert tcp.endswith(b"a#012b\n") and tcp.count(b"\n") == 1


def test_syslog_json_body():
    r = record(request_id="r-9")
    out = SyslogFormat("json", "user", "udp", "h").format(r, r.getMessage())
    body = out.split(b": ", 1)[1]
    assert json.loads(body)["request_id"] == "r-9"


def test_gelf_as_graypy_builds_it_with_extra_fields():
    r = record(request_id="r-2", pool="web")
    udp = GelfFormat("udp", "web1").format(r, r.getMessage())
    obj = json.loads(zlib.decompress(udp))
    assert obj["short_message"] == "hello world" and obj["host"] == "web1"
    assert obj["level"] == 6 and obj["_pid"] == r.process and obj["line"] == 42
    assert obj["_request_id"] == "r-2" and obj["_pool"] == "web"
    assert obj["_channel"] == "shop.views"
    tcp = GelfFormat("tcp", "web1").format(r, r.getMessage())
    assert tcp.endswith(b"\0") and json.loads(tcp[:-1])["_request_id"] == "r-2"
    line = GelfFormat("file", "web1").format(r, r.getMessage())
    assert line.endswith("\n") and json.loads(line)["host"] == "web1"


# -- channels and routing ------------------------------------------------------------------------

def test_channels_plain_names_take_children_and_globs_match_whole_names():
    c = Channels(["shop", "pyd.http*", "cron.?aily"])
    assert "shop" in c and "shop.views" in c and "shopping" not in c
    assert "pyd.http" in c and "pyd.http.access" in c and "pyd.master" not in c
    assert "cron.daily" in c and "cron.weekly" not in c
    assert "anything" in Channels(["*"])


def _route(channels, level, sink, **kw):
    return Route(Channels(channels), level, sink, TextFormat(), **kw)


def test_router_main_log_and_propagate_off():
    main = _route(["*"], logging.INFO, 1, main=True)
    errors = _route(["pyd.*", "shop"], logging.WARNING, 2)
    access = _route(["pyd.http.access"], logging.INFO, 3, propagate=False)
    router = Router([main, errors, access])
    sinks = lambda name, level: [s for s, _ in router.routes_for(name, level)]  # noqa: E731
    assert sinks("shop.views", logging.INFO) == [1]
    assert sinks("shop.views", logging.ERROR) == [1, 2]
    assert sinks("pyd.http.access", logging.INFO) == [3]  # kept out of the main log
    assert sinks("pyd.http.access", logging.WARNING) == [2, 3]
    assert sinks("other", logging.DEBUG) == []
    assert router.level == logging.INFO
    assert router.routes_for("shop.views", logging.ERROR) is router.routes_for("shop.views",
                                                                                logging.ERROR)


def test_router_fast_path_only_when_every_target_takes_a_line():
    main = _route(["*"], logging.INFO, 1, main=True)
    gelf = Route(Channels(["pyd.http.access"]), logging.INFO, 2, GelfFormat("udp", "h"))
    assert Router([main]).line_makers("pyd.http.access", logging.INFO, 1) is not None
    assert Router([main, gelf]).line_makers("pyd.http.access", logging.INFO, 1) is None


# -- the directives ------------------------------------------------------------------------------

def load_text(tmp_path, text):
    conf = tmp_path / "pyd.conf"
    conf.write_text(text)
    return load(str(conf), env={})


def test_log_sections_parse_and_plan(tmp_path):
    config = load_text(tmp_path, f"""
log-file {tmp_path}/pyd.log; log-level warning; log-rotate-size 10M;
Log:errors {{ channels pyd.*, shop.*; level error; file errors.log; format json;
              rotate-size 100M; rotate-every 1d; rotate-keep 14; compress zstd; }}
Log:graylog {{ gelf tcp://graylog.example.com; channels shop; }}
Log:sys {{ syslog unix:/dev/log; facility local3; format message; }}
Log:access {{ channels pyd.http.access; stdout; format message; propagate off; }}
""")
    routes = plan(config)
    assert [r.label for r in routes] == ["the main log", "Log:errors", "Log:graylog", "Log:sys",
                                         "Log:access"]
    main, errors, graylog, sys_, access = routes
    assert main.target.path == f"{tmp_path}/pyd.log" and main.level == logging.WARNING
    assert main.target.rotate_size == 10 << 20 and main.format == "text"
    assert errors.target.path == str(tmp_path / "errors.log")
    assert errors.target.rotation == (100 << 20, 86400.0, 14, "zstd")
    assert errors.channels == ("pyd.*", "shop.*") and errors.level == logging.ERROR
    assert graylog.target.endpoint == Endpoint("tcp", "graylog.example.com", 12201)
    assert graylog.format == "gelf"
    assert sys_.target.endpoint == Endpoint("unix", path="/dev/log") and sys_.facility == "local3"
    assert access.target.kind == "stdout" and not access.propagate


@pytest.mark.parametrize("body, message", [
    ("level info;", "needs a target"),
    ("file /tmp/x.log; stdout;", "one target"),
    ("gelf udp://h; format json;", "takes format gelf"),
    ("syslog udp://h; format gelf;", "format text, json or message"),
    ("stdout; rotate-size 1M;", "rotate-size applies to file targets only"),
    ("file /tmp/x.log; facility local0;", "facility applies to syslog"),
    ("gelf unix:/x;", "invalid target"),
    ("syslog ftp://h;", "invalid scheme"),
    ("gelf udp://h:99999;", "invalid port"),
    ("channels pyd/x; stdout;", "channel name or glob"),
    ("stdout; level loud;", "one of debug"),
])
def test_log_section_errors(tmp_path, body, message):
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, f"Log:x {{ {body} }}\n")
    assert message in e.value.format()


def test_two_routes_to_one_file_must_agree_on_rotation(tmp_path):
    config = load_text(tmp_path, f"""log-file {tmp_path}/a.log;
Log:a {{ file {tmp_path}/a.log; rotate-size 1M; }}
""")
    with pytest.raises(LogSetupError, match="different rotate"):
        plan(config)


@pytest.mark.parametrize("text, canonical", [
    ("udp://127.0.0.1:514", "udp://127.0.0.1:514"),
    ("tcp://logs.example.com", "tcp://logs.example.com:514"),
    ("logs:1514", "udp://logs:1514"),
    ("udp://[::1]:514", "udp://[::1]:514"),
    ("unix:/dev/log", "unix:/dev/log"),
])
def test_endpoint_round_trip(text, canonical):
    t = EndpointType(514, unix=True)
    ctx = ParseContext("/")
    value = t.parse_one(text, ctx)
    assert t.format_one(value) == canonical
    assert t.parse_one(canonical, ctx) == value


def test_endpoint_refuses_garbage():
    t = EndpointType(12201, unix=False)
    for bad in ("udp://", "udp://ho st", "tcp://[::1", "unix:/dev/log", "http://x"):
        with pytest.raises(BadValue):
            t.parse_one(bad, ParseContext("/"))

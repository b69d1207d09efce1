"""The corpus of bad configs: each must fail with one precise message at the right place.

Every case names the file, line and column the first problem points at and a specific part of
its message; the config text is inline and written to a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pyd.config import ConfigError, Override, load

NEST = "".join(f"{'  ' * i}x {{\n" for i in range(100)) + "}\n" * 100


@dataclass
class Case:
    id: str
    text: str | bytes  # the main file, pyd.conf (or `main`)
    where: str  # "file:line:col" relative to the temporary directory, or "command line" ...
    message: str  # a part of the first problem's message
    files: dict[str, str | bytes] = field(default_factory=dict)  # more files it may include
    env: dict[str, str] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    main: str = "pyd.conf"


def cli(name: str, value: str) -> Override:
    return Override(name, value, "command line", f"--{name}")


CASES = [
    # -- syntax --------------------------------------------------------------------------------
    Case("missing-semicolon-mid-file", "workers 4\nmax-requests 5;\n",
         "pyd.conf:1:10", "missing ';' after \"workers\""),
    Case("missing-semicolon-before-section", "user nobody;\nworkers 4\nPool:HTTPServer { listen 80; }\n",
         "pyd.conf:2:10", "missing ';' after \"workers\""),
    Case("missing-semicolon-before-unknown", "user nobody\nfrobnicate on;\n", "pyd.conf:1:12",
         "missing ';' after \"user\""),
    Case("missing-semicolon-before-block", "workers 4\nfoo { }\n", "pyd.conf:1:10",
         "missing ';' after \"workers\""),
    Case("bad-value-on-the-next-line", "max-requests\nlots;\n", "pyd.conf:2:1",
         '"max-requests": invalid integer "lots"'),
    Case("missing-semicolon-at-eof", "user nobody;\nworkers 4", "pyd.conf:2:10",
         "missing ';' at the end of the file"),
    Case("missing-semicolon-before-brace", "Pool:HTTPServer {\n    listen 80\n}\n",
         "pyd.conf:2:14", "missing ';' before '}'"),
    Case("missing-semicolon-in-block", "Pool:HTTPServer {\n    listen 80\n    app a:b;\n}\n",
         "pyd.conf:2:14", "missing ';' after \"listen\""),
    Case("stray-brace", "workers 4;\n}\nuser x;\n", "pyd.conf:2:1",
         "unexpected '}': there is no open block to close"),
    Case("missing-brace", "Pool:HTTPServer {\n    listen 80;\n", "pyd.conf:1:17",
         "missing '}': this block is never closed"),
    Case("missing-inner-brace",
         "Pool:HTTPServer {\n    listen 80;\n    location / {\n        app a:b;\n",
         "pyd.conf:3:16", "missing '}': this block is never closed"),
    Case("unterminated-string", 'user "nobody;\nworkers 4;\n', "pyd.conf:1:6",
         'unterminated string: the " is never closed'),
    Case("unterminated-raw-string", "workers 4;\nuser 'nobody;\n", "pyd.conf:2:6",
         "unterminated string: the ' is never closed"),
    Case("empty-statement", "workers 4;;\n", "pyd.conf:1:11",
         "unexpected ';': a directive needs a name"),
    Case("value-after-comma", "Pool:HTTPServer { listen 80,; }", "pyd.conf:1:28",
         "a value must follow ','"),
    Case("leading-comma", "workers, 4;", "pyd.conf:1:8", "unexpected ','"),
    Case("block-without-name", "{ workers 4; }", "pyd.conf:1:1",
         "unexpected '{': a block needs a name"),
    Case("quoted-directive-name", 'user x;\n"workers" 4;\n', "pyd.conf:2:1",
         "a directive name cannot be a quoted string"),
    Case("absurd-nesting", NEST, "pyd.conf:17:35",
         "blocks are nested too deeply (more than 16 levels)"),

    # -- names and scopes ----------------------------------------------------------------------
    Case("unknown-directive-suggestion", "user x;\nmax-request 100;\n", "pyd.conf:2:1",
         'unknown directive "max-request" (did you mean "max-requests"?)'),
    Case("unknown-directive", "frobnicate 1;", "pyd.conf:1:1", 'unknown directive "frobnicate"'),
    Case("unknown-directive-in-location",
         "Pool:HTTPServer {\n  listen 80;\n  location / { app a:b; proxy_pass x; }\n}",
         "pyd.conf:3:25", 'unknown directive "proxy_pass"'),
    Case("unknown-section-kind", "Poll:HTTPServer { listen 80; }", "pyd.conf:1:1",
         'unknown section kind "Poll" (did you mean "Pool"?)'),
    Case("unknown-pool-class", "Pool:HTTPServr { listen 80; }", "pyd.conf:1:1",
         'unknown pool class "HTTPServr" (did you mean "HTTPServer"?)'),
    Case("section-without-class", "Pool { listen 80; }", "pyd.conf:1:1",
         "a section header is Kind:Name, as in Pool:HTTPServer"),
    Case("section-header-too-long", "Pool:HTTPServer:a:b { listen 80; }", "pyd.conf:1:1",
         "a section header is Pool:HTTPServer[:instance]"),
    Case("section-bad-name", "App:x/y { class a:B; }", "pyd.conf:1:1",
         'invalid section name "x/y"'),
    Case("section-with-argument", "App:shop extra { class a:B; }", "pyd.conf:1:10",
         "a section header takes no arguments"),
    Case("section-without-body", "App:shop;", "pyd.conf:1:1",
         "section App:shop needs a body: App:shop { ... }"),
    Case("directive-in-wrong-scope", "Pool:HTTPServer {\n    listen 80;\n    workers 3;\n}",
         "pyd.conf:3:5", '"workers" is not allowed in Pool:HTTPServer; it belongs in the top level'),
    Case("pool-directive-at-top-level", "user x;\nlisten 80;", "pyd.conf:2:1",
         '"listen" is not allowed at the top level; it belongs in Pool:HTTPServer'),
    Case("section-inside-section", "Pool:HTTPServer {\n    listen 80;\n    App:x { class a:B; }\n}",
         "pyd.conf:3:5", "section App:x belongs at the top level, not inside Pool:HTTPServer"),
    Case("block-as-directive", "Pool:HTTPServer { listen 80; location /x/; }", "pyd.conf:1:30",
         '"location" needs a block: location /static/ { root /srv/static; }'),
    Case("directive-as-block", "workers { 4; }", "pyd.conf:1:1",
         '"workers" is a directive, not a block: write workers 4;'),
    Case("include-as-block", "include { a.conf; }", "pyd.conf:1:1",
         "include takes file patterns, not a block"),
    Case("bad-setting-name", "App:x {\n  class a:B;\n  9lives 1;\n}", "pyd.conf:3:3",
         'invalid setting name "9lives"'),

    # -- values --------------------------------------------------------------------------------
    Case("wrong-type", "workers many;", "pyd.conf:1:9",
         '"workers": invalid integer "many": expected an integer from 1 to 4096 or "auto" '
         "(example: workers 4;)"),
    Case("wrong-count", "user www data;", "pyd.conf:1:10",
         '"user": expected one value (a user name or uid), got 2'),
    Case("no-value", "user;", "pyd.conf:1:1",
         '"user": expected a user name or uid, got no value (example: user www-data;)'),
    Case("empty-value", 'user "";', "pyd.conf:1:6",
         '"user": expected a user name or uid, got an empty string'),
    Case("port-zero", "Pool:HTTPServer {\n    listen 0;\n}", "pyd.conf:2:12",
         '"listen": invalid port "0" in "0": expected 1 to 65535'),
    Case("port-too-big", "Pool:HTTPServer { listen 127.0.0.1:70000; }", "pyd.conf:1:26",
         'invalid port "70000" in "127.0.0.1:70000": expected 1 to 65535'),
    Case("workers-zero", "workers 0;", "pyd.conf:1:9",
         '"workers": 0 is out of range: expected an integer from 1 to 4096 or "auto"'),
    Case("negative-max-requests", "max-requests -1;", "pyd.conf:1:14",
         "-1 is out of range: expected an integer of at least 0"),
    Case("bad-size", "max-memory-usage 12X;", "pyd.conf:1:18",
         '"max-memory-usage": invalid size "12X": expected a size such as 512, 64K, 128M or 1G'),
    Case("bad-duration", "graceful-timeout 10 parsecs;", "pyd.conf:1:18",
         '"graceful-timeout": invalid duration "10 parsecs"'),
    Case("duration-too-fine", "graceful-timeout 0.0001s;", "pyd.conf:1:18",
         '"0.0001s" is finer than a millisecond'),
    Case("bad-boolean", "verbose-tty maybe;", "pyd.conf:1:13",
         '"verbose-tty": invalid boolean "maybe": expected on/off, yes/no or true/false'),
    Case("bad-choice", "log-level loud;", "pyd.conf:1:11",
         'invalid value "loud": expected one of debug, info, warning, error, critical'),
    Case("bad-address", "Pool:HTTPServer { listen 80, 1.2.3.4.5:80; }", "pyd.conf:1:30",
         'invalid IPv4 address "1.2.3.4.5" in "1.2.3.4.5:80"'),
    Case("bad-ipv6-address", "Pool:HTTPServer { listen [::g]:80; }", "pyd.conf:1:26",
         'invalid IPv6 address "::g" in "[::g]:80"'),
    Case("bad-reference", "App:shop { class shop.app; }", "pyd.conf:1:18",
         '"class": invalid reference "shop.app": expected module.path:attribute'),
    Case("bad-location-prefix", "Pool:HTTPServer { listen 80; location static/ { root /x; } }",
         "pyd.conf:1:39", '"location": invalid value "static/": expected a path prefix starting with /'),
    Case("location-two-arguments", "Pool:HTTPServer { listen 80; location /a /b { root /x; } }",
         "pyd.conf:1:30", '"location" takes one argument'),

    # -- include -------------------------------------------------------------------------------
    Case("missing-include", "user x;\ninclude missing.conf;\n", "pyd.conf:2:9",
         "include file {tmp}/missing.conf does not exist"),
    Case("include-without-pattern", "include;", "pyd.conf:1:1",
         "include needs a file or pattern: include conf.d/*.conf;"),
    Case("include-loop", "include a.conf;\n", "b.conf:2:9",
         "include loop: {tmp}/a.conf -> {tmp}/b.conf -> {tmp}/a.conf",
         files={"a.conf": "include b.conf;\n", "b.conf": "user x;\ninclude a.conf;\n"}),
    Case("error-in-included-file", "user x;\ninclude conf.d/*.conf;\n", "conf.d/10-pool.conf:3:12",
         'invalid port "0"',
         files={"conf.d/10-pool.conf": "# the pool\nPool:HTTPServer {\n    listen 0;\n}\n"}),
    Case("syntax-error-in-included-file", "include part.conf;\n", "part.conf:1:7",
         "missing ';' at the end of the file", files={"part.conf": "user x"}),
    Case("included-directory", "include sub;", "pyd.conf:1:9",
         "include {tmp}/sub is a directory (did you mean sub/*.conf?)",
         files={"sub/a.conf": "user x;\n"}),

    # -- strings and variables -------------------------------------------------------------------
    Case("unset-variable", "user ${WHO};", "pyd.conf:1:6",
         "environment variable WHO is not set (give a default with ${WHO:-value})"),
    Case("unset-variable-in-string", 'user x;\nApp:a { class a:B; v "a ${WHO} b"; }', "pyd.conf:2:25",
         "environment variable WHO is not set"),
    Case("bad-variable-name", "user ${1WHO};", "pyd.conf:1:6", "invalid variable name '1WHO'"),
    Case("unterminated-variable", "user ${WHO;", "pyd.conf:1:6", "unterminated ${...}"),
    Case("bad-escape", 'user "a\\qb";', "pyd.conf:1:8", "unknown escape sequence \\q in a string"),
    Case("bad-hex-escape", 'user "a\\x4Gb";', "pyd.conf:1:8", "unknown escape sequence \\x4G"),
    Case("invalid-utf8", b"user x;\nworkers \xe9\xff;\n", "pyd.conf:2:9",
         "invalid UTF-8 (byte 0xe9): config files are UTF-8"),
    Case("binary-file", b"user x;\nwor\x00kers 4;\n", "pyd.conf:2:4",
         "this is a binary file, not a config (it contains a NUL byte)"),

    # -- duplicates, requirements, cross-checks -------------------------------------------------
    Case("duplicate-directive", "workers 2;\nworkers 3;\n", "pyd.conf:2:1",
         'duplicate directive "workers" (first set at {tmp}/pyd.conf:1)'),
    Case("duplicate-directive-other-spelling", "max-requests 2;\nMAX_REQUESTS 3;\n",
         "pyd.conf:2:1", 'duplicate directive "max-requests"'),
    Case("duplicate-section", "Pool:HTTPServer { listen 80; }\npool:httpserver { listen 81; }\n",
         "pyd.conf:2:1", "duplicate section Pool:HTTPServer (first at {tmp}/pyd.conf:1)"),
    Case("duplicate-location",
         "Pool:HTTPServer {\n listen 80;\n location / { app a:b; }\n location / { app c:d; }\n}",
         "pyd.conf:4:2", "duplicate location / (first at {tmp}/pyd.conf:3)"),
    Case("duplicate-app-setting", "App:a {\n class a:B;\n colour red;\n Colour blue;\n}",
         "pyd.conf:4:2", 'duplicate setting "colour" (first set at {tmp}/pyd.conf:3)'),
    Case("required-missing", "user x;\nPool:HTTPServer { app a:b; }", "pyd.conf:2:1",
         'Pool:HTTPServer needs "listen", as in: listen 127.0.0.1:8080;'),
    Case("app-class-missing", "App:shop { colour red; }", "pyd.conf:1:1",
         'App:shop needs "class", as in: class examples.echo:EchoPool;'),
    Case("location-without-target", "Pool:HTTPServer {\n  listen 80;\n  location /x/ { index a.html; }\n}",
         "pyd.conf:3:3", "a location needs app, root or alias"),
    Case("root-and-alias", "Pool:HTTPServer {\n  listen 80;\n  location /x/ { root /a; alias /b; }\n}",
         "pyd.conf:3:27", "a location takes root or alias, not both"),
    Case("app-names-no-section", "App:shop { class a:B; }\nPool:HTTPServer { listen 80; app shopp; }",
         "pyd.conf:2:30", 'app "shopp" is neither module:attribute nor an App: section '
                          '(did you mean "shop"?)'),
    Case("min-more-than-max", "workers 4;\nmin-workers 5;\nmax-workers 2;\n", "pyd.conf:2:1",
         "min-workers 5 is more than max-workers 2"),
    Case("max-less-than-workers", "workers 4;\nmax-workers 2;\n", "pyd.conf:2:1",
         "max-workers 2 is less than workers 4"),

    # -- overrides -----------------------------------------------------------------------------
    Case("bad-override-value", "workers 2;", "command line",
         '"workers": invalid integer "x": expected an integer from 1 to 4096 or "auto" '
         "(example: --workers=4)", overrides=[cli("workers", "x")]),
    Case("unknown-override", "workers 2;", "command line",
         'unknown directive "workerz" in --workerz (did you mean "workers"?)',
         overrides=[cli("workerz", "3")]),
    Case("override-not-top-level", "workers 2;", "command line",
         '"listen" is not a top-level directive: --listen sets top-level directives only',
         overrides=[cli("listen", "80")]),
    Case("unknown-environment-override", "workers 2;", "environment",
         'unknown directive "x" in PYD_X', env={"PYD_X": "1"}),
    Case("bad-environment-override", "workers 2;", "environment",
         '"max-requests": invalid integer "lots"', env={"PYD_MAX_REQUESTS": "lots"}),
    Case("override-breaks-a-check", "min-workers 3;\nmax-workers 4;\n", "pyd.conf:1:1",
         "min-workers 3 is more than max-workers 2", overrides=[cli("max-workers", "2")]),

    # -- YAML ----------------------------------------------------------------------------------
    Case("yaml-syntax", "workers: 4\nuser: nobody\n  bad: 1\n", "pyd.yaml:3:6",
         "YAML: mapping values are not allowed here", main="pyd.yaml"),
    Case("yaml-unclosed-list", "user: x\nworkers: [4\n", "pyd.yaml:3:1",
         "YAML: while parsing a flow sequence: expected ',' or ']'", main="pyd.yaml"),
    Case("yaml-not-a-mapping", "- workers\n- 4\n", "pyd.yaml:1:1",
         "YAML: expected a mapping of directives and sections here", main="pyd.yaml"),
    Case("yaml-bad-key", "user: x\n? [a, b]\n: 1\n", "pyd.yaml:2:3",
         "YAML: a key must be a directive name or a section header", main="pyd.yaml"),
    Case("yaml-nested-list", "Pool:HTTPServer:\n  listen: [[80]]\n", "pyd.yaml:2:12",
         "YAML: expected a value (a string or a list of strings)", main="pyd.yaml"),
    Case("yaml-merge-key", "base: &b {workers: 3}\nuser: x\n<<: *b\n", "pyd.yaml:3:1",
         "YAML: merge keys (<<) are not supported", main="pyd.yaml"),
    Case("yaml-unknown-directive", "user: x\nmax-request: 100\n", "pyd.yaml:2:1",
         'unknown directive "max-request" (did you mean "max-requests"?)', main="pyd.yaml"),
    Case("yaml-bad-value", "Pool:HTTPServer:\n  listen: [80, 70000]\n", "pyd.yaml:2:16",
         'invalid port "70000"', main="pyd.yaml"),
    Case("yaml-directive-as-block", "workers:\n  count: 4\n", "pyd.yaml:1:1",
         '"workers" is a directive, not a block', main="pyd.yaml"),
    Case("access-log-target-unknown",
         "Log:access { file /tmp/a.log; }\nPool:HTTPServer { listen 80;\n"
         "    access-log-target Log:acess; }\n", "pyd.conf:3:5",
         'access-log-target "Log:acess": there is no such Log section '
         '(did you mean "Log:access"?)'),
    Case("access-log-target-not-a-log", "Pool:HTTPServer { listen 80; access-log-target x; }\n",
         "pyd.conf:1:48", 'invalid value "x": expected a Log section such as Log:access'),
    Case("yaml-included-error", "include: part.yaml\n", "part.yaml:2:10", "invalid integer",
         files={"part.yaml": "user: x\nworkers: lots\n"}, main="pyd.yaml"),
]


def write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def fail(tmp_path, case: Case) -> ConfigError:
    for name, content in case.files.items():
        write(tmp_path, name, content)
    path = write(tmp_path, case.main, case.text)
    with pytest.raises(ConfigError) as info:
        load(path, case.overrides, env=case.env)
    return info.value


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config(tmp_path, case):
    err = fail(tmp_path, case)
    problem = err.first
    assert problem.pos is not None, problem.message
    if ":" in case.where:
        name, line, column = case.where.rsplit(":", 2)
        where = (problem.pos.source.name, problem.pos.line, problem.pos.column)
        assert where == (str(tmp_path / name), int(line), int(column)), problem.format()
    else:
        assert str(problem.pos) == case.where, problem.format()
    assert case.message.replace("{tmp}", str(tmp_path)) in problem.message, problem.format()
    # whatever it is, it is shown in the compiler's format, never as a traceback
    assert err.format().startswith(f"{problem.pos}: error: {problem.message}")


def test_exact_format_of_one_message(tmp_path):
    err = fail(tmp_path, Case("", "user nobody;\n\n    max-request 100;\n", "", ""))
    assert err.format() == (
        f"{tmp_path}/pyd.conf:3:5: error: unknown directive \"max-request\" "
        "(did you mean \"max-requests\"?)\n"
        "        max-request 100;\n"
        "        ^~~~~~~~~~~")


def test_format_of_an_error_in_an_included_file(tmp_path):
    err = fail(tmp_path, Case("", "user x;\ninclude a.conf;\n", "", "",
                              files={"a.conf": "include b.conf;\n", "b.conf": "workers 0;\n"}))
    assert err.format() == (
        f"{tmp_path}/b.conf:1:9: error: \"workers\": 0 is out of range: expected an integer "
        "from 1 to 4096 or \"auto\" (example: workers 4;)\n"
        "    workers 0;\n"
        "            ^\n"
        f"  included from {tmp_path}/a.conf:1:9\n"
        f"  included from {tmp_path}/pyd.conf:2:9")


def test_format_of_a_command_line_error(tmp_path):
    err = fail(tmp_path, Case("", "", "", "", overrides=[cli("graceful-timeout", "soon")]))
    assert err.format() == (
        'command line: error: "graceful-timeout": invalid duration "soon": expected a duration '
        "such as 250ms, 10s, 5m, 1h 30m or 2d (example: --graceful-timeout=30s)\n"
        "    --graceful-timeout=soon\n"
        "                       ^~~~")


def test_tabs_are_kept_under_the_caret(tmp_path):
    err = fail(tmp_path, Case("", "Pool:HTTPServer {\n\tlisten\t0;\n}\n", "", ""))
    assert err.format().splitlines()[1:] == ["    \tlisten\t0;", "    \t      \t^"]


def test_every_problem_is_reported_at_once(tmp_path):
    err = fail(tmp_path, Case("", "workers 0;\nmax-request 1;\nPool:HTTPServer { listen 0; }\n"
                                  "log-level loud;\n", "", ""))
    assert [(p.pos.line, p.pos.column) for p in err.problems] == [(1, 9), (2, 1), (3, 26), (4, 11)]


def test_too_many_problems_stop_with_a_note(tmp_path):
    err = fail(tmp_path, Case("", "".join(f"nope{i} 1;\n" for i in range(50)), "", ""))
    assert len(err.problems) == 21
    assert err.problems[-1].message == "too many errors, stopping here"


def test_an_invalid_required_directive_is_not_also_missing(tmp_path):
    err = fail(tmp_path, Case("", "Pool:HTTPServer { listen 0; }", "", ""))
    assert len(err.problems) == 1


def test_a_cross_check_is_reported_once(tmp_path):
    err = fail(tmp_path, Case("", "min-workers 5;\nmax-workers 2;\n", "", ""))
    assert len(err.problems) == 1


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "none.conf"), env={})
    assert info.value.format() == f"error: config file {tmp_path}/none.conf does not exist"


def test_config_path_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path), env={})
    assert info.value.first.message == f"{tmp_path} is a directory, not a config file"

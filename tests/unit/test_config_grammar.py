"""Tests of the config language: statements, sections, strings, variables, include, YAML,
command-line and environment overrides, and where the config file is looked for.
"""

from __future__ import annotations

import os

import pytest

import pyd.config
from pyd.config import ConfigError, Override, find_config, load
from pyd.config.errors import Source
from pyd.config.language import parse_text
from pyd.config.printer import print_conf

POOL = "Pool:HTTPServer { listen 127.0.0.1:8080; app shop.wsgi:application; }\n"


@pytest.fixture
def conf(tmp_path):
    """conf(text, name="pyd.conf", env=None, overrides=()) -> Config, the file in tmp_path."""

    def write_and_load(text: str, name: str = "pyd.conf", env: dict | None = None,
                       overrides=()) -> pyd.config.Config:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return load(str(path), overrides, env={} if env is None else env)

    return write_and_load


def error(conf, text: str, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        conf(text, **kw)
    return info.value.first.message


def nodes(text: str, env: dict | None = None):
    return parse_text(Source("t.conf", text), {} if env is None else env)


# -- directives ---------------------------------------------------------------------------------

def test_directive_with_values(conf):
    c = conf("user www-data;\nworkers 4;\nmax-memory-usage 128M;\ngraceful-timeout 1h 30m;\n")
    assert c.user == "www-data"
    assert c.workers == 4
    assert c.max_memory_usage == 128 << 20
    assert c.settings["graceful-timeout"] == 5400.0


def test_statements_may_share_a_line_or_span_lines(conf):
    c = conf("user\n  nobody\n;workers 2; max-requests\n10;")
    assert (c.user, c.workers, c.max_requests) == ("nobody", 2, 10)


def test_flag_without_value_is_on(conf):
    c = conf("verbose-tty;\n" + POOL.replace("listen", "privileged; listen"))
    assert c.verbose_tty is True
    assert c.pools[0].privileged is True
    assert conf("verbose-tty off;").verbose_tty is False


@pytest.mark.parametrize("values", ["80, 81, 82", "80 81 82", "80,81 , 82", "80,\n  81\n  82"])
def test_list_values_by_commas_or_blanks(conf, values):
    c = conf(f"Pool:HTTPServer {{ listen {values}; app a:b; }}")
    assert [a.port for a in c.pools[0].listen] == [80, 81, 82]


def test_repeated_list_directive_accumulates(conf):
    c = conf("Pool:HTTPServer { listen 80; listen 81, 82; app a:b; }")
    assert [a.port for a in c.pools[0].listen] == [80, 81, 82]


def test_a_quoted_list_item_is_not_split(conf):
    c = conf("Pool:HTTPServer { listen 80; location / { root /x; index 'a b.html', \"c,d\"; } }")
    assert c.pools[0].blocks("location")[0].index == ("a b.html", "c,d")


@pytest.mark.parametrize("name", ["max-requests", "max_requests", "MAX-REQUESTS", "Max_Requests"])
def test_names_are_case_insensitive_and_dash_is_underscore(conf, name):
    assert conf(f"{name} 7;").max_requests == 7


def test_directive_names_the_same_twice_in_two_spellings_is_a_duplicate(conf):
    assert error(conf, "max-requests 1;\nMAX_REQUESTS 2;").startswith(
        'duplicate directive "max-requests"')


def test_unset_directives_take_their_defaults(conf):
    c = conf("user nobody;")
    assert c.max_requests == 0
    assert c.graceful_timeout == 30.0
    assert c.log_level == "info"
    assert c.settings.origin("max-requests").kind == "default"
    assert not c.settings.is_set("max-requests")


def test_an_empty_file_is_a_valid_config(conf):
    c = conf("")
    assert c.sections == ()
    assert conf("# only a comment\n\n").sections == ()


# -- sections and blocks ------------------------------------------------------------------------

def test_section_kind_and_name(conf):
    c = conf("App:shop { class shop.app:Shop; colour blue; }\n" + POOL.replace("shop.wsgi:application", "shop"))
    app = c.section("App:shop")
    assert (app.kind, app.name, app.cls, app.header) == ("App", "shop", None, "App:shop")
    assert app.extras() == {"colour": ("blue",)}


def test_section_kind_class_instance(conf):
    c = conf(POOL + "Pool:HTTPServer:admin { listen 127.0.0.1:8081; app a:b; }\n"
                    "Pool:FastCGI { listen unix:/run/f.sock; app a:b; }\n")
    assert [s.header for s in c.pools] == ["Pool:HTTPServer", "Pool:HTTPServer:admin",
                                           "Pool:FastCGI"]
    admin = c.section("Pool:HTTPServer:admin")
    assert (admin.kind, admin.cls, admin.name, admin.label) == ("Pool", "HTTPServer", "admin",
                                                                "admin")
    assert c.section("Pool:FastCGI").listen[0].path == "/run/f.sock"


def test_section_kinds_and_classes_are_case_insensitive(conf):
    c = conf("pool:httpserver:Admin { listen 80; app a:b; }")
    assert c.pools[0].header == "Pool:HTTPServer:Admin"


def test_user_pool_section_with_a_class(conf):
    c = conf("Pool:echo { class examples.echo:EchoPool; listen 7000; greeting hello; }")
    pool = c.section("Pool:echo")
    assert (pool.cls, pool.name) == (None, "echo")
    assert pool.settings["class"] == "examples.echo:EchoPool"
    assert pool.extras() == {"greeting": ("hello",)}


def test_blocks_with_arguments_inside_sections(conf):
    c = conf("""
        Pool:HTTPServer {
            listen 80;
            location /static/ { root /srv/static; }
            location / {
                app shop.wsgi:application;
            }
        }
    """)
    locations = c.pools[0].blocks("location")
    assert [loc.arg for loc in locations] == ["/static/", "/"]
    assert locations[0].root == "/srv/static"
    assert locations[1].app == "shop.wsgi:application"
    assert locations[0].header == "location /static/"


def test_blocks_nest_in_the_parse_tree():
    (outer,) = nodes("a { b x { c { d 1; } } }")
    b = outer.children[0]
    assert (outer.name, b.name, [w.text for w in b.args]) == ("a", "b", ["x"])
    assert b.children[0].children[0].name == "d"
    assert outer.depth == 3


def test_statements_keep_their_positions():
    directive, block = nodes("user x;\n  Pool:HTTPServer {\n    listen 80;\n  }\n")
    assert (directive.pos.line, directive.pos.column, directive.pos.length) == (1, 1, 4)
    assert (block.pos.line, block.pos.column) == (2, 3)
    assert block.children[0].args[0].pos.line == 3
    assert block.children[0].args[0].pos.column == 12


# -- comments -----------------------------------------------------------------------------------

def test_comments_run_to_the_end_of_the_line(conf):
    c = conf("# a comment; workers 9;\nworkers 3; # workers 5;\n#workers 6;\n")
    assert c.workers == 3


def test_hash_inside_a_word_is_not_a_comment(conf):
    assert conf("user a#b;").user == "a#b"
    assert conf("user a #b;\n;").user == "a"


def test_hash_inside_quotes_is_not_a_comment(conf):
    assert conf('user "a #b";').user == "a #b"
    assert conf("user '#b';").user == "#b"


# -- strings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("written, text", [
    ("plain", "plain"),
    ('"two words"', "two words"),
    (r'"say \"hi\""', 'say "hi"'),
    (r'"back\\slash"', "back\\slash"),
    (r'"a\nb"', "a\nb"),
    (r'"a\tb"', "a\tb"),
    (r'"a\rb"', "a\rb"),
    (r'"\x41\x7a\x7E"', "Az~"),
    (r'"\$HOME"', "$HOME"),
    (r'"it\'s"', "it's"),
    ("'raw \\n stays'", "raw \\n stays"),
    ("'no ${VAR} here'", "no ${VAR} here"),
    ("'say \"hi\"'", 'say "hi"'),
    ('""', ""),
    ("'line\nbreak'", "line\nbreak"),
    ('"é 😀"', "é 😀"),
    ("a$b", "a$b"),
    ("$", "$"),
])
def test_string_forms(conf, written, text):
    c = conf(f"App:a {{ class a:B; value {written}; }}")
    assert c.apps[0].extras()["value"] == (text,)


def test_a_bare_word_stops_at_a_quote():
    (node,) = nodes('value abc"d e";')
    assert [w.text for w in node.args] == ["abc", "d e"]
    assert [w.quoted for w in node.args] == [False, True]


@pytest.mark.parametrize("written", [r'"\q"', r'"\x4G"', r'"\x4"', r'"\u0041"'])
def test_unknown_escapes_are_errors(conf, written):
    assert error(conf, f"user {written};").startswith("unknown escape sequence")


# -- environment variables ------------------------------------------------------------------------

def test_variables_in_bare_words_and_double_quotes(conf):
    env = {"WHO": "www-data", "PORT": "9000", "SP": "a b"}
    c = conf('user ${WHO};\nPool:HTTPServer { listen 127.0.0.1:${PORT}; app a:b; }\n'
             'App:x { class a:B; v "${SP}!" pre${SP}post; }', env=env)
    assert c.user == "www-data"
    assert c.pools[0].listen[0].port == 9000
    assert c.section("App:x").extras()["v"] == ("a b!", "prea bpost")


def test_variable_defaults(conf):
    assert conf("user ${WHO:-nobody};").user == "nobody"
    assert conf("user ${WHO:-nobody};", env={"WHO": "root"}).user == "root"
    assert conf("user ${WHO:-nobody};", env={"WHO": ""}).user == "nobody"
    assert conf('user "${WHO:-a b}";').user == "a b"


def test_variables_are_not_substituted_in_raw_strings_or_after_backslash(conf):
    assert conf("user '${WHO}';").user == "${WHO}"
    assert conf(r'user "\${WHO}";').user == "${WHO}"


def test_an_empty_variable_without_default_is_empty(conf):
    assert conf("App:a { class a:B; v x${E}y; }", env={"E": ""}).apps[0].extras()["v"] == ("xy",)


def test_an_unset_variable_is_an_error_naming_it(conf):
    assert error(conf, "user ${NOBODY_SET_THIS};") == (
        "environment variable NOBODY_SET_THIS is not set (give a default with "
        "${NOBODY_SET_THIS:-value})")


def test_variables_come_from_the_process_environment_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PYD_WHO", "daemon")
    path = tmp_path / "pyd.conf"
    path.write_text("user ${TEST_PYD_WHO};")
    assert load(str(path)).user == "daemon"


# -- include ------------------------------------------------------------------------------------

def test_include_is_relative_to_the_including_file(tmp_path, conf):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.conf").write_text("include b.conf;\n")
    (tmp_path / "sub" / "b.conf").write_text("workers 3;\n")
    c = conf("include sub/a.conf;")
    assert c.workers == 3
    assert str(c.settings.origin("workers")) == f"{tmp_path}/sub/b.conf:1"


def test_include_does_not_depend_on_the_working_directory(tmp_path, monkeypatch, conf):
    (tmp_path / "part.conf").write_text("workers 2;\n")
    monkeypatch.chdir("/")
    assert conf("include part.conf;").workers == 2


def test_include_glob_in_sorted_order(tmp_path, conf):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-b.conf").write_text("App:b { class a:B; }\n")
    (tmp_path / "conf.d" / "10-a.conf").write_text("App:a { class a:B; }\n")
    (tmp_path / "conf.d" / "notes.txt").write_text("not a config {\n")
    c = conf("include conf.d/*.conf;")
    assert [s.header for s in c.sections] == ["App:a", "App:b"]


def test_include_several_patterns_in_one_directive(tmp_path, conf):
    (tmp_path / "a.conf").write_text("workers 2;\n")
    (tmp_path / "b.conf").write_text("user x;\n")
    c = conf("include a.conf, b.conf;")
    assert (c.workers, c.user) == (2, "x")


def test_include_wildcard_matching_nothing_is_fine(conf):
    assert conf("include conf.d/*.conf;\nworkers 2;").workers == 2


def test_include_missing_file_is_an_error(tmp_path, conf):
    assert error(conf, "include nothere.conf;") == \
        f"include file {tmp_path}/nothere.conf does not exist"


def test_include_a_directory_suggests_a_glob(tmp_path, conf):
    (tmp_path / "conf.d").mkdir()
    assert error(conf, "include conf.d;") == \
        f"include {tmp_path}/conf.d is a directory (did you mean conf.d/*.conf?)"


def test_include_inside_a_block(tmp_path, conf):
    (tmp_path / "locations.conf").write_text("location /x/ { root /srv/x; }\nlisten 81;\n")
    c = conf("Pool:HTTPServer { listen 80; include locations.conf; app a:b; }")
    pool = c.pools[0]
    assert [a.port for a in pool.listen] == [80, 81]
    assert pool.blocks("location")[0].root == "/srv/x"


def test_include_with_a_variable(tmp_path, conf):
    (tmp_path / "prod.conf").write_text("workers 8;\n")
    assert conf("include ${STAGE:-prod}.conf;").workers == 8


def test_include_loop_is_reported_with_its_chain(tmp_path, conf):
    (tmp_path / "a.conf").write_text("include b.conf;\n")
    (tmp_path / "b.conf").write_text("include a.conf;\n")
    message = error(conf, "include a.conf;")
    assert message == (f"include loop: {tmp_path}/a.conf -> {tmp_path}/b.conf -> "
                       f"{tmp_path}/a.conf")


def test_a_file_including_itself_is_a_loop(tmp_path, conf):
    message = error(conf, "include pyd.conf;")
    assert message == f"include loop: {tmp_path}/pyd.conf -> {tmp_path}/pyd.conf"


def test_the_same_file_twice_side_by_side_is_not_a_loop(tmp_path, conf):
    (tmp_path / "loc.conf").write_text("location /x/ { root /x; }\n")
    c = conf("Pool:HTTPServer { listen 80; include loc.conf; }\n"
             "Pool:FastCGI { listen 81; include loc.conf; }\n")
    assert [p.blocks("location")[0].arg for p in c.pools] == ["/x/", "/x/"]


def test_relative_paths_in_an_included_file_are_relative_to_it(tmp_path, conf):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.conf").write_text("pidfile run/pyd.pid;\n")
    assert conf("include sub/p.conf;").pidfile == f"{tmp_path}/sub/run/pyd.pid"


# -- the YAML twin ------------------------------------------------------------------------------

TWIN_CONF = """
user nobody;
workers 4;
max-memory-usage 256M;
graceful-timeout 1h 30m;
verbose-tty;
Pool:HTTPServer {
    listen 127.0.0.1:8080, [::1]:8080;
    privileged;
    location /static/ { root static; index index.html, "a b.html"; }
    location / { app shop.wsgi:application; }
}
Pool:HTTPServer:admin { listen unix:admin.sock; app shop; }
App:shop { class shop.app:Shop; colour blue; sizes 1 2 3; flag; }
"""

TWIN_YAML = """
user: nobody
workers: 4
max-memory-usage: 256M
graceful-timeout: 1h 30m
verbose-tty:
Pool:HTTPServer:
  listen: [127.0.0.1:8080, "[::1]:8080"]
  privileged: on
  location /static/:
    root: static
    index: [index.html, a b.html]
  location /:
    app: shop.wsgi:application
Pool:HTTPServer:admin:
  listen: unix:admin.sock
  app: shop
App:shop:
  class: shop.app:Shop
  colour: blue
  sizes: [1, 2, 3]
  flag:
"""


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_twin_gives_the_same_config(conf, suffix):
    from_conf = conf(TWIN_CONF)
    from_yaml = conf(TWIN_YAML, name="pyd" + suffix)
    assert from_yaml == from_conf
    assert print_conf(from_yaml) == print_conf(from_conf)
    assert from_yaml.section("Pool:HTTPServer").listen[1].host == "::1"


def test_yaml_values_are_the_language_strings(conf):
    c = conf("workers: auto\nmax-idle: 90\nmax-memory-usage: 1g\nlog-level: DEBUG\n",
             name="pyd.yaml")
    assert c.settings["max-idle"] == 90.0
    assert c.max_memory_usage == 1 << 30
    assert c.log_level == "debug"


def test_yaml_scalar_is_split_like_the_language_but_list_items_are_whole(conf):
    c = conf("Pool:HTTPServer:\n  listen: 80, 81 82\n  location /:\n    root: /x\n"
             "    index: [a b.html, 'c,d']\n", name="pyd.yaml")
    assert [a.port for a in c.pools[0].listen] == [80, 81, 82]
    assert c.pools[0].blocks("location")[0].index == ("a b.html", "c,d")


def test_yaml_printer_leaves_numbers_and_booleans_unquoted(conf):
    from pyd.config.printer import print_yaml

    text = print_yaml(conf("workers 3;\nverbose-tty off;\nuser 'null';\n"))
    assert text.splitlines() == ["user: 'null'", "workers: 3", "verbose-tty: off"]
    assert print_yaml(conf("verbose-tty;\nApp:a { class a:B; extra; }")).splitlines() == [
        "verbose-tty:", "App:a:", "  class: a:B", "  extra:"]


def test_yaml_variables_and_raw_strings(conf):
    env = {"WHO": "daemon"}
    assert conf("user: ${WHO}\n", name="a.yaml", env=env).user == "daemon"
    assert conf('user: "${WHO}"\n', name="b.yaml", env=env).user == "daemon"
    assert conf("user: '${WHO}'\n", name="c.yaml", env=env).user == "${WHO}"
    assert conf('user: !raw "${WHO}"\n', name="d.yaml", env=env).user == "${WHO}"


def test_yaml_block_header_with_a_quoted_argument(conf):
    c = conf("Pool:HTTPServer:\n  listen: 80\n  \"location '/a b/'\":\n    root: /x\n",
             name="pyd.yaml")
    assert c.pools[0].blocks("location")[0].arg == "/a b/"


def test_yaml_anchors_and_aliases(conf):
    c = conf("workers: &n 3\nmax-recycling: *n\nPool:HTTPServer: &pool\n  listen: 80\n"
             "Pool:FastCGI: *pool\n", name="pyd.yaml")
    assert (c.workers, c.max_recycling) == (3, 3)
    assert [p.listen[0].port for p in c.pools] == [80, 80]


def test_yaml_include(tmp_path, conf):
    (tmp_path / "more.yaml").write_text("workers: 3\n")
    (tmp_path / "more.conf").write_text("user x;\n")
    c = conf("include: [more.yaml, more.conf]\n", name="pyd.yaml")
    assert (c.workers, c.user) == (3, "x")


def test_conf_may_include_yaml(tmp_path, conf):
    (tmp_path / "part.yml").write_text("App:a:\n  class: a:B\n")
    assert conf("include part.yml;").apps[0].name == "a"


def test_yaml_syntax_error_carries_yamls_line_and_column(tmp_path, conf):
    with pytest.raises(ConfigError) as info:
        conf("workers: 4\nuser: nobody\n  bad: 1\n", name="pyd.yaml")
    problem = info.value.first
    assert (problem.pos.line, problem.pos.column) == (3, 6)
    assert problem.message == "YAML: mapping values are not allowed here"
    assert problem.pos.source.name == str(tmp_path / "pyd.yaml")


# -- overrides: --name=value and PYD_NAME ----------------------------------------------------------

def cli(name: str, value: str | None) -> Override:
    return Override(name, value, "command line", f"--{name}")


def test_command_line_overrides_the_file(conf):
    c = conf("workers 2;\nmax-requests 5;", overrides=[cli("workers", "6")])
    assert c.workers == 6
    assert str(c.settings.origin("workers")) == "command line"
    assert c.settings.origin("max-requests").kind == "file"


def test_command_line_flag_and_spellings(conf):
    c = conf("", overrides=[cli("verbose_tty", None), cli("MAX-REQUESTS", "9")])
    assert c.verbose_tty is True and c.max_requests == 9


def test_environment_overrides_the_file(conf):
    c = conf("workers 2;", env={"PYD_WORKERS": "5", "PYD_MAX_REQUESTS": "7", "OTHER": "x"})
    assert (c.workers, c.max_requests) == (5, 7)
    assert str(c.settings.origin("workers")) == "environment (PYD_WORKERS)"
    assert str(c.settings.origin("max-requests")) == "environment (PYD_MAX_REQUESTS)"


def test_command_line_wins_over_environment(conf):
    c = conf("workers 2;", env={"PYD_WORKERS": "5"}, overrides=[cli("workers", "6")])
    assert c.workers == 6
    assert str(c.settings.origin("workers")) == "command line"


def test_pyd_config_is_not_an_override(conf):
    assert conf("workers 2;", env={"PYD_CONFIG": "/elsewhere.conf"}).workers == 2


def test_override_list_values_and_relative_paths(conf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = conf("", overrides=[cli("pythonpath", "a, /b"), cli("pidfile", "run/p.pid")])
    assert c.pythonpath == (f"{tmp_path}/a", "/b")
    assert c.pidfile == f"{tmp_path}/run/p.pid"


def test_overrides_appear_in_the_printed_config(conf):
    c = conf("workers 2;", overrides=[cli("workers", "6")])
    assert "workers 6;" in print_conf(c)


def test_an_override_can_repair_a_cross_check(conf):
    c = conf("min-workers 3;\nmax-workers 2;", overrides=[cli("max-workers", "4")])
    assert (c.min_workers, c.max_workers) == (3, 4)


# -- finding the config file --------------------------------------------------------------------

def test_find_config_explicit_wins(monkeypatch):
    monkeypatch.setattr(pyd.config, "SEARCH_PATH", ("/nonexistent/a.conf",))
    assert find_config("given.conf", env={"PYD_CONFIG": "env.conf"}) == "given.conf"


def test_find_config_from_the_environment(monkeypatch):
    monkeypatch.setattr(pyd.config, "SEARCH_PATH", ("/nonexistent/a.conf",))
    assert find_config(None, env={"PYD_CONFIG": "env.conf"}) == "env.conf"
    monkeypatch.setenv("PYD_CONFIG", "from-os.conf")
    assert find_config() == "from-os.conf"


def test_find_config_search_path_in_order(tmp_path, monkeypatch):
    first, second, third = (tmp_path / n for n in ("first.conf", "second.conf", "third.conf"))
    monkeypatch.setattr(pyd.config, "SEARCH_PATH", (str(first), str(second), str(third)))
    third.write_text("")
    assert find_config(None, env={}) == str(third)
    second.write_text("")
    assert find_config(None, env={}) == str(second)
    first.write_text("")
    assert find_config(None, env={}) == str(first)


def test_find_config_relative_entry_is_shown_relative(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pyd.conf").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pyd.config, "SEARCH_PATH", ("/nonexistent/pyd.conf", "./conf/pyd.conf"))
    assert find_config(None, env={}) == os.path.join("conf", "pyd.conf")


def test_find_config_nothing_found(monkeypatch):
    monkeypatch.setattr(pyd.config, "SEARCH_PATH", ("/nonexistent/a.conf", "/nonexistent/b.conf"))
    with pytest.raises(ConfigError) as info:
        find_config(None, env={"PYD_CONFIG": ""})
    assert info.value.first.message == (
        "no configuration file found (looked for /nonexistent/a.conf, /nonexistent/b.conf); "
        "give one with -c FILE or PYD_CONFIG")


def test_default_search_path_is_the_documented_one():
    assert pyd.config.SEARCH_PATH == ("/etc/pyd/pyd.conf", "/etc/pyd.conf", "./conf/pyd.conf")


# -- the Config it gives ------------------------------------------------------------------------

def test_config_is_read_only(conf):
    c = conf("workers 3;\n" + POOL)
    with pytest.raises(AttributeError, match="read-only"):
        c.settings.workers = 4
    with pytest.raises(AttributeError, match="no directive 'nope'"):
        c.settings.nope  # noqa: B018


def test_config_can_be_copied_and_pickled(conf):
    import copy
    import pickle

    c = conf("workers 3;\n" + POOL)
    for twin in (copy.deepcopy(c), copy.copy(c), pickle.loads(pickle.dumps(c))):
        assert twin == c
        assert twin.workers == 3
        assert str(twin.settings.origin("workers")).endswith("pyd.conf:1")
        assert twin.pools[0].app == "shop.wsgi:application"

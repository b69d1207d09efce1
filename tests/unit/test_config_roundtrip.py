"""Property tests of the printer and a fuzz test of the loader.

Random valid configs must survive `--print conf` and `--print yaml` unchanged; random bytes and
random mutations of valid configs may fail, but only ever with a ConfigError.
"""

from __future__ import annotations

import ipaddress
import os
import pickle
import tempfile
from pathlib import Path as FilePath

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pyd.config import ConfigError, load
from pyd.config.directives import REGISTRY
from pyd.config.model import Config, Section
from pyd.config.printer import print_conf, print_yaml
from pyd.config.registry import MAIN
from pyd.config.values import (
    MAX_DURATION,
    AddressType,
    Boolean,
    Choice,
    Count,
    Duration,
    Integer,
    ListOf,
    Path,
    Ref,
    Size,
    String,
)

REPO = FilePath(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="pyd-roundtrip-") as d:
        yield FilePath(d)


def load_text(workdir: FilePath, text: str | bytes, name: str = "pyd.conf") -> Config:
    path = workdir / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load(str(path), env={})


# -- writing words the way people do --------------------------------------------------------------

# Text with everything that needs care: quotes, backslashes, $ and ${, '#', ';', braces, commas,
# blanks, newlines, tabs, control characters, non-ASCII letters and emoji.
ODD = st.lists(st.one_of(
    st.sampled_from(list("\"'\\$;{}#,: \n\t\r\x01\x7f") + ["${", "${X}", "\\n", "é", "😀", "\u2028"]),
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\0"),
), min_size=1, max_size=12).map("".join)

BARE_SAFE = set("\"',;{}#$\\")


@st.composite
def written(draw, text: str) -> str:
    """`text` as a user might write it: bare, raw '...', or "..." with escapes."""
    forms = ["double"]
    if text and not any(c.isspace() or c in BARE_SAFE for c in text):
        forms.append("bare")
    if "'" not in text:
        forms.append("raw")
    form = draw(st.sampled_from(forms))
    if form == "bare":
        return text
    if form == "raw":
        return f"'{text}'"
    out = []
    for c in text:
        if c in '"\\$':
            out.append("\\" + c)
        elif c == "\n":
            out.append(draw(st.sampled_from(["\\n", "\n"])))
        elif c == "\t":
            out.append(draw(st.sampled_from(["\\t", "\t", "\\x09"])))
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x80 and draw(st.booleans()) and c.isalnum():
            out.append(f"\\x{ord(c):02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)
SEGMENT = st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True).filter(lambda s: s not in (".", ".."))
PATH = st.builds(lambda abs_, parts: ("/" if abs_ else "") + "/".join(parts),
                 st.booleans(), st.lists(SEGMENT, min_size=1, max_size=4))


@st.composite
def integer(draw, vtype: Integer) -> str:
    lo = vtype.min if vtype.min is not None else -10**6
    hi = vtype.max if vtype.max is not None else 10**9
    return str(draw(st.integers(lo, hi)))


@st.composite
def size(draw) -> str:
    n, unit = draw(st.integers(0, 4096)), draw(st.sampled_from(["", "k", "K", "m", "M", "g", "G"]))
    return f"{n}{unit}"


@st.composite
def duration(draw) -> str:
    units = draw(st.lists(st.sampled_from(["d", "h", "m", "s", "ms"]), min_size=1, max_size=4,
                          unique=True))
    order = ["d", "h", "m", "s", "ms"]
    parts = [f"{draw(st.integers(0, 99))}{u}" for u in sorted(units, key=order.index)]
    text = draw(st.sampled_from([" ".join(parts), "".join(parts)]))
    if draw(st.booleans()):
        text = str(draw(st.integers(0, MAX_DURATION // 1000)))
    return text


@st.composite
def address(draw) -> str:
    port = draw(st.integers(1, 65535))
    kind = draw(st.sampled_from(["v4", "v6", "star", "port", "unix", "name"]))
    if kind == "v4":
        return f"{ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))}:{port}"
    if kind == "v6":
        return f"[{ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))}]:{port}"
    if kind == "star":
        return f"*:{port}"
    if kind == "port":
        return str(port)
    if kind == "unix":
        return "unix:" + draw(PATH)
    return draw(st.from_regex(r"[a-z][a-z0-9]{0,6}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True)) \
        + f":{port}"


REF = st.builds(lambda mod, attr, call: f"{mod}:{attr}{'()' if call else ''}",
                st.from_regex(r"[a-z_][a-z0-9_]{0,5}(\.[a-z_][a-z0-9_]{0,5}){0,2}", fullmatch=True),
                st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True), st.booleans())


@st.composite
def value_for(draw, vtype) -> str | None:
    """The value part of a directive of this type, as written; None: a type we cannot draw."""
    if isinstance(vtype, Count):
        return draw(st.one_of(st.just("auto"), integer(vtype)))
    if isinstance(vtype, Integer):
        return draw(integer(vtype))
    if isinstance(vtype, Size):
        return draw(size())
    if isinstance(vtype, Duration):
        return draw(duration())
    if isinstance(vtype, Boolean):
        return draw(st.sampled_from(["", "on", "off", "yes", "no", "true", "false", "1", "0"]))
    if isinstance(vtype, Choice):
        return draw(st.sampled_from(vtype.options)).upper()
    if isinstance(vtype, Path):
        return draw(written(draw(PATH)))
    if isinstance(vtype, ListOf) and isinstance(vtype.item, Path | String):
        items = draw(st.lists(PATH, min_size=1, max_size=3))
        return draw(st.sampled_from([", ", " ", ","])).join(draw(written(i)) for i in items)
    if isinstance(vtype, String) and vtype.pattern is None:
        return draw(written(draw(ODD)))
    if isinstance(vtype, AddressType):
        return ", ".join(draw(st.lists(address(), min_size=1, max_size=3)))
    if isinstance(vtype, Ref):
        return draw(REF)
    return None


def spell(draw, name: str) -> str:
    """Names are case-insensitive and '-' is '_'."""
    if draw(st.booleans()):
        return name
    return draw(st.sampled_from([name.upper(), name.replace("-", "_"), name.title()]))


# -- whole configs ------------------------------------------------------------------------------

def _url_prefix(text: str) -> str:
    """A location prefix: '/' and anything but control characters, as a URL path may hold."""
    return "/" + "".join(c for c in text if not (ord(c) < 0x20 or c == "\x7f"))


@st.composite
def location(draw, prefix: str) -> str:
    target = draw(st.sampled_from(["root", "alias", "app"]))
    body = [f"{target} {draw(REF) if target == 'app' else draw(written(draw(PATH)))};"]
    if draw(st.booleans()):
        files = draw(st.lists(ODD.filter(lambda t: t.strip()), min_size=1, max_size=3))
        body.append("index " + ", ".join(draw(written(f)) for f in files) + ";")
    return f"location {draw(written(prefix))} {{ {' '.join(body)} }}"


@st.composite
def extras(draw) -> list[str]:
    names = draw(st.lists(NAME, max_size=4, unique_by=lambda n: n.lower().replace("_", "-")))
    lines = []
    for name in names:
        words = draw(st.lists(ODD, max_size=3))
        lines.append(" ".join([name] + [draw(written(w)) for w in words]) + ";")
    return lines


@st.composite
def config_text(draw) -> str:
    lines = []
    for name, spec in REGISTRY.directives_in(MAIN).items():
        if not draw(st.booleans()):
            continue
        value = draw(value_for(spec.type))
        if value is None:
            continue
        lines.append(f"{spell(draw, name)} {value};".replace(" ;", ";"))
    if any(line.lower().startswith(("min", "max_w", "max-w")) for line in lines):
        lines = [line for line in lines if not line.lower().replace("_", "-").startswith(
            ("min-workers", "max-workers", "workers"))]
    apps = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), max_size=3,
                         unique=True))
    for app in apps:
        body = [f"class {draw(REF)};"] + (["privileged;"] if draw(st.booleans()) else [])
        body += draw(extras())
        lines.append(f"App:{app} {{\n    " + "\n    ".join(draw(st.permutations(body))) + "\n}")
    headers = draw(st.lists(st.sampled_from(["Pool:HTTPServer", "Pool:FastCGI"]), max_size=3))
    seen = set()
    for i, header in enumerate(headers):
        if header in seen:
            header += f":site{i}"
        seen.add(header)
        body = [f"listen {', '.join(draw(st.lists(address(), min_size=1, max_size=3)))};"]
        if draw(st.booleans()):
            body.append("privileged;")
        if apps and draw(st.booleans()):
            body.append(f"app {draw(st.sampled_from(apps))};")
        elif draw(st.booleans()):
            body.append(f"app {draw(REF)};")
        prefixes = draw(st.lists(ODD.map(_url_prefix), max_size=3, unique=True))
        body += [draw(location(p)) for p in prefixes]
        lines.append(f"{header} {{\n    " + "\n    ".join(body) + "\n}")
    if draw(st.booleans()):
        body = ["class my.pool:Pool;", f"listen {draw(address())};"] + draw(extras())
        lines.append("Pool:custom {\n    " + "\n    ".join(body) + "\n}")
    return "\n".join(lines) + "\n"


def semantic(config: Config) -> tuple:
    """Everything a config says, as plain values: what printing must not lose."""

    def section(s: Section) -> tuple:
        return (s.header, s.arg, tuple(s.settings.explicit()),
                tuple((e.name, e.words) for e in s.extra), tuple(section(c) for c in s.children))

    return tuple(config.settings.explicit()), tuple(section(s) for s in config.sections)


@given(config_text())
@SETTINGS
def test_print_conf_then_load_gives_the_same_config(workdir, text):
    config = load_text(workdir, text)
    printed = print_conf(config)
    again = load_text(workdir, printed, "printed.conf")
    assert semantic(again) == semantic(config)
    assert again == config
    assert print_conf(again) == printed
    # The master receives its config pickled (load_apart): nothing may be lost on the way.
    assert pickle.loads(pickle.dumps(config)) == config


@given(config_text())
@SETTINGS
def test_print_yaml_then_load_gives_the_same_config(workdir, text):
    config = load_text(workdir, text)
    twin = load_text(workdir, print_yaml(config), "twin.yaml")
    assert semantic(twin) == semantic(config)
    assert twin == config
    assert print_conf(twin) == print_conf(config)
    assert print_yaml(twin) == print_yaml(config)


def test_the_bundled_config_round_trips(workdir):
    config = load(str(REPO / "conf" / "pyd.conf"), env={})
    assert load_text(workdir, print_conf(config)) == config
    assert load_text(workdir, print_yaml(config), "bundled.yaml") == config


# -- fuzzing ------------------------------------------------------------------------------------

SEEDS = [
    (REPO / "conf" / "pyd.conf").read_text(),
    'user "a\\x41\\n\\t"; workers auto; graceful-timeout 1h 30m;\n'
    "App:s { class a:B; k 'r' \"${HOME:-x}\" 1, 2; }\n"
    "Pool:HTTPServer:z { listen [::1]:80, unix:/x; app s;\n"
    "  location /a/ { root /x; index a, 'b c'; } }\ninclude conf.d/*.conf;\n",
]
YAML_SEED = ("workers: 4\nPool:HTTPServer:\n  listen: [80, '[::1]:81']\n  location /x/:\n"
             "    root: /a\nApp:s:\n  class: a:B\n  k: [1, '2', \"${HOME:-x}\"]\n")
PIECES = list(";{}\"'#$\\,:\n \t-_*[]&!?%|>") + [
    "${", "${X", "}", "include ", "Pool:", "App:", "location /", "\x00", "\xff", "é", "\r",
    "\u2028", "²", "*", "- ", "? ", "!!python/object ", "&a ", "*a", "{{{{{{{{{{{{{{{{{{{{",
]


def only_config_errors(workdir: FilePath, data: bytes, name: str) -> None:
    try:
        load_text(workdir, data, name)
    except ConfigError as e:
        assert e.problems
        assert pickle.loads(pickle.dumps(e)).format() == e.format()  # load_apart


@st.composite
def mutated(draw, seed: str) -> bytes:
    chars = list(seed)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert" or not chars:
            chars.insert(at, draw(st.sampled_from(PIECES)))
        elif op == "delete":
            del chars[min(at, len(chars) - 1)]
        else:
            chars[min(at, len(chars) - 1)] = draw(st.sampled_from(PIECES))
    return "".join(chars).encode("utf-8", "surrogatepass")


@given(st.binary(max_size=400))
@settings(max_examples=150, deadline=None)
def test_random_bytes_only_raise_config_errors(workdir, data):
    only_config_errors(workdir, data, "fuzz.conf")
    only_config_errors(workdir, data, "fuzz.yaml")


@given(st.sampled_from(SEEDS).flatmap(mutated))
@settings(max_examples=300, deadline=None)
def test_mutated_configs_only_raise_config_errors(workdir, data):
    only_config_errors(workdir, data, "mutant.conf")


@given(mutated(YAML_SEED))
@settings(max_examples=150, deadline=None)
def test_mutated_yaml_only_raises_config_errors(workdir, data):
    only_config_errors(workdir, data, "mutant.yaml")


@given(config_text().flatmap(mutated))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_random_configs_only_raise_config_errors(workdir, data):
    assume(data)
    only_config_errors(workdir, data, "mutant2.conf")


def test_fuzz_seeds_are_valid(workdir):
    for i, seed in enumerate(SEEDS):
        load_text(workdir, seed, f"seed{i}.conf")
    load_text(workdir, YAML_SEED, "seed.yaml")


def test_workdir_is_not_the_repository(workdir):
    assert not os.path.realpath(workdir).startswith(str(REPO))

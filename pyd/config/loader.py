"""Config text (the nginx-like language or YAML) to a tree of positioned nodes.

Owns reading files, environment substitution, YAML and `include`; language.py owns the lark
grammar. What the nodes mean is decided later against the directive registry (validate.py).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Mapping

from pyd.config.errors import ConfigError, Position, Source
from pyd.config.tree import (  # noqa: F401  (the names others read from the loader)
    MAX_DEPTH,
    RAW_TAG,
    Node,
    Word,
    normalize_name,
    substitute,
)

MAX_INCLUDE_DEPTH = 16
MAX_FILES = 1000
MAX_FILE_SIZE = 16 << 20
YAML_SUFFIXES = (".yaml", ".yml")


# -- YAML --------------------------------------------------------------------------------------

def parse_yaml(source: Source, env: Mapping[str, str] | None = None) -> list[Node]:
    """Parse the YAML twin: keys are directives or block headers, values the same strings."""
    import yaml

    env = os.environ if env is None else env
    try:
        root = yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = ": ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        pos = Position(source, mark.line + 1, mark.column + 1) if mark else None
        raise ConfigError(f"YAML: {msg}", pos) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML: {e}", Position(source, 1, 1)) from None
    except RecursionError:
        raise ConfigError(f"blocks are nested too deeply (more than {MAX_DEPTH} levels)",
                          Position(source, 1, 1)) from None
    if root is None:
        return []
    budget = [200_000]  # aliases can make a small file a huge tree
    return _yaml_block(root, source, env, 0, budget)


def _yaml_pos(node, source: Source, length: int | None = None) -> Position:
    mark = node.start_mark
    if length is None:
        length = max(1, node.end_mark.index - mark.index) if node.end_mark.line == mark.line else 1
    return Position(source, mark.line + 1, mark.column + 1, length)


def _yaml_block(mapping, source: Source, env: Mapping[str, str], depth: int,
                budget: list[int]) -> list[Node]:
    import yaml

    if not isinstance(mapping, yaml.MappingNode):
        raise ConfigError("YAML: expected a mapping of directives and sections here",
                          _yaml_pos(mapping, source))
    if depth > MAX_DEPTH:
        raise ConfigError(f"blocks are nested too deeply (more than {MAX_DEPTH} levels)",
                          _yaml_pos(mapping, source))
    nodes = []
    for key, value in mapping.value:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError("YAML: the document is too large (aliases?)", _yaml_pos(key, source))
        if not isinstance(key, yaml.ScalarNode) or not key.value.strip():
            raise ConfigError("YAML: a key must be a directive name or a section header",
                              _yaml_pos(key, source))
        if key.tag.endswith(":merge"):
            raise ConfigError("YAML: merge keys (<<) are not supported; write the directives "
                              "out, or share them with include", _yaml_pos(key, source))
        name, kpos, args = _yaml_header(key, source, env)
        if isinstance(value, yaml.MappingNode):
            children = _yaml_block(value, source, env, depth + 1, budget)
            nodes.append(Node(name, kpos, args, children,
                              1 + max((c.depth for c in children), default=0)))
            continue
        in_list = isinstance(value, yaml.SequenceNode)
        for item in value.value if in_list else [value]:
            if not isinstance(item, yaml.ScalarNode):
                raise ConfigError("YAML: expected a value (a string or a list of strings)",
                                  _yaml_pos(item, source))
            if item.tag.endswith(":null") and item.style is None:
                continue  # `privileged:` is a flag
            args.append(_yaml_word(item, source, env, whole=in_list))
        nodes.append(Node(name, kpos, args))
    return nodes


def _yaml_header(key, source: Source, env: Mapping[str, str]) -> tuple[str, Position, list[Word]]:
    """A key's name and arguments, read as the language reads them (`location '/a b/'`)."""
    start = _yaml_pos(key, source)
    # A plain key starts where its text does; a quoted one a character later.
    offset = start.column + (0 if key.style is None else 1)

    from pyd.config.language import lex  # lark: see parse_source

    tokens = lex(key.value)
    tokens = tokens[:1] + [t for t in tokens[1:] if t.type != "_COMMA"]  # as in `listen a, b;`
    if not tokens or any(t.type not in ("WORD", "DQSTRING", "SQSTRING") for t in tokens) \
            or tokens[0].type != "WORD":
        raise ConfigError("YAML: a key must be a directive name or a section header",
                          _yaml_pos(key, source))

    def at(tok, length: int) -> Position:
        if tok.line == 1 and key.start_mark.line == key.end_mark.line:
            return Position(source, start.line, offset + tok.column - 1, length)
        return Position(source, start.line, start.column, 1)

    words = []
    for tok in tokens[1:]:
        raw = str(tok)
        pos = at(tok, len(raw))
        if tok.type == "SQSTRING":
            words.append(Word(raw[1:-1], pos, quoted=True))
            continue
        inner = (1, len(raw) - 1) if tok.type == "DQSTRING" else (0, len(raw))
        text, from_env = substitute(raw, *inner, tok.type == "DQSTRING", env,
                                    lambda offset, length, pos=pos: pos)
        words.append(Word(text, pos, quoted=tok.type == "DQSTRING", from_env=from_env))
    return str(tokens[0]), at(tokens[0], len(tokens[0])), words


def _yaml_word(item, source: Source, env: Mapping[str, str], whole: bool) -> Word:
    """One value; `whole`: an item of a YAML list, never split on blanks and commas."""
    pos = _yaml_pos(item, source)
    text, from_env = item.value, False
    if item.style != "'" and item.tag != RAW_TAG:
        text, from_env = substitute(text, 0, len(text), False, env, lambda offset, length: pos)
    return Word(text, pos, quoted=whole or item.style is not None, from_env=from_env)


# -- files and include -------------------------------------------------------------------------

def read_source(path: str, included_from: Position | None = None) -> Source:
    """Read a config file as UTF-8 text, refusing binaries and invalid encodings with positions."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file", included_from) from None
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", included_from) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", included_from) from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(f"{path} is larger than {MAX_FILE_SIZE >> 20} MB: not a config file",
                          included_from)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\0")
    if nul >= 0:
        src = Source(path, data[:nul].decode("utf-8", "replace"), included_from)
        line, col = _line_col(data, nul)
        raise ConfigError("this is a binary file, not a config (it contains a NUL byte)",
                          Position(src, line, col))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        src = Source(path, data.decode("utf-8", "replace"), included_from)
        line, col = _line_col(data, e.start)
        raise ConfigError(f"invalid UTF-8 (byte 0x{data[e.start]:02x}): config files are UTF-8",
                          Position(src, line, col)) from None
    return Source(path, text, included_from)


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    return line, col


def parse_source(source: Source, env: Mapping[str, str] | None = None) -> list[Node]:
    if source.name.endswith(YAML_SUFFIXES):
        return parse_yaml(source, env)

    # Imported here, not above: lark and its tables (some 5 MB) stay out of the master, which
    # parses in a child (config.load_apart). Not a cycle: language needs only tree.py.
    from pyd.config.language import parse_text

    return parse_text(source, env)


def load_file(path: str, env: Mapping[str, str] | None = None,
              sources: list[str] | None = None) -> list[Node]:
    """Read and parse a config file with every include expanded in place.

    `sources` gets every file read, the main one first, and the directory of every include
    pattern (a file dropped there later is read on the next update): see unsafe_sources().
    """
    state = _IncludeState(env, sources)
    source = read_source(path)
    state.sources.append(path)
    return state.expand(parse_source(source, env), [os.path.realpath(path)], [path])


def unsafe_sources(sources: Iterable[str]) -> list[str]:
    """One line for each config file or include directory that anyone but root could change:
    what they write there runs as root (a `Process:`, a privileged app). Empty when pyd is
    not root."""
    if os.geteuid() != 0:
        return []
    out, seen = [], set()
    for path in sources:
        why = _writers(os.path.abspath(path))
        if why and why not in seen:
            seen.add(why)
            out.append(f"{path} can be changed by others: {why}")
    return out


def _writers(path: str) -> str | None:
    """Why a user other than root can change `path` or a directory above it (config imports
    nothing else of pyd: pyd.system.trust.writers() says the same for the rest)."""
    import stat

    while True:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None:
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
            if st.st_uid != 0:
                return f"the {kind} {path} belongs to uid {st.st_uid}"
            if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
                return f"the {kind} {path} is writable by gid {st.st_gid}"
            if st.st_mode & stat.S_IWOTH and not sticky:
                return f"the {kind} {path} is writable by everyone"
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


class _IncludeState:
    def __init__(self, env: Mapping[str, str] | None, sources: list[str] | None = None):
        self.env = env
        self.files = 0
        self.sources = [] if sources is None else sources

    def expand(self, nodes: list[Node], chain: list[str], names: list[str],
               depth: int = 0) -> list[Node]:
        """Replace include directives by what they include; `depth`: blocks around `nodes`."""
        out: list[Node] = []
        for node in nodes:
            if node.key == "include":
                if node.is_block:
                    raise ConfigError("include takes file patterns, not a block", node.pos)
                if not node.args:
                    raise ConfigError("include needs a file or pattern: include conf.d/*.conf;",
                                      node.pos)
                for word in node.args:
                    for path in self.matches(word):
                        out.extend(self.include(path, word, chain, names, depth))
                continue
            if node.is_block and depth + 1 > MAX_DEPTH:  # each file was fine; together they nest
                raise ConfigError(f"blocks are nested too deeply (more than {MAX_DEPTH} levels)",
                                  node.pos)
            if node.children:
                node.children = self.expand(node.children, chain, names, depth + 1)
            out.append(node)
        return out

    def matches(self, word: Word) -> Iterator[str]:
        base = os.path.dirname(word.pos.source.name) if word.pos.source.is_file else os.getcwd()
        pattern = os.path.join(base, os.path.expanduser(word.text))
        if glob.has_magic(pattern):
            self.sources.append(_fixed_part(pattern))
            yield from (p for p in sorted(glob.glob(pattern)) if os.path.isfile(p))
            return
        if not os.path.exists(pattern):
            raise ConfigError(f"include file {pattern} does not exist", word.pos)
        if os.path.isdir(pattern):
            raise ConfigError(f"include {pattern} is a directory (did you mean "
                              f"{os.path.join(word.text, '*.conf')}?)", word.pos)
        yield pattern

    def include(self, path: str, word: Word, chain: list[str], names: list[str],
                depth: int) -> list[Node]:
        real = os.path.realpath(path)
        if real in chain:
            loop = " -> ".join(names[chain.index(real):] + [path])
            raise ConfigError(f"include loop: {loop}", word.pos)
        if len(chain) > MAX_INCLUDE_DEPTH:
            raise ConfigError(f"includes are nested too deeply (more than {MAX_INCLUDE_DEPTH})",
                              word.pos)
        self.files += 1
        if self.files > MAX_FILES:
            raise ConfigError(f"more than {MAX_FILES} included files", word.pos)
        source = read_source(path, included_from=word.pos)
        self.sources.append(path)
        nodes = parse_source(source, self.env)
        return self.expand(nodes, chain + [real], names + [path], depth)


def _fixed_part(pattern: str) -> str:
    """The directory a glob pattern's matches are in, up to its first wildcard."""
    parts = pattern.split(os.sep)
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return os.sep.join(parts[:i]) or os.sep
    return os.path.dirname(pattern)

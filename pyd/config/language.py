"""The nginx-like language: the lark grammar, the parser that builds Nodes, syntax errors.

Imported only where a config is parsed: the parser and its tables stay out of the master's
memory, and so out of every worker it forks (see config.load_apart).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import lark

from pyd.config.errors import ConfigError, Position, Source
from pyd.config.tree import MAX_DEPTH, Node, Word, substitute

_GRAMMAR = (Path(__file__).with_name("grammar.lark")).read_text()
_TOKEN_NAMES = {"_SEMI": "';'", "_LBRACE": "'{'", "_RBRACE": "'}'", "_COMMA": "','",
                "WORD": "a word", "DQSTRING": "a string", "SQSTRING": "a string",
                "$END": "end of file"}


class _Builder(lark.Transformer):
    """Turns the parser's reductions into Nodes as it goes (no tree is built)."""

    def __init__(self) -> None:
        super().__init__()
        self.source: Source | None = None
        self.env: Mapping[str, str] = os.environ
        self.open_blocks = 0

    def lbrace(self, tok: lark.Token) -> lark.Token:
        """A lexer callback: counting braces as they are read finds the first block too deep."""
        self.open_blocks += 1
        if self.open_blocks > MAX_DEPTH:
            raise ConfigError(f"blocks are nested too deeply (more than {MAX_DEPTH} levels)",
                              Position(self.source, tok.line, tok.column))
        return tok

    def rbrace(self, tok: lark.Token) -> lark.Token:
        self.open_blocks = max(0, self.open_blocks - 1)
        return tok

    def start(self, items: list[Node]) -> list[Node]:
        return items

    def directive(self, children: list) -> Node:
        name, *values = children
        return Node(str(name), self._pos(name), [self._word(t) for t in values])

    def block(self, children: list) -> Node:
        name = children[0]
        args = [self._word(t) for t in children[1:] if isinstance(t, lark.Token)]
        items = [c for c in children[1:] if isinstance(c, Node)]
        depth = 1 + max((c.depth for c in items), default=0)
        return Node(str(name), self._pos(name), args, items, depth)

    def _pos(self, tok: lark.Token) -> Position:
        length = len(tok) if tok.line == tok.end_line else 1
        return Position(self.source, tok.line, tok.column, length)

    def _word(self, tok: lark.Token) -> Word:
        raw = str(tok)
        if tok.type == "SQSTRING":
            return Word(raw[1:-1], self._pos(tok), quoted=True)
        if tok.type == "DQSTRING":
            text, from_env = self._expand(raw, tok, 1, len(raw) - 1, escapes=True)
            return Word(text, self._pos(tok), quoted=True, from_env=from_env)
        text, from_env = self._expand(raw, tok, 0, len(raw), escapes=False)
        return Word(text, self._pos(tok), from_env=from_env)

    def _expand(self, raw: str, tok: lark.Token, start: int, end: int,
                escapes: bool) -> tuple[str, bool]:
        return substitute(raw, start, end, escapes, self.env,
                          lambda offset, length: self._at(tok, raw, offset, length))

    def _at(self, tok: lark.Token, raw: str, offset: int, length: int) -> Position:
        """The position of raw[offset] inside a token that may span lines."""
        before = raw[:offset]
        newlines = before.count("\n")
        if newlines:
            column = offset - before.rfind("\n")
        else:
            column = tok.column + offset
        return Position(self.source, tok.line + newlines, column, length)


class _Lexer(lark.lexer.Lexer):
    """The grammar's terminals as one regular expression, matched by `re` in C: lark's own
    lexer takes a Python step for every token, half the time of a parse. The terminals of
    this language never compete (none can start where another does), so the first match is
    the only one."""

    pattern: re.Pattern | None = None
    ignore: frozenset[str] = frozenset()

    def __init__(self, lexer_conf) -> None:
        cls = type(self)
        cls.ignore = frozenset(lexer_conf.ignore)
        cls.pattern = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})"
                                          for t in lexer_conf.terminals))

    def lex(self, text: str):
        return _scan(text, _builder)


def _scan(text: str, builder: _Builder | None = None):
    """Tokens with lark's positions (1-based lines and columns, end exclusive); braces are
    counted by `builder` as they are read. UnexpectedCharacters where no token starts."""
    match, ignore, Token = _Lexer.pattern.match, _Lexer.ignore, lark.Token
    pos, end, line, line_start = 0, len(text), 1, 0
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise lark.UnexpectedCharacters(text, pos, line, pos - line_start + 1)
        kind, stop = m.lastgroup, m.end()
        newlines = text.count("\n", pos, stop)
        if newlines:
            end_line = line + newlines
            end_start = text.rindex("\n", pos, stop) + 1
        else:
            end_line, end_start = line, line_start
        if kind not in ignore:
            tok = Token(kind, m.group(), pos, line, pos - line_start + 1, end_line,
                        stop - end_start + 1, stop)
            if builder is not None and kind in ("_LBRACE", "_RBRACE"):
                builder.lbrace(tok) if kind == "_LBRACE" else builder.rbrace(tok)
            yield tok
        pos, line, line_start = stop, end_line, end_start


_lock = threading.Lock()
_builder = _Builder()
_parser = lark.Lark(_GRAMMAR, parser="lalr", lexer=_Lexer, transformer=_builder)


def parse_text(source: Source, env: Mapping[str, str] | None = None) -> list[Node]:
    """Parse one source of the language into nodes (includes not yet expanded)."""
    with _lock:
        _builder.source = source
        _builder.env = os.environ if env is None else env
        _builder.open_blocks = 0
        try:
            return _parser.parse(source.text)
        except lark.UnexpectedInput as e:
            raise _syntax_error(source, e) from None
        finally:
            _builder.source = None


def _syntax_error(source: Source, e: lark.UnexpectedInput) -> ConfigError:
    """Explain a parse failure the way a person would, from the tokens before it."""
    text = source.text
    at_end = isinstance(e, lark.UnexpectedToken) and e.token.type == "$END"
    stop = len(text) if at_end or e.pos_in_stream is None else e.pos_in_stream
    tokens, opened = _tokens_before(text, stop)
    prev = tokens[-1] if tokens else None

    def at(line: int, col: int, length: int = 1) -> Position:
        return Position(source, line, col, length)

    def after(tok: lark.Token) -> Position:
        return at(tok.end_line, tok.end_column)

    if isinstance(e, lark.UnexpectedCharacters):
        ch = text[e.pos_in_stream]
        if ch in "\"'":
            return ConfigError(f"unterminated string: the {ch} is never closed",
                               at(e.line, e.column))
        if text.startswith("${", e.pos_in_stream):
            return ConfigError("unterminated ${...}: write ${NAME} or ${NAME:-default}",
                               at(e.line, e.column, 2))
        return ConfigError(f"unexpected character {ch!r}", at(e.line, e.column))

    tok = e.token if isinstance(e, lark.UnexpectedToken) else None
    kind = tok.type if tok is not None else "$END"
    if kind == "$END":
        if opened:
            brace = opened[-1]
            return ConfigError("missing '}': this block is never closed", at(brace.line, brace.column))
        if prev is not None:
            return ConfigError("missing ';' at the end of the file", after(prev))
        return ConfigError("unexpected end of file", at(1, 1))
    here = at(tok.line, tok.column, len(tok))
    prev_kind = prev.type if prev is not None else None
    if kind == "_RBRACE":
        if prev_kind in ("WORD", "DQSTRING", "SQSTRING"):
            return ConfigError("missing ';' before '}'", after(prev))
        if prev_kind == "_COMMA":
            return ConfigError("a value must follow ','", at(prev.line, prev.column))
        return ConfigError("unexpected '}': there is no open block to close", here)
    if kind == "_SEMI":
        if prev_kind == "_COMMA":
            return ConfigError("a value must follow ','", at(prev.line, prev.column))
        return ConfigError("unexpected ';': a directive needs a name", here)
    if kind == "_COMMA":
        return ConfigError("unexpected ','", here)
    if kind == "_LBRACE":
        if prev_kind == "_COMMA":
            return ConfigError("a value must follow ','", at(prev.line, prev.column))
        return ConfigError("unexpected '{': a block needs a name, as in location /static/ { ... }",
                           here)
    if kind in ("DQSTRING", "SQSTRING"):
        return ConfigError("a directive name cannot be a quoted string", here)
    expected = ", ".join(sorted({_TOKEN_NAMES.get(t, t) for t in getattr(e, "expected", ())}))
    return ConfigError(f"unexpected {_TOKEN_NAMES.get(kind, kind)}"
                       + (f" (expected {expected})" if expected else ""), here)


def _tokens_before(text: str, stop: int) -> tuple[list[lark.Token], list[lark.Token]]:
    """The tokens before offset `stop`, and the '{' still open there."""
    tokens: list[lark.Token] = []
    opened: list[lark.Token] = []
    try:
        for tok in _scan(text):
            if tok.start_pos >= stop:
                break
            tokens.append(tok)
            if tok.type == "_LBRACE":
                opened.append(tok)
            elif tok.type == "_RBRACE" and opened:
                opened.pop()
    except lark.UnexpectedCharacters:
        pass
    return tokens, opened


def lex(text: str) -> list[lark.Token]:
    """The tokens of one line of the language (a YAML key read as a header); [] if it has a
    character the language does not know."""
    try:
        return list(_scan(text))
    except lark.UnexpectedInput:
        return []

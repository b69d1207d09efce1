"""Static files for `location /x/ { root ...; }` or `{ alias ...; }`, as a WSGI app.

Files go out with sendfile (through wsgi.file_wrapper), with ETag and Last-Modified, 304s,
byte ranges (one range: 206; several: multipart/byteranges), If-Range, and precompressed
`.br`/`.gz` siblings. Nothing outside the root is ever served: dot-segments are resolved
before routing, encoded slashes and NUL bytes are refused, and symlinks must stay inside.
Dotfiles (a path segment starting with ".", such as .git/ or .env) are not found unless the
location says `allow-dotfiles on`; /.well-known/ (RFC 8615) is served either way.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from email.utils import formatdate, parsedate_to_datetime

from pyd.web.compress import accepts, choose
from pyd.web.routing import redirect_location
from pyd.web.wsgi import FileWrapper

MAX_RANGES = 16
MAX_OFFSET = (1 << 63) - 1  # off_t: a larger Range number is 416, as nginx answers
_RANGE = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))


class StaticFiles:
    def __init__(self, directory: str, alias: bool, prefix: str,
                 index: tuple[str, ...] = ("index.html",), dotfiles: bool = False):
        self.directory = os.path.realpath(directory)
        self.alias = alias
        self.prefix = prefix
        self.index = index
        self.dotfiles = dotfiles

    @classmethod
    def from_location(cls, loc) -> StaticFiles:
        s = loc.settings
        dotfiles = s["allow-dotfiles"]
        if s["alias"] is not None:
            return cls(s["alias"], True, loc.arg, tuple(s["index"]), dotfiles)
        return cls(s["root"], False, loc.arg, tuple(s["index"]), dotfiles)

    def __call__(self, environ: dict, start_response):
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", b"Method Not Allowed\n",
                          [("Allow", "GET, HEAD")])
        raw = environ.get("RAW_URI") or ""
        path = environ.get("PATH_INFO", "") if self.alias else (
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        if "\0" in path or _ENCODED_SEPARATOR.search(raw.partition("?")[0]):
            return _plain(start_response, "400 Bad Request", b"Bad Request\n")
        if not self.dotfiles and "." in path and self._dotfile(path):
            return _not_found(start_response)  # as if absent: a scan learns nothing
        full = os.path.join(self.directory, path.lstrip("/"))
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return _not_found(start_response)
        except OSError:
            return _plain(start_response, "403 Forbidden", b"Forbidden\n")
        if not self._inside(full):  # a symlink out of the root: not even its kind shows
            return _not_found(start_response)
        if stat.S_ISDIR(st.st_mode):
            if not path.endswith("/") and path != "":
                location = redirect_location(
                    environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") + "/",
                    environ.get("QUERY_STRING", ""))
                return _plain(start_response, "301 Moved Permanently", b"Moved Permanently\n",
                              [("Location", location)])
            for name in self.index:
                candidate = os.path.join(full, name)
                try:
                    st = os.stat(candidate)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and self._inside(candidate):
                    full = candidate
                    break
            else:
                return _plain(start_response, "403 Forbidden", b"Forbidden\n")
        if not stat.S_ISREG(st.st_mode):
            return _not_found(start_response)
        return self._serve(environ, start_response, full, st, method)

    def _dotfile(self, path: str) -> bool:
        """A segment below the directory starts with "." (dot-segments were resolved before
        routing). The location's own prefix is the operator's choice, not checked; a leading
        /.well-known/ (RFC 8615) is not a dotfile."""
        rel = "/" + path.lstrip("/")
        prefix = self.prefix
        if not self.alias and prefix.endswith("/") and rel.startswith(prefix):
            rel = rel[len(prefix) - 1:]
        if rel.startswith("/.well-known/") or rel == "/.well-known":
            rel = rel[12:]
        return "/." in rel

    def _inside(self, full: str) -> bool:
        real = os.path.realpath(full)
        return real == self.directory or real.startswith(self.directory + os.sep)

    def _serve(self, environ: dict, start_response, full: str, st: os.stat_result,
               method: str):
        ctype, _ = mimetypes.guess_type(full)
        ctype = ctype or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        encoding = None
        accept = environ.get("HTTP_ACCEPT_ENCODING", "")
        if accept:
            siblings = {}
            for coding, suffix in _PRECOMPRESSED:
                if accepts(accept, coding):
                    try:
                        cst = os.stat(full + suffix)
                    except OSError:
                        continue
                    if stat.S_ISREG(cst.st_mode) and self._inside(full + suffix):
                        siblings[coding] = (full + suffix, cst)
            if siblings:  # the client's preference (q-values) decides, not our order
                encoding = choose(accept, tuple(siblings))
                full, st = siblings[encoding]
        size = st.st_size
        etag = f'"{int(st.st_mtime):x}-{size:x}{"-" + encoding if encoding else ""}"'
        last_modified = formatdate(st.st_mtime, usegmt=True)
        headers = [("Content-Type", ctype), ("Last-Modified", last_modified), ("ETag", etag),
                   ("Accept-Ranges", "bytes")]
        if encoding:
            headers.append(("Content-Encoding", encoding))
        if accept or encoding:
            headers.append(("Vary", "Accept-Encoding"))
        if _not_modified(environ, etag, st.st_mtime):
            start_response("304 Not Modified", headers)
            return []
        ranges = _ranges(environ.get("HTTP_RANGE"), size) if _if_range(
            environ, etag, st.st_mtime) else None
        if ranges == "unsatisfiable":
            return _plain(start_response, "416 Range Not Satisfiable", b"",
                          [("Content-Range", f"bytes */{size}")])
        try:
            f = open(full, "rb")
        except OSError:
            return _plain(start_response, "403 Forbidden", b"Forbidden\n")
        if not ranges:
            start_response("200 OK", headers + [("Content-Length", str(size))])
            return environ["wsgi.file_wrapper"](f, 65536) if method == "GET" else _closing(f)
        if len(ranges) == 1:
            start, end = ranges[0]
            f.seek(start)
            start_response("206 Partial Content", headers + [
                ("Content-Range", f"bytes {start}-{end}/{size}"),
                ("Content-Length", str(end - start + 1))])
            return FileWrapper(f, 65536) if method == "GET" else _closing(f)
        return _multipart(start_response, f, ranges, size, ctype, headers, method)


def _offset(digits: str) -> int | None:
    """A Range number, None past what a file offset can be (a 5,000-digit one would make
    int() refuse, and the answer a 500)."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > 19:
        return None
    value = int(digits)
    return value if value <= MAX_OFFSET else None


def _plain(start_response, status: str, body: bytes, extra: list | None = None):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *(extra or [])])
    return [body]


def _not_found(start_response):
    return _plain(start_response, "404 Not Found", b"Not Found\n")


class _closing(list):
    """An empty body that still closes the file (HEAD)."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def close(self) -> None:
        self.f.close()


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etag_matches(header: str, etag: str, weak: bool = True) -> bool:
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    for tag in header.split(","):
        tag = tag.strip()
        if weak:
            tag = tag.removeprefix("W/")
        if tag == bare:
            return True
    return False


def _not_modified(environ: dict, etag: str, mtime: float) -> bool:
    inm = environ.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        return _etag_matches(inm, etag)
    ims = environ.get("HTTP_IF_MODIFIED_SINCE")
    if ims is not None:
        since = _http_date(ims)
        return since is not None and int(mtime) <= since
    return False


def _if_range(environ: dict, etag: str, mtime: float) -> bool:
    """If-Range: honour Range only when the representation is still the one asked about."""
    value = environ.get("HTTP_IF_RANGE")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == etag
    since = _http_date(value)
    return since is not None and int(mtime) == int(since)


def _ranges(header: str | None, size: int):
    """[(start, end), ...] inclusive, None for "send it all", or "unsatisfiable"."""
    if not header or not header.startswith("bytes="):
        return None
    out = []
    for spec in header[6:].split(","):
        m = _RANGE.fullmatch(spec)
        if not m or (not m.group(1) and not m.group(2)):
            return None  # a malformed Range is ignored, as RFC 9110 allows
        first, last = m.group(1), m.group(2)
        start = _offset(first) if first else 0
        stop = _offset(last) if last else 0
        if start is None or stop is None:
            return "unsatisfiable"
        if first:
            end = min(stop, size - 1) if last else size - 1
            if last and stop < start:
                return None
            if start >= size:
                continue
        else:
            length = stop
            if length == 0:
                continue
            start, end = max(0, size - length), size - 1
        out.append((start, end))
    if not out:
        return "unsatisfiable"
    if len(out) > MAX_RANGES:
        return None  # too many ranges: the whole file is cheaper for everyone
    out.sort()
    for (_, end_a), (start_b, _) in zip(out, out[1:]):
        if start_b <= end_a + 1:
            return None  # overlapping or adjacent ranges: send the whole file instead
    return out


def _multipart(start_response, f, ranges, size, ctype, headers, method):
    boundary = os.urandom(12).hex()
    parts = []
    total = 0
    for start, end in ranges:
        head = (f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
                f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n").encode()
        parts.append((head, start, end))
        total += len(head) + end - start + 1
    tail = f"\r\n--{boundary}--\r\n".encode()
    total += len(tail)
    base = [(k, v) for k, v in headers if k != "Content-Type"]
    start_response("206 Partial Content", base + [
        ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
        ("Content-Length", str(total))])
    if method == "HEAD":
        return _closing(f)

    def body():
        try:
            for head, start, end in parts:
                yield head
                f.seek(start)
                left = end - start + 1
                while left:
                    chunk = f.read(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk
            yield tail
        finally:
            f.close()

    return body()

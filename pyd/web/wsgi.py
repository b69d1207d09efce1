"""WSGI (PEP 3333) glue shared by the HTTP and FastCGI pools: run an app, stream its response.

The protocol side supplies a Transport (start, write, sendfile, finish, fail); this module
owns start_response with exc_info, the write() callable, wsgi.input/errors/file_wrapper, and
the promise that the app's iterable is always closed, even when the client goes away. What an
app gives start_response is checked here as it goes out, for every pool (check_head): no
status line or header can smuggle another header into the response, whatever the framing.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("pyd.wsgi")


class ClientGone(Exception):
    """The client closed the connection; nothing more can be sent."""


class ClientError(Exception):
    """The client's request body was bad (400, 413) or too slow (408): reading wsgi.input
    raises it; the answer is its status, and it is not the application's failure."""

    local = False

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Transport(Protocol):
    headers_sent: bool

    def start(self, status: str, headers: list, content_length: int | None) -> None: ...
    def write(self, data: bytes) -> None: ...
    def respond(self, status: str, headers: list, body: bytes) -> None: ...
    def sendfile(self, file: Any, offset: int, count: int | None) -> bool: ...
    def finish(self) -> None: ...
    def fail(self, exc: BaseException | None) -> None: ...


_STATUS = re.compile(r"[2-5][0-9][0-9](?: [^\x00-\x08\x0a-\x1f\x7f]*)?")  # reason: no CTLs
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110 5.1)
HEAD_CACHE = 256  # (status, headers) found valid, kept: most apps answer with a few of them
_GOOD_HEADS: set = set()


def check_head(status: Any, headers: Any) -> None:
    """Refuse (ValueError) a status line or header that is not what PEP 3333 and RFC 9110
    allow: a status "NNN reason" (200-599, no control characters), header names that are
    tokens, values without CR, LF or NUL, all latin-1 str."""
    try:
        key = (status, tuple(headers))
        if key in _GOOD_HEADS:
            return
    except TypeError:  # unhashable: checked, and refused, below
        key = None
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise ValueError(f"invalid status line {status!r}")
    for field in headers:
        if type(field) is not tuple or len(field) != 2:
            raise ValueError(f"a header must be a (name, value) tuple, not {field!r}")
        name, value = field
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value or "\0" in value or (
                not value.isascii() and not _latin1(value)):
            raise ValueError(f"invalid value for header {name}: {value!r}")
    if key is not None:
        if len(_GOOD_HEADS) >= HEAD_CACHE:
            _GOOD_HEADS.clear()
        _GOOD_HEADS.add(key)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class FileWrapper:
    """wsgi.file_wrapper: the server sends a real file with sendfile(2)."""

    def __init__(self, filelike: Any, blksize: int = 65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data

    def fileno(self) -> int | None:
        try:
            fd = self.filelike.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        try:
            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            return None


class ErrorStream:
    """wsgi.errors: what the app writes goes to the log, a record per line."""

    def __init__(self, logger: logging.Logger | None = None):
        self.log = logger or logging.getLogger("pyd.wsgi.errors")
        self._partial = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            text = str(text)
        text = self._partial + text
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.log.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            self.log.error("%s", self._partial)
            self._partial = ""


MAX_LINE = 65536  # readline() without a size returns at most this much


class BodyReader:
    """wsgi.input over a pull function that returns the next body chunk (b"" at the end).

    Nothing is read from the client before the app asks for it, and never more than one
    chunk beyond what the app asked for is held in memory: readline() without a size stops
    at MAX_LINE, so a body without newlines cannot pile up by surprise.
    """

    __slots__ = ("_pull", "_buf", "_done", "bytes_read")

    def __init__(self, pull: Callable[[], bytes] | None):
        self._pull = pull
        self._buf = b""
        self._done = pull is None
        self.bytes_read = 0

    def _more(self) -> bool:
        if self._done:
            return False
        chunk = self._pull()
        if not chunk:
            self._done = True
            return False
        self._buf += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = -1
        buf = self._buf
        if 0 <= size <= len(buf):  # what is held is enough
            data, self._buf = (buf, b"") if size == len(buf) else (buf[:size], buf[size:])
            self.bytes_read += size
            return data
        parts = [buf] if buf else []
        have = len(buf)
        self._buf = b""
        while (size < 0 or have < size) and not self._done:
            chunk = self._pull()
            if not chunk:
                self._done = True
                break
            parts.append(chunk)
            have += len(chunk)
        if 0 <= size < have:  # only the last chunk is cut: the body is copied once, by join
            last = parts[-1]
            keep = len(last) - (have - size)
            parts[-1], self._buf = last[:keep], last[keep:]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.bytes_read += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        if not self._buf:
            self._more()
        if size is None or size < 0:
            size = len(self._buf)
        data, self._buf = self._buf[:size], self._buf[size:]
        self.bytes_read += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = MAX_LINE
        while True:
            end = self._buf.find(b"\n") + 1
            if end or size <= len(self._buf) or not self._more():
                break
        end = min(end or len(self._buf), size)  # a newline, else all there is, at most size
        data, self._buf = self._buf[:end], self._buf[end:]
        self.bytes_read += len(data)
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        pass


def spool(pull: Callable[[], bytes], memory: int, directory: str | None = None) -> Any:
    """The whole body, read now: in memory up to `memory` bytes, in a temporary file beyond
    (request-buffering). Seeked to its start, ready to be wsgi.input."""
    f = tempfile.SpooledTemporaryFile(max_size=memory, dir=directory)
    try:
        while True:
            chunk = pull()
            if not chunk:
                break
            f.write(chunk)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def run(app: Callable, environ: dict, t: Transport, errors: logging.Logger = log) -> None:
    """Call a WSGI app and send its response through `t`; always close what it returns.

    An exception before anything was sent becomes a plain 500 (traceback in the log); after
    the head went out the response is cut off. ClientGone propagates after cleanup.
    """
    status_headers: list = [None, None]

    def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
        if exc_info is not None:
            try:
                if t.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif status_headers[0] is not None:
            raise AssertionError("start_response was already called")
        if type(status) is not str or type(headers) is not list:
            raise TypeError("start_response takes a str status and a list of headers")
        status_headers[0], status_headers[1] = status, headers
        return write

    def head() -> list:
        """The status and headers, checked as they go out (the app may have changed the list
        since it called start_response)."""
        check_head(status_headers[0], status_headers[1])
        return status_headers

    def write(data: bytes) -> None:
        if status_headers[0] is None:
            raise AssertionError("write() before start_response()")
        if not t.headers_sent:
            t.start(*head(), None)
        if data:
            t.write(data)

    result = None
    try:
        result = app(environ, start_response)
        if status_headers[0] is None and type(result) is not list:
            result = _first_chunk_then_rest(result)  # start_response may come at the 1st item
        if type(result) is list and not t.headers_sent:
            if status_headers[0] is None:
                raise AssertionError("the app returned without calling start_response")
            body = result[0] if len(result) == 1 else b"".join(result)
            if type(body) is not bytes:
                body = _bytes(body)
            t.respond(*head(), body)
            return
        if type(result) is FileWrapper and not t.headers_sent:
            fd = result.fileno()
            if fd is not None:
                _send_file(result, fd, head(), t)
                return
        for chunk in result:
            if not chunk:
                continue
            if not t.headers_sent:
                if status_headers[0] is None:
                    raise AssertionError("the app yielded before calling start_response")
                t.start(*head(), None)
            t.write(_bytes(chunk))
        if not t.headers_sent:
            if status_headers[0] is None:
                raise AssertionError("the app returned without calling start_response")
            t.start(*head(), 0)
        t.finish()
    except ClientGone:
        raise
    except ClientError as e:
        log.info("%s %s: %s (%d)", environ.get("REQUEST_METHOD"),
                 environ.get("REQUEST_URI") or environ.get("PATH_INFO"), e, e.status)
        t.fail(e)
    except Exception as e:
        errors.error("the application failed on %s %s", environ.get("REQUEST_METHOD"),
                     environ.get("REQUEST_URI") or environ.get("PATH_INFO"), exc_info=True)
        t.fail(e)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                errors.error("the application's close() failed", exc_info=True)


def _bytes(chunk: Any) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"the app yielded {type(chunk).__name__}, not bytes")


class _Prefetched:
    """An iterable whose first item was already taken (to see start_response called)."""

    def __init__(self, first: bytes | None, rest: Any, source: Any):
        self.first, self.rest, self.source = first, rest, source

    def __iter__(self):
        if self.first is not None:
            yield self.first
        yield from self.rest

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def _first_chunk_then_rest(result: Any) -> Any:
    it = iter(result)
    try:
        first = next(it)
    except StopIteration:
        first = None
    return _Prefetched(first, it, result)


def _send_file(wrapper: FileWrapper, fd: int, status_headers: list, t: Transport) -> None:
    status, headers = status_headers
    try:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        size = os.fstat(fd).st_size
    except OSError:
        offset, size = 0, None
    length = None
    for name, value in headers:
        if name.lower() == "content-length" and value.isdigit():
            length = int(value)
    count = length if length is not None else (size - offset if size is not None else None)
    t.start(status, headers, count)
    if count is None or not t.sendfile(wrapper.filelike, offset, count):
        for chunk in wrapper:
            t.write(chunk)
    t.finish()

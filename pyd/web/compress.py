"""Response compression: which coding an Accept-Encoding allows and prefers, whether a response
may be compressed, and streaming encoders for gzip (zlib), brotli and zstd.

brotli and zstd come from the optional `brotli` and `zstandard` packages (`pip install
pyd[compress]`); a coding whose package is missing is simply not offered. Each chunk the app
yields is compressed and flushed at once, so a streamed response still streams.
"""

from __future__ import annotations

import zlib

try:
    import brotli
except ImportError:  # optional: br is not offered without it
    brotli = None
try:
    import zstandard
except ImportError:  # optional: zstd is not offered without it
    zstandard = None

DEFAULT_TYPES = ("text/*", "application/json", "application/javascript", "application/xml",
                 "image/svg+xml")


def parse_accept_encoding(header: str) -> dict[str, float]:
    """{coding: q} from an Accept-Encoding header; malformed q-values count as 0."""
    out: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0 or q != q:
                    q = 0.0
        out[coding] = q
    return out


def accepts(header: str, coding: str) -> bool:
    """Does the client accept this coding (explicitly, or through `*`)?"""
    prefs = parse_accept_encoding(header)
    if coding in prefs:
        return prefs[coding] > 0
    if coding == "gzip" and "x-gzip" in prefs:
        return prefs["x-gzip"] > 0
    return prefs.get("*", 0.0) > 0


def choose(header: str, available: tuple[str, ...]) -> str | None:
    """The coding the client prefers most among `available` (ties: our order), or None."""
    prefs = parse_accept_encoding(header)
    if "gzip" not in prefs and "x-gzip" in prefs:
        prefs["gzip"] = prefs["x-gzip"]  # RFC 9110 8.4.1.3: x-gzip is gzip
    star = prefs.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in available:
        q = prefs.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best


# -- encoders: compress(chunk) returns what can be sent now, finish() the rest; whole(body) ------

class GzipEncoder:
    coding = "gzip"

    def __init__(self, level: int):
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 16+15: gzip framing

    def compress(self, data: bytes) -> bytes:
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)

    def whole(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_FINISH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    coding = "br"

    def __init__(self, level: int):
        self._b = brotli.Compressor(quality=level)

    def compress(self, data: bytes) -> bytes:
        b = self._b
        return b.process(data) + b.flush()

    def whole(self, data: bytes) -> bytes:
        return self._b.process(data) + self._b.finish()

    def finish(self) -> bytes:
        return self._b.finish()


class ZstdEncoder:
    coding = "zstd"

    def __init__(self, level: int):
        self._z = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, data: bytes) -> bytes:
        z = self._z
        return z.compress(data) + z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def whole(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)

    def finish(self) -> bytes:
        return self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


ENCODERS: dict[str, type] = {"gzip": GzipEncoder}
if zstandard is not None:
    ENCODERS["zstd"] = ZstdEncoder
if brotli is not None:
    ENCODERS["br"] = BrotliEncoder
PREFERENCE = ("zstd", "br", "gzip")  # among equal q-values: zstd is the fastest at a good ratio


def available_codings() -> tuple[str, ...]:
    return tuple(c for c in PREFERENCE if c in ENCODERS)


class Compression:
    """The pool's compression settings and the decision for one response.

    `decide()` returns (encoder or None, headers): headers get `Vary: Accept-Encoding` whenever
    the response is one we compress for some client, and, when compressing, Content-Encoding,
    no Content-Length nor Accept-Ranges, and a weak ETag (the bytes are no longer the same).
    """

    def __init__(self, types=DEFAULT_TYPES, min_length: int = 1024, level: int = 4,
                 codings: tuple[str, ...] | None = None):
        self.exact = frozenset(t.lower() for t in types if not t.endswith("/*"))
        self.prefixes = tuple(t[:-1].lower() for t in types if t.endswith("/*"))
        self.min_length = min_length
        self.level = level
        self.codings = codings if codings is not None else available_codings()

    @classmethod
    def from_settings(cls, settings) -> Compression | None:
        if not settings["gzip"]:
            return None
        return cls(tuple(settings["compress-types"]), settings["compress-min-length"],
                   settings["compress-level"])

    def _compressible_type(self, ctype: str) -> bool:
        ctype = ctype.partition(";")[0].strip().lower()
        return ctype in self.exact or ctype.startswith(self.prefixes)

    def decide(self, method: str, status: str, headers: list, length: int | None,
               accept: str | None):
        if method == "HEAD" or status[:3] in ("204", "304", "206") or status[:1] == "1":
            return None, headers
        ctype = None
        for name, value in headers:
            lname = name.lower()
            if lname == "content-type":
                ctype = value
            elif lname == "content-encoding" or lname == "content-range":
                return None, headers
            elif lname == "cache-control" and "no-transform" in value.lower():
                return None, headers
            elif lname == "content-length" and length is None and value.isdigit():
                length = int(value)
        if ctype is None or not self._compressible_type(ctype):
            return None, headers
        if length is not None and length < self.min_length:
            return None, headers
        coding = choose(accept, self.codings) if accept else None
        out = _add_vary(headers)
        if coding is None:
            return None, out
        encoder = ENCODERS[coding](self.level)
        final = [("Content-Encoding", coding)]
        for name, value in out:
            lname = name.lower()
            if lname == "content-length" or lname == "accept-ranges":
                continue
            if lname == "etag" and not value.startswith("W/"):
                value = "W/" + value
            final.append((name, value))
        return encoder, final


def _add_vary(headers: list) -> list:
    out = []
    found = False
    for name, value in headers:
        if name.lower() == "vary":
            found = True
            tokens = [t.strip().lower() for t in value.split(",")]
            if "accept-encoding" not in tokens and "*" not in tokens:
                value = value + ", Accept-Encoding"
        out.append((name, value))
    if not found:
        out.append(("Vary", "Accept-Encoding"))
    return out

"""The WSGI apps every benchmarked server runs: hello-world, a 64 KB body, a 1 MB upload, a file.

The harness copies this file into a temporary directory readable by `nobody` (pyd's workers drop
to it) and points every server at that copy, so all of them run the very same code.
"""

import os

HELLO = b"Hello, World!"
BIG = b"x" * 65536
# The static file lives beside the copy of this module; the harness writes it there.
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(BIG)))])
    return [BIG]


def upload(environ, start_response):
    """Read the whole request body and answer with how many bytes arrived."""
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    received = 0
    # read(n) may legally return less than n; loop so every server is asked for the whole body.
    while remaining > 0:
        chunk = stream.read(min(remaining, 262144))
        if not chunk:
            break
        received += len(chunk)
        remaining -= len(chunk)
    body = str(received).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def static(environ, start_response):
    """Serve /static/NAME from STATIC_DIR through the server's wsgi.file_wrapper (sendfile)."""
    name = environ.get("PATH_INFO", "").rpartition("/")[2]
    path = os.path.join(STATIC_DIR, name)
    if not name or name.startswith(".") or not os.path.isfile(path):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    f = open(path, "rb")  # closed by the file wrapper's close()
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 65536)
    return _chunks(f)


def _chunks(f):
    with f:
        yield from iter(lambda: f.read(65536), b"")

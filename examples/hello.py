"""The example WSGI app of the bundled conf/pyd.conf: hello, and a look at its own environ."""

import os


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/environ":
        body = "".join(f"{k}: {v!r}\n" for k, v in sorted(environ.items())).encode()
        ctype = "text/plain; charset=utf-8"
    else:
        body = f"Hello from pyd (worker pid {os.getpid()})\n".encode()
        ctype = "text/plain; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]

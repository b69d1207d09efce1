"""Static files as a WSGI app, without a server: Range numbers of any length, dotfiles and the
directory redirect, called directly with an environ."""

from __future__ import annotations

import pytest

from pyd.web.static import StaticFiles
from pyd.web.wsgi import FileWrapper


@pytest.fixture
def root(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"0123456789")
    (tmp_path / ".env").write_text("SECRET=1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    (tmp_path / "sub" / ".hidden").mkdir(parents=True)
    (tmp_path / "sub" / ".hidden" / "f.txt").write_text("x")
    (tmp_path / "sub" / "f.txt").write_text("x")
    (tmp_path / ".well-known" / "acme-challenge").mkdir(parents=True)
    (tmp_path / ".well-known" / "acme-challenge" / "token").write_text("t")
    (tmp_path / "evil.example.com").mkdir()
    (tmp_path / "a b%").mkdir()
    return tmp_path


def call(app, path: str, script_name: str = "", **headers) -> tuple[str, dict, bytes]:
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": script_name, "PATH_INFO": path,
               "RAW_URI": script_name + path, "QUERY_STRING": "",
               "wsgi.file_wrapper": FileWrapper}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


@pytest.mark.parametrize("spec", ["bytes=%s-", "bytes=0-%s", "bytes=-%s", "bytes=0-1,%s-"])
def test_a_range_number_of_thousands_of_digits_is_unsatisfiable(root, spec):
    status, headers, _ = call(StaticFiles(str(root), False, "/"), "/a.txt",
                              range=spec % ("9" * 5000))
    assert status.startswith("416") and headers["Content-Range"] == "bytes */10"


def test_range_numbers_up_to_a_file_offset_still_work(root):
    app = StaticFiles(str(root), False, "/")

    def content_range(spec: str) -> str:
        status, headers, _ = call(app, "/a.txt", range=spec)
        return headers["Content-Range"] if status.startswith("206") else status

    assert content_range("bytes=2-9223372036854775807") == "bytes 2-9/10"
    assert content_range("bytes=%s2-3" % ("0" * 40)) == "bytes 2-3/10"  # leading zeros
    assert content_range("bytes=-3") == "bytes 7-9/10"
    assert content_range("bytes=0-9223372036854775808").startswith("416")  # as nginx


@pytest.mark.parametrize("path", ["/.env", "/.git/config", "/.git", "/.git/", "/sub/.hidden/f.txt",
                                  "/sub/.hidden", "/.well-known/.env", "/.nothing"])
def test_dotfiles_are_not_found_by_default(root, path):
    status, _, body = call(StaticFiles(str(root), False, "/"), path)
    assert status.startswith("404"), (path, status)
    assert b"SECRET" not in body


def test_dotfiles_are_served_when_the_location_allows_them(root):
    app = StaticFiles(str(root), False, "/", dotfiles=True)
    assert call(app, "/.env")[2] == b"SECRET=1\n"
    assert call(app, "/sub/.hidden/f.txt")[0].startswith("200")


def test_well_known_and_ordinary_dots_are_served(root):
    app = StaticFiles(str(root), False, "/")
    assert call(app, "/.well-known/acme-challenge/token")[2] == b"t"
    assert call(app, "/a.txt")[0].startswith("200")


def test_an_alias_checks_what_is_below_it_and_a_prefix_is_the_operators(root):
    alias = StaticFiles(str(root / "sub"), True, "/files")  # location /files, no slash
    assert call(alias, ".hidden/f.txt", "/files")[0].startswith("404")
    assert call(alias, "/f.txt", "/files")[0].startswith("200")
    hidden = StaticFiles(str(root), False, "/sub/.hidden/")  # root; the prefix names a dotdir
    assert call(hidden, "/f.txt", "/sub/.hidden")[0].startswith("200")


@pytest.mark.parametrize("path,location", [
    ("//evil.example.com", "/evil.example.com/"),
    ("///evil.example.com", "/evil.example.com/"),
    ("/a b%", "/a%20b%25/"),
])
def test_the_directory_redirect_is_never_protocol_relative(root, path, location):
    status, headers, _ = call(StaticFiles(str(root), False, "/"), path)
    assert status.startswith("301") and headers["Location"] == location

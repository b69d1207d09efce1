"""Directives: what every pool and `App:` section has: listeners, apps, privilege."""

from __future__ import annotations

from pyd.config.directives.scopes import (
    APP,
    FASTCGI,
    HTTP,
    LOCATION,
    METRICS,
    POOLS,
    USER_POOL,
    WEB_POOLS,
)
from pyd.config.registry import REGISTRY
from pyd.config.values import (
    AddressType,
    Boolean,
    ListOf,
    Path,
    Ref,
    String,
)

directive = REGISTRY.directive
block = REGISTRY.block
section = REGISTRY.section

# -- pools and apps ------------------------------------------------------------------------------

section("Pool", "HTTPServer", scope=HTTP, impl="pyd.pools.http:HTTPServerPool", example="Pool:HTTPServer { listen 127.0.0.1:8080; "
        "app shop.wsgi:application; }",
        help="An HTTP/1.1 server for WSGI apps; `Pool:HTTPServer:name` for more than one.")
section("Pool", "FastCGI", scope=FASTCGI, impl="pyd.pools.fastcgi:FastCGIPool", example="Pool:FastCGI { listen 127.0.0.1:9000; "
        "app shop.wsgi:application; }",
        help="A FastCGI server for WSGI apps behind nginx (`fastcgi_pass`).")
section("Pool", "Metrics", scope=METRICS, served_by="master",
        example="Pool:Metrics { listen 127.0.0.1:9100; }",
        help="Metrics and health, served by the master itself (no app code, no worker): "
             "`GET /metrics` in the Prometheus text format (OpenMetrics when the scraper's "
             "Accept asks), `GET /health` (200 while the master's loop turns) and `GET /ready` "
             "(200 while every worker the master keeps serves; 503 from the moment a stop "
             "begins). One request per connection.")
section("Pool", None, scope=USER_POOL, extra=True,
        example="Pool:echo { class examples.echo:EchoPool; listen 127.0.0.1:7000; }",
        help="A network pool of your own: `class` gets each accepted connection. Other "
             "directives in the section are its settings.")
section("App", None, scope=APP, extra=True,
        example="App:shop { class shop.app:Shop; privileged; }",
        help="An application instance (a `pyd.AppInstance` subclass). Other directives in "
             "the section are its settings.")

directive("listen", AddressType(), (), scopes=POOLS + (METRICS,), multiple=True, required=True,
          reload=True, example="127.0.0.1:8080",
          help="Addresses to accept connections on. The master binds them before forking and "
               "keeps them open across reloads.")
directive("privileged", Boolean(), False, scopes=POOLS + (APP,), reload=False,
          example="",
          help="Load this in the master as root, before workers drop privileges.")
directive("app", Ref(allow_name=True), None, scopes=WEB_POOLS + (LOCATION,),
          example="shop.wsgi:application",
          help="The WSGI application: `module:attribute`, `module:factory()`, or the name of an "
               "`App:` section.")
directive("class", Ref(), None, scopes=(USER_POOL, APP), required=True, reload=False,
          example="examples.echo:EchoPool",
          help="The Python class of a user pool or an `App:` section, as `module:Class`.")

block("location", scopes=WEB_POOLS, inner=LOCATION,
      arg=String(pattern=r"/[^\x00-\x1f\x7f]*", example="/static/",
                 expected="a path prefix starting with /, without control characters"),
      example="location /static/ { root /srv/static; }",
      help="Requests whose path starts with this prefix (the longest wins) go to this app or "
           "these files.")
directive("root", Path(), None, scopes=LOCATION, example="/srv/www",
          help="Serve files from this directory: the request path is appended to it.")
directive("alias", Path(), None, scopes=LOCATION, example="/srv/static",
          help="Serve files from this directory: the path after the location prefix is appended.")
directive("index", ListOf(String()), ("index.html",), scopes=LOCATION, example="index.html",
          help="Files to serve for a request that names a directory.")
directive("allow-dotfiles", Boolean(), False, scopes=LOCATION, example="on",
          help="Serve files and directories whose name starts with `.` (`.git/`, `.env`); "
               "off: they are answered 404, as if absent (`/.well-known/` is served either "
               "way).")

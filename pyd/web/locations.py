"""What serves a location: a WSGI app (by `module:attr` or an App: section's name) or files.

Shared by the HTTP and FastCGI pools.
"""

from __future__ import annotations

from collections.abc import Callable

from pyd.apps import RefError, import_ref
from pyd.web.routing import Route, Router
from pyd.web.static import StaticFiles


def resolve_app(ref: str, apps: dict) -> Callable:
    """`module:attr`, `module:factory()` or the name of an App: section, as a WSGI callable."""
    if ":" in ref:
        app = import_ref(ref)
    else:
        app = apps.get(ref)
        if app is None:
            raise RefError(f"no App:{ref} section is loaded here")
    if not callable(app):
        raise RefError(f"{ref} is not callable: a WSGI app is app(environ, start_response)")
    return app


def build_router(section, apps: dict):
    """The routes of a web pool: its `app` at `/` and each `location`, longest prefix first."""
    routes = []
    default = section.settings["app"]
    if default is not None:
        routes.append(Route("/", resolve_app(default, apps), section))
    for loc in section.blocks("location"):
        routes.append(Route(loc.arg, location_app(loc, apps), loc))
    return Router(routes)


def location_app(loc, apps: dict) -> Callable:
    settings = loc.settings
    if settings["app"] is not None:
        return resolve_app(settings["app"], apps)
    return StaticFiles.from_location(loc)

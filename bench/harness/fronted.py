"""nginx in front of a backend (fastcgi_pass, proxy_pass, uwsgi_pass): one server to the harness.

Both trees are measured: Running.parts names them "nginx" and "backend".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .servers import Nginx, Running, Site, Unavailable


class Fronted:
    def __init__(self, name: str, title: str, backend, *, locations: Callable[[Site], str],
                 upstream: Callable[[Site], str] | None = None):
        self.name, self.title, self.backend = name, title, backend
        self.nginx = Nginx(locations, name=f"front-{name}", title="nginx", upstream=upstream)

    def backend_site(self, site: Site) -> Site:
        return dataclasses.replace(site, port=site.backend_port)

    def start(self, site: Site) -> Running:
        back = self.backend.start(self.backend_site(site))
        try:
            front = self.nginx.start(site)
        except Unavailable as e:
            back.stop()
            raise Unavailable(f"front nginx: {e}") from None

        def stop() -> None:
            try:
                front.stop()
            finally:
                back.stop()

        return Running(front.root_pid, stop, back.notes + front.notes,
                       parts={"nginx": front.root_pid, "backend": back.root_pid})

    def command(self, site: Site) -> list[str]:
        return self.backend.command(self.backend_site(site))

    def version(self) -> str:
        return self.backend.version()

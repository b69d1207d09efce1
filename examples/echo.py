"""The reference user pool: `Pool:echo { class examples.echo:EchoPool; listen 127.0.0.1:7000; }`.

Each accepted connection is a gevent socket handed to `handle()`; lines come back prefixed.
"""

import pyd
from pyd.config.values import String


class EchoPool(pyd.Pool):
    # Directives this pool's section may hold, with their types and defaults.
    directives = {"prefix": (String(nonempty=False), "")}

    def on_ready(self):
        self.log.info("echo pool ready on %s", ", ".join(map(str, self.listeners)))

    def handle(self, conn, address):
        prefix = self.settings.prefix.encode()
        f = conn.makefile("rwb")
        for line in f:
            f.write(prefix + line)
            f.flush()

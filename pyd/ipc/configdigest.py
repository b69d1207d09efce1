"""The digest of a loaded configuration, as `pyd status` carries it: the master reports the one
it runs, `pyd reload` compares it with the file on disk (the master never parses the file)."""

from __future__ import annotations

import hashlib


def config_digest(config) -> str:
    return hashlib.sha256(config.canonical().encode()).hexdigest()

"""The `pyd` command: parsing, the client side of every command, and how it fails.

Runs before gevent patches anything; nothing else in pyd imports it.
"""

"""pyd's version: a leaf that every layer may read."""

__version__ = "0.1.0.dev0"

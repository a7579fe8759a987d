"""The ``replicator`` command line: each sub-command module parses and calls ``runtime`` or ``ops``."""

from replicator.cli.main import main

__all__ = ["main"]

"""``python -m replicator``: the same as the ``replicator`` command."""

from replicator.cli import main

main()

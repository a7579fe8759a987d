"""``python -m replicator``: the same as the ``replicator`` command."""

from replicator.cli.main import main

main()

"""The Lambda entry point deployed templates name: ``replicator.lambda_handler.handler``.

The handler itself lives in ``replicator.runtime.lambda_function``; this module only keeps its public name.
"""

from replicator.runtime.lambda_function import handler

__all__ = ["handler"]

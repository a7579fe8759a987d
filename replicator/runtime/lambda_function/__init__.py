"""AWS Lambda entry point: a DynamoDB Streams event source mapping (ESM) invokes ``handler``.

The handler runs the service's own code on each batch: ``build_processor`` (filters, transforms,
markers, last-writer-wins conditional writes) and ``BatchProcessor.process``. The ESM reads the stream
and keeps the positions, so there is no checkpoint store, no shard discovery and no HTTP endpoint here.

- ``handler.py``: the entry point, the invocation's time budget, the answer (``batchItemFailures``).
- ``environment.py``: what all invocations of one execution environment share (configuration, clients,
  processor, event loop), created once; prewarmed under provisioned concurrency.
- ``batches.py``: one event's records, key by key; which record Lambda must retry from; base64 binaries.
- ``observe/emf.py``: the per-invocation metrics line (CloudWatch Embedded Metric Format).

Importing this package loads neither the configuration model, the AWS SDK nor the pipeline's stages:
they load when the environment is set up (``environment()``), on the first invocation or, with
provisioned concurrency, right here at initialisation.
"""

from __future__ import annotations

import os

from replicator.observe.emf import METRIC_NAMESPACE, summary_line
from replicator.runtime.lambda_function.batches import LAMBDA_SHARD_ID, EventOutcome, process_event
from replicator.runtime.lambda_function.environment import Environment, environment, prewarm_requested, reset
from replicator.runtime.lambda_function.handler import (
    DEADLINE_MARGIN_S,
    NO_CONTEXT_BUDGET_S,
    LambdaContext,
    handler,
    invocation_budget_s,
)

__all__ = [
    "DEADLINE_MARGIN_S",
    "LAMBDA_SHARD_ID",
    "METRIC_NAMESPACE",
    "NO_CONTEXT_BUDGET_S",
    "Environment",
    "EventOutcome",
    "LambdaContext",
    "environment",
    "handler",
    "invocation_budget_s",
    "prewarm_requested",
    "process_event",
    "reset",
    "summary_line",
]

if prewarm_requested(os.environ):
    # Provisioned concurrency runs the module's initialisation ahead of traffic: do the ~0.6 s of
    # imports, configuration and client creation then, not in the first invocation.
    environment()

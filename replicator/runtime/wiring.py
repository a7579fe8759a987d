"""Building the replication parts from the configuration: the same for the service, Lambda and the ops.

The writers, the pipeline and the batch processor (``build_processor``) and the target writes' retry
policy. The Lambda handler, redrive, backfill and ``verify --repair`` all write through what
``build_processor`` builds, so every path keeps the same conditions and markers. It imports nothing
ECS-only (checkpoint stores, shard readers): the Lambda environment loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from replicator.aws.clients import TargetClient
from replicator.core.config import Config
from replicator.core.errors import ConfigError
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.pipeline.processor import BatchProcessor
from replicator.pipeline.stages import Pipeline
from replicator.sink.deadletter import DeadLetterSink
from replicator.sink.ratelimit import WriteGate
from replicator.sink.writer import ConditionalWriter

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

log = structlog.get_logger(__name__)


def build_processor(
    cfg: Config,
    *,
    target_client: TargetClient,
    metrics: Metrics,
    dead_letters: DeadLetterSink | None,
    clock: Callable[[], float] = time.time,
    source_client: DynamoDBClient | None = None,  # for replication.source_tombstones
    pipeline: Pipeline | None = None,
) -> BatchProcessor:
    """The pipeline, the writer and the batch processor: the same for the service and the Lambda handler.

    ``pipeline``: filters and transforms already compiled from ``cfg`` at the edge (``Pipeline.from_config``);
    compiled here when not given.
    """
    writer = ConditionalWriter(
        target_client.client,
        lean=target_client.lean,
        table=cfg.target.table,
        cfg=cfg.replication,
        origin_region=cfg.source.region,
        target_region=cfg.target.region,
        clock=clock,
    )
    source_writer = None
    if cfg.replication.source_tombstones and cfg.replication.deletes == "tombstone":
        if source_client is None or cfg.source.table is None:
            raise ConfigError("replication.source_tombstones needs source.table (and a source client)")
        # It writes into the source region: the change's own region is the "target" for tie rules.
        source_writer = ConditionalWriter(
            source_client,
            table=cfg.source.table,
            cfg=cfg.replication,
            origin_region=cfg.source.region,
            target_region=cfg.source.region,
            clock=clock,
            replace_local_writes=False,
        )
    if pipeline is None:
        pipeline = Pipeline.from_config(cfg, clock=clock)
    for warning in pipeline.filters.warnings:
        # Lambda-compatible but surprising: e.g. a numeric pattern on an N value can never match.
        log.warning("filter_never_matches", detail=warning)
    return BatchProcessor(
        source_writer=source_writer,
        pipeline=pipeline,
        writer=writer,
        metrics=metrics,
        retry_policy=write_retry_policy(cfg),
        max_concurrent_writes=cfg.target.max_concurrent_writes,
        write_gate=WriteGate(
            max_concurrent_writes=cfg.target.max_concurrent_writes,
            adaptive=cfg.target.adaptive_concurrency,
            max_writes_per_s=cfg.target.max_writes_per_s,
            metrics=metrics,
        ),
        dead_letters=dead_letters,
        maximum_record_age_s=cfg.failure.maximum_record_age_seconds,
        bisect_on_error=cfg.failure.bisect_batch_on_function_error,
        clock=clock,
    )


def write_retry_policy(cfg: Config) -> RetryPolicy:
    """Retries of target writes: unlimited unless ``failure.maximum_retry_attempts`` says otherwise."""
    attempts = cfg.failure.maximum_retry_attempts
    return RetryPolicy(max_attempts=None if attempts < 0 else attempts)

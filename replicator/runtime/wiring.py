"""Building the replication parts from the configuration: the same for the service, Lambda and the ops.

The writers, the pipeline and the batch processor (``build_processor``) and the target writes' retry
policy. The Lambda handler, redrive, backfill and ``verify --repair`` all write through what
``build_processor`` builds, so every path keeps the same conditions and markers. It imports nothing
ECS-only (checkpoint stores, shard readers): the Lambda environment loads it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog
from aiobotocore.session import get_session

from replicator.aws.clients import TargetClient, client_config
from replicator.core.config import Config
from replicator.core.errors import ConfigError
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.pipeline.processor import BatchProcessor
from replicator.pipeline.stages import Pipeline
from replicator.pipeline.target_health import TargetHealth
from replicator.sink.deadletter import DeadLetterSink, for_target
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
    compiled here when not given. Everything it builds records its metrics under ``target=<target_id>``.
    """
    metrics = metrics.for_target(cfg.target.target_id)
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
    if needs_source_client(cfg):
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
        # The destination is shared by every target; its letters name this processor's target.
        dead_letters=for_target(dead_letters, cfg.target),
        maximum_record_age_s=cfg.failure.maximum_record_age_seconds,
        bisect_on_error=cfg.failure.bisect_batch_on_function_error,
        clock=clock,
        target=TargetHealth(metrics=metrics, policy=hold_policy(cfg)),
        stream_retention_s=cfg.failure.stream_retention_seconds,
        dead_letter_before_retention_s=cfg.failure.dead_letter_before_retention_seconds,
    )


def build_processors(
    cfg: Config,
    *,
    target_clients: Mapping[str, TargetClient],
    metrics: Metrics,
    dead_letters: DeadLetterSink | None,
    clock: Callable[[], float] = time.time,
    source_client: DynamoDBClient | None = None,
    pipelines: Mapping[str, Pipeline] | None = None,
) -> dict[str, BatchProcessor]:
    """One ``build_processor`` per target of ``cfg.targets``, by target id; each reads ``cfg.for_target``."""
    return {
        target.target_id: build_processor(
            cfg.for_target(target),
            target_client=target_clients[target.target_id],
            metrics=metrics,
            dead_letters=dead_letters,
            clock=clock,
            source_client=source_client,
            pipeline=None if pipelines is None else pipelines[target.target_id],
        )
        for target in cfg.targets
    }


def compile_pipelines(cfg: Config) -> dict[str, Pipeline]:
    """Every target's filters and transforms, compiled (at the edge: a typo fails before any client opens)."""
    return {target.target_id: Pipeline.from_config(cfg.for_target(target)) for target in cfg.targets}


def needs_source_client(cfg: Config) -> bool:
    """True when ``build_processor`` needs a source client: deletes are tombstoned in the source too."""
    return cfg.replication.source_tombstones and cfg.replication.deletes == "tombstone"


async def open_source_client(stack: contextlib.AsyncExitStack, cfg: Config) -> DynamoDBClient:
    """Open a client for the source table (``source.region``/``endpoint_url``) inside ``stack``.

    For the commands that otherwise only write to the target (``redrive``): with the active-active
    config they must tombstone deletes in the source exactly as ``run`` does.
    """
    return await stack.enter_async_context(
        get_session().create_client(
            "dynamodb",
            region_name=cfg.source.region,
            endpoint_url=cfg.source.endpoint_url,
            config=client_config(),
        )
    )


def hold_policy(cfg: Config) -> RetryPolicy:
    """Backoff between probes of a target that refuses every write (target scope)."""
    cap_s = cfg.failure.target_unavailable_max_backoff_seconds
    return RetryPolicy(base_delay_s=min(0.5, cap_s), max_delay_s=cap_s)


def write_retry_policy(cfg: Config) -> RetryPolicy:
    """Retries of target writes: unlimited unless ``failure.maximum_retry_attempts`` says otherwise."""
    attempts = cfg.failure.maximum_retry_attempts
    return RetryPolicy(max_attempts=None if attempts < 0 else attempts)

"""The execution environment: what every invocation of one Lambda instance shares, created once.

Configuration comes from ``REPLICATOR_*`` environment variables only (``load_config(None)``; same keys
as the service). It, the target clients, the processors (one per target of ``targets:``, each with its
own filters and transforms) and one asyncio event loop are created on the
first invocation (or at initialisation, with provisioned concurrency: ``prewarm_requested``) and reused
by every later one in the same execution environment: aiobotocore clients are bound to the loop that
created them, so each invocation is ``run_until_complete`` on it.

The configuration model, the AWS SDK and the pipeline are imported in ``Environment.create``, not by
this package: importing the handler stays cheap, and a configuration error surfaces in the invocation's
log with its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Mapping

    from replicator.core.config import Config
    from replicator.observe.metrics import Metrics
    from replicator.pipeline.processor import BatchProcessor
    from replicator.pipeline.stages import Pipeline

log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class Environment:
    """Everything an invocation needs that outlives it."""

    cfg: Config
    loop: asyncio.AbstractEventLoop
    stack: contextlib.AsyncExitStack
    metrics: Metrics
    processor: BatchProcessor
    """The first target's processor (``cfg.target``): the only one without fan-out."""
    processors: dict[str, BatchProcessor] = dataclasses.field(default_factory=dict)
    """Every target's processor by target id, in configuration order."""

    def event_processor(self) -> BatchProcessor | dict[str, BatchProcessor]:
        """What ``process_event`` takes: the one processor, or with fan-out every target's."""
        return self.processors if self.cfg.fan_out else self.processor

    @classmethod
    def create(cls) -> Environment:
        """Load the configuration from the environment, open the target clients, build the processors."""
        from replicator.core.config import load_config  # noqa: PLC0415 - deferred: see the module docstring
        from replicator.observe import logs  # noqa: PLC0415
        from replicator.observe.metrics import Metrics  # noqa: PLC0415
        from replicator.runtime.wiring import compile_pipelines  # noqa: PLC0415

        cfg = load_config(None)
        # Filters and transforms compile before any client opens: a bad one fails the init, naming it.
        pipelines = compile_pipelines(cfg)
        logs.configure(cfg.logging.level, cfg.logging.format, log_item_contents=cfg.logging.log_item_contents)
        loop = asyncio.new_event_loop()
        stack = contextlib.AsyncExitStack()
        metrics = Metrics()
        try:
            processors = loop.run_until_complete(_open_processors(cfg, pipelines, stack, metrics))
        except BaseException:
            loop.run_until_complete(stack.aclose())
            loop.close()
            raise
        processor = processors[cfg.target.target_id]
        fan_out = {"targets": list(processors)} if cfg.fan_out else {}
        log.info(
            "lambda_environment_ready",
            target_region=cfg.target.region,
            target_table=cfg.target.table,
            dead_letters=processor.dead_letters is not None,
            **fan_out,
        )
        return cls(cfg=cfg, loop=loop, stack=stack, metrics=metrics, processor=processor, processors=processors)

    def close(self) -> None:
        """Close the clients and the loop (Lambda never calls this; tests and local runs do)."""
        try:
            self.loop.run_until_complete(self.stack.aclose())
        finally:
            self.loop.close()


async def _open_processors(
    cfg: Config, pipelines: Mapping[str, Pipeline], stack: contextlib.AsyncExitStack, metrics: Metrics
) -> dict[str, BatchProcessor]:
    """Open each target's client (and the source's, for source tombstones) and the dead letters in ``stack``."""
    from aiobotocore.session import get_session  # noqa: PLC0415 - deferred: see the module docstring

    from replicator.aws.clients import client_config, open_target_client  # noqa: PLC0415
    from replicator.runtime.wiring import build_processors  # noqa: PLC0415
    from replicator.sink import deadletter  # noqa: PLC0415

    clients = {t.target_id: await open_target_client(stack, cfg.for_target(t)) for t in cfg.targets}
    source_client = None
    if cfg.replication.source_tombstones:
        # Deletes are tombstoned in the source too (active-active); nothing else reads the source.
        source_client = await stack.enter_async_context(
            get_session().create_client(
                "dynamodb",
                region_name=cfg.source.region,
                endpoint_url=cfg.source.endpoint_url,
                config=client_config(),
            )
        )
    dead_letters = await deadletter.from_config(cfg, stack, metrics=metrics)
    return build_processors(
        cfg,
        pipelines=pipelines,
        target_clients=clients,
        metrics=metrics,
        dead_letters=dead_letters,
        source_client=source_client,
    )


_environment: Environment | None = None


def environment() -> Environment:
    """Return the execution environment's singleton, created on first use (retried after a failure)."""
    global _environment  # noqa: PLW0603 - one per Lambda execution environment, by design
    if _environment is None:
        _environment = Environment.create()
    return _environment


def is_warm() -> bool:
    """Whether this execution environment already holds its set-up (False: the next invocation is a cold start)."""
    return _environment is not None


def reset() -> None:
    """Close and forget the environment, so the next invocation reads the configuration afresh."""
    global _environment
    env, _environment = _environment, None
    if env is not None:
        env.close()


def prewarm_requested(environ: Mapping[str, str]) -> bool:
    """Tell whether Lambda initialises this environment ahead of traffic (provisioned concurrency)."""
    return environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency"

"""The long-running worker: discovers shards, runs one reader per ready shard, shuts down in order.

Shutdown (SIGTERM/SIGINT): stop reading -> let in-flight batches finish and checkpoint, until
``shutdown_timeout_s`` -> cancel what is left (its records are read again after restart) -> close the
HTTP server and the clients (one AsyncExitStack, in reverse order of opening).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from replicator import __version__
from replicator.aws.clients import Clients, open_clients
from replicator.checkpoint import Checkpoint, CheckpointStore
from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.leases import LeasedCheckpointStore, LeaseManager
from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import Config
from replicator.core.errors import LeaseLostError, StreamConfigError
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.http import HealthServer
from replicator.observe.logs import error_text
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.pipeline.processor import BatchProcessor, DeadLetterSink, build_processor
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.source.kinesis import source_api
from replicator.source.shards import Shard, ShardTree
from replicator.source.streams import StreamInfo, StreamsAPI

log = structlog.get_logger(__name__)


def check_view_type(view_type: str, cfg: Config) -> None:
    """Refuse streams that cannot serve the configured replication."""
    if view_type == "KEYS_ONLY":
        raise StreamConfigError("the source stream is KEYS_ONLY: replication needs NEW_AND_OLD_IMAGES")
    if view_type == "OLD_IMAGE":
        raise StreamConfigError("the source stream is OLD_IMAGE: replication needs NEW_AND_OLD_IMAGES")
    if view_type == "NEW_IMAGE" and cfg.replication.skip_echoes:
        raise StreamConfigError(
            "the source stream is NEW_IMAGE: telling replicated changes from application changes "
            "(replication.skip_echoes, needed for active-active) requires NEW_AND_OLD_IMAGES; "
            "for one-way replication only, set replication.skip_echoes: false"
        )


class Replicator:
    """The ECS service: one process replicating one source stream into one target table."""

    def __init__(
        self,
        cfg: Config,
        *,
        metrics: Metrics | None = None,
        dead_letters: DeadLetterSink | None = None,
        shutdown_timeout_s: float = 20.0,
        clients: Clients | None = None,
    ) -> None:
        """Hold the configuration; all I/O happens in ``run``.

        ``clients`` replaces the AWS clients ``run`` would open (tests inject scripted ones; the caller
        owns and closes them).
        """
        self.cfg = cfg
        self._injected_clients = clients
        self.metrics = metrics or Metrics()
        self.state = WorkerState(self.metrics)
        self.dead_letters = dead_letters
        self.shutdown_timeout_s = shutdown_timeout_s
        self.worker_id = cfg.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.http: HealthServer | None = None
        self.stream: StreamInfo | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._discover_now = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._failed: set[str] = set()
        self._leases: LeaseManager | None = None
        self._lease_renewer: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Ask the worker to shut down (signal handlers call this)."""
        self._stop.set()

    async def run(self) -> None:
        """Replicate until ``stop``; raises StreamConfigError when the stream cannot be used."""
        cfg = self.cfg
        self.metrics.build_info.info(
            {
                "version": __version__,
                "source_region": cfg.source.region,
                "source_table": cfg.source.table or "",
                "target_region": cfg.target.region,
                "target_table": cfg.target.table,
                "checkpoint_backend": cfg.checkpoint.backend,
            }
        )
        async with contextlib.AsyncExitStack() as stack:
            # Every line logged by this worker and its readers (tasks copy the context) names the tables.
            stack.enter_context(
                structlog.contextvars.bound_contextvars(
                    source_table=cfg.source.table or cfg.source.stream_arn, target_table=cfg.target.table
                )
            )
            clients = self._injected_clients or await open_clients(stack, cfg)
            if self.dead_letters is None:
                from replicator.sink import deadletter  # noqa: PLC0415 - only needed with a destination

                self.dead_letters = await deadletter.from_config(cfg, stack, metrics=self.metrics)
            store = self._store(clients)
            await store.start()
            stack.push_async_callback(store.close)
            if cfg.metrics.enabled:
                self.http = HealthServer(
                    self.state,
                    host=cfg.metrics.host,
                    port=cfg.metrics.port,
                    readiness_timeout_s=cfg.metrics.readiness_timeout_s,
                )
                await self.http.start()
                stack.push_async_callback(self.http.close)
                log.info("metrics_listening", host=cfg.metrics.host, port=self.http.port)
            api = await source_api(stack, cfg, clients)  # DynamoDB Streams, or Kinesis (source.kind)
            self.stream = await retrying(
                "DescribeStream",
                lambda: api.resolve(table=cfg.source.table, stream_arn=cfg.source.stream_arn),
                policy=RetryPolicy(max_attempts=10),
                metrics=self.metrics,
            )
            check_view_type(self.stream.view_type, cfg)
            processor = build_processor(
                cfg,
                target_client=clients.target,
                metrics=self.metrics,
                dead_letters=self.dead_letters,
                source_client=clients.source,
            )
            log.info("started", stream_arn=self.stream.arn, worker_id=self.worker_id, target_table=cfg.target.table)
            self.state.running = True
            self.started.set()
            if cfg.leases.enabled:
                coordination = self._coordinate_leased(api, clients, processor)
            else:
                coordination = self._coordinate(api, store, processor)
            try:
                await self._until_stopped(coordination)
            finally:
                await self._shutdown()

    async def _until_stopped(self, coordination: Coroutine[Any, Any, None]) -> None:
        """Run the coordinator until it returns or stop is asked, whichever comes first.

        On stop the coordinator is cancelled at once: it may be retrying an unreachable Streams API
        without limit, and it holds no records (readers are separate tasks that ``_shutdown`` drains).
        """
        coordinator = asyncio.create_task(coordination, name="coordinator")
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({coordinator, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not coordinator.done():
                coordinator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await coordinator

    def _store(self, clients: Clients) -> CheckpointStore:
        cp = self.cfg.checkpoint
        if cp.backend == "dynamodb":
            assert cp.table is not None  # noqa: S101 - validated by the config model
            return DynamoDBCheckpointStore(clients.checkpoint_table(), cp.table)
        return SqliteCheckpointStore(cp.path)

    async def _coordinate(self, api: StreamsAPI, store: CheckpointStore, processor: BatchProcessor) -> None:
        assert self.stream is not None  # noqa: S101 - set by run
        arn = self.stream.arn
        tree = ShardTree()
        checkpoints: dict[str, Checkpoint] = await retrying(
            "LoadCheckpoints", lambda: store.load_all(arn), policy=RetryPolicy(max_attempts=10), metrics=self.metrics
        )
        first_discovery = True
        discovery_retry = RetryPolicy(max_attempts=None, max_delay_s=10)
        while not self._stop.is_set():
            shards = await retrying(
                "DescribeStream", lambda: api.list_shards(arn), policy=discovery_retry, metrics=self.metrics
            )
            new = tree.update(shards)
            if new:
                log.info("shards_discovered", new=len(new), known=len(tree.shards))
            for shard in tree.ready(checkpoints, set(self._tasks) | self._failed):
                self._start_reader(api, store, processor, shard, checkpoints, first_discovery=first_discovery)
            for shard in tree.shards.values():
                if (
                    shard.shard_id not in self._tasks
                    and shard.shard_id not in self._failed
                    and tree.parent_pending(shard, checkpoints)
                ):
                    self.state.set_state(shard.shard_id, "waiting_on_parent")
            first_discovery = False
            await self._wait_for_event(checkpoints)

    async def _coordinate_leased(self, api: StreamsAPI, clients: Clients, processor: BatchProcessor) -> None:
        """Like ``_coordinate``, for ``leases.enabled``: read only the shards this worker holds a lease on.

        Every renewal interval: take free/expired leases up to the fair share (or steal one), start readers
        for held shards that are ready (parents done, per the lease table), and let readers of lost leases
        stop (their stop event is set by the lease manager; their checkpoints are refused).
        """
        assert self.stream is not None  # noqa: S101 - set by run
        assert self.cfg.checkpoint.table is not None  # noqa: S101 - validated by the config model
        arn = self.stream.arn
        leases = self._leases = LeaseManager(
            clients.checkpoint_table(),
            self.cfg.checkpoint.table,
            stream_arn=arn,
            worker_id=self.worker_id,
            cfg=self.cfg.leases,
            metrics=self.metrics,
        )
        store = LeasedCheckpointStore(leases)
        self._lease_renewer = asyncio.create_task(leases.run_renewer(), name="lease-renewer")
        tree = ShardTree()
        retry = RetryPolicy(max_attempts=None, max_delay_s=10)
        next_discovery = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_discovery:
                shards = await retrying(
                    "DescribeStream", lambda: api.list_shards(arn), policy=retry, metrics=self.metrics
                )
                if tree.update(shards):
                    log.info("shards_discovered", known=len(tree.shards))
                create = functools.partial(leases.ensure_leases, shards)
                await retrying("CreateLeases", create, policy=retry, metrics=self.metrics)
                next_discovery = time.monotonic() + self.cfg.reader.shard_discovery_interval_s
            await retrying("TakeLeases", lambda: leases.rebalance(tree), policy=retry, metrics=self.metrics)
            checkpoints = leases.checkpoints()
            held = leases.held()
            for shard in tree.ready(checkpoints, set(self._tasks) | self._failed):
                if shard.shard_id in held:
                    stop = leases.stop_event(shard.shard_id)
                    self._start_reader(api, store, processor, shard, checkpoints, first_discovery=True, stop=stop)
            await self._wait_for_event(checkpoints, wait_s=leases.renew_interval_s)

    def _start_reader(
        self,
        api: StreamsAPI,
        store: CheckpointStore,
        processor: BatchProcessor,
        shard: Shard,
        checkpoints: dict[str, Checkpoint],
        *,
        first_discovery: bool,
        stop: asyncio.Event | None = None,
    ) -> None:
        assert self.stream is not None  # noqa: S101 - set by run
        cfg = self.cfg
        parent_done = shard.parent_shard_id is not None and shard.parent_shard_id in checkpoints
        # LATEST applies to shards open when the worker first starts; a child of a shard we read, or a
        # shard that appears later, is read from its start so none of its records are missed.
        position = cfg.starting_position if (first_discovery and not parent_done) else "TRIM_HORIZON"
        reader = ShardReader(
            api=api,
            stream_arn=self.stream.arn,
            shard=shard,
            checkpoint=checkpoints.get(shard.shard_id),
            store=store,
            processor=processor,
            state=self.state,
            metrics=self.metrics,
            settings=ReaderSettings(
                reader=cfg.reader,
                batch_size=cfg.failure.batch_size,
                initial_position=position,
                batching_window_s=cfg.failure.maximum_batching_window_seconds,
                parallelization_factor=cfg.failure.parallelization_factor,
            ),
            retry_policy=RetryPolicy(max_attempts=None, max_delay_s=10),
            stop=stop or self._stop,
        )
        task = asyncio.create_task(reader.run(), name=f"shard:{shard.shard_id}")
        self._tasks[shard.shard_id] = task

    async def _wait_for_event(self, checkpoints: dict[str, Checkpoint], wait_s: float | None = None) -> None:
        """Sleep until a reader finishes, the discovery interval (or ``wait_s``) passes, or stop is asked."""
        waiters: set[asyncio.Future[Any]] = set(self._tasks.values())
        stop_wait = asyncio.ensure_future(self._stop.wait())
        waiters.add(stop_wait)
        try:
            await asyncio.wait(
                waiters,
                timeout=wait_s or self.cfg.reader.shard_discovery_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop_wait.cancel()
        for shard_id, task in list(self._tasks.items()):
            if not task.done():
                continue
            del self._tasks[shard_id]
            exc = task.exception() if not task.cancelled() else None
            if isinstance(exc, LeaseLostError):
                # Another worker holds the shard now and resumes from its last checkpoint: not a failure.
                log.info("shard_handed_over", shard_id=shard_id)
                self.state.set_state(shard_id, "closed")
            elif exc is not None:
                self.metrics.errors.labels(kind="shard_failed").inc()
                self.state.set_state(shard_id, "stopped", error=type(exc).__name__)
                log.error("shard_stopped", shard_id=shard_id, error=error_text(exc), error_type=type(exc).__name__)
                # A stopped shard stays stopped (its children wait) until the cause is fixed and the
                # worker restarted: moving on would break per-key order or lose changes.
                self._failed.add(shard_id)
            elif task.result() == "shard_end":
                status = self.state.shard(shard_id)
                checkpoints[shard_id] = Checkpoint(
                    shard_id, status.checkpoint, shard_end=True, updated_at_s=time.time()
                )
                self.state.set_state(shard_id, "closed")

    async def _shutdown(self) -> None:
        self._stop.set()
        self.state.running = False
        if self._leases is not None:
            self._leases.stop_readers()  # leased readers wait on their own per-shard stop events
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown_cancelled_readers", readers=len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    log.error("shard_error_at_shutdown", error=error_text(task.exception()))  # type: ignore[arg-type]
        if self._leases is not None:
            # Readers have checkpointed (or were cancelled): hand the leases over at once.
            if self._lease_renewer is not None:
                self._lease_renewer.cancel()
                await asyncio.gather(self._lease_renewer, return_exceptions=True)
            await self._leases.release_all()
            self._leases.close()
        log.info("stopped")

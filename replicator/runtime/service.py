"""The long-running worker (ECS): opens everything, runs the coordinator, shuts down in a fixed order.

Everything opened is entered into one AsyncExitStack (AWS clients, dead-letter destination, checkpoint
store, HTTP server, signal handlers) and closed in reverse order of opening. The shards themselves are
the coordinator's (coordinator.py), which reads every shard or only leased ones (assignment.py).

Shutdown, on ``stop`` (SIGTERM/SIGINT when ``run`` is given the signals), in this order:
1. stop reading: the coordinator is cancelled (it holds no records) and readers are told to stop;
2. drain: in-flight batches finish and checkpoint, until ``shutdown_timeout_s``;
3. cancel: readers still busy are cancelled (their unsaved records are read again after restart);
4. final checkpoint: what finished lanes of cancelled readers did is saved;
5. release leases: other workers take them at once instead of after the failover time;
6. close: the exit stack, in reverse order of opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterable
from typing import Literal

import structlog

from replicator import __version__
from replicator.aws.clients import Clients, open_clients
from replicator.checkpoint import CheckpointStore
from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import Config
from replicator.core.retry import RetryPolicy, retrying
from replicator.core.stream_view import check_view_type
from replicator.observe.http import HealthServer
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.pipeline.fanout import FanOut
from replicator.runtime.assignment import AssignmentStrategy, LeasedAssignment, StaticAssignment
from replicator.runtime.coordinator import Coordinator
from replicator.runtime.wiring import build_processors, compile_pipelines
from replicator.sink.deadletter import DeadLetterSink
from replicator.source.api import ChangeSource, StreamInfo
from replicator.source.factory import open_source
from replicator.source.streams import StreamsSource

log = structlog.get_logger(__name__)


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
        self.metrics = metrics or Metrics(created_series=cfg.metrics.created_series)
        self.state = WorkerState(self.metrics)
        self.dead_letters = dead_letters
        self.shutdown_timeout_s = shutdown_timeout_s
        self.worker_id = cfg.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.http: HealthServer | None = None
        self.stream: StreamInfo | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._ran = False

    def stop(self) -> None:
        """Ask the worker to shut down (signal handlers call this)."""
        self._stop.set()

    async def run(self, *, stop_signals: Iterable[signal.Signals] = ()) -> None:
        """Replicate until ``stop`` (or one of ``stop_signals``); raises StreamConfigError for an unusable stream.

        A Replicator runs once: its state, metrics and stop event describe that one run.
        """
        if self._ran:
            raise RuntimeError("this Replicator has already been started; create a new one to run again")
        self._ran = True
        cfg = self.cfg
        # Filters and transforms compile before any client, table or port is opened: a typo fails at once.
        pipelines = compile_pipelines(cfg)
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
            self._handle_signals(stack, stop_signals)
            clients = self._injected_clients or await open_clients(stack, cfg)
            if self.dead_letters is None:
                from replicator.sink import deadletter  # noqa: PLC0415 - only needed with a destination

                self.dead_letters = await deadletter.from_config(cfg, stack, metrics=self.metrics)
            store = checkpoint_store(cfg, clients)
            await store.start()
            stack.push_async_callback(store.close)
            await self._serve_http(stack)
            # DynamoDB Streams, or Kinesis (source.kind)
            api = await open_source(stack, cfg, clients, metrics=self.metrics)
            self.stream = stream = await retrying(
                "DescribeStream",
                lambda: api.resolve(table=cfg.source.table, stream_arn=cfg.source.stream_arn),
                policy=RetryPolicy(max_attempts=10),
                metrics=self.metrics,
            )
            self.stream = stream = await self._unfinished_older_stream(api, store, stream)
            check_view_type(stream.view_type, cfg)
            processors = build_processors(
                cfg,
                pipelines=pipelines,
                target_clients=clients.target_clients(cfg),
                metrics=self.metrics,
                dead_letters=self.dead_letters,
                source_client=clients.source,
            )
            # One target: its processor itself; several: one read of each batch, handed to a bounded queue
            # and writer per target (the coordinator's shard_fanout); FanOut only where nothing else does.
            processor = processors[cfg.target.target_id] if not cfg.fan_out else FanOut(processors)
            log.info("started", stream_arn=stream.arn, worker_id=self.worker_id, target_table=cfg.target.table)
            self.state.running = True
            self.started.set()
            position: Literal["TRIM_HORIZON"] | None = None
            while True:
                assignment = self._assignment(store, clients, stream.arn)
                stack.push_async_callback(assignment.close)
                coordinator = Coordinator(
                    cfg=cfg,
                    api=api,
                    stream_arn=stream.arn,
                    assignment=assignment,
                    processor=processor,
                    state=self.state,
                    metrics=self.metrics,
                    starting_position=position,
                    targets=processors if cfg.fan_out else None,
                )
                following = False
                try:
                    await self._until_stopped(coordinator)
                    following = coordinator.next_stream is not None and not self._stop.is_set()
                finally:
                    if not following:
                        await self._shutdown(coordinator, assignment)
                if not following:
                    return
                # The replaced stream is read to its end and no reader runs: hand its leases over and read
                # the table's new stream from its first change (stream_watch.py).
                await assignment.release()
                assert coordinator.next_stream is not None  # noqa: S101 - following says so
                self.stream = stream = coordinator.next_stream
                check_view_type(stream.view_type, cfg)
                self.state.stream_problem = None
                position = "TRIM_HORIZON"

    async def _unfinished_older_stream(
        self, api: ChangeSource, store: CheckpointStore, latest: StreamInfo
    ) -> StreamInfo:
        """The table's oldest stream this replica left unfinished, else ``latest``.

        A stream replaced (disabled, then enabled) while no worker ran still holds the records written
        before the replacement, readable for 24 h. Reading only the latest stream would skip them; read
        the older stream's rest first, and the coordinator then follows to the latest (stream_watch.py).
        """
        cfg = self.cfg
        table = cfg.source.table
        if not isinstance(api, StreamsSource) or cfg.source.stream_arn is not None or table is None:
            return latest
        arns = await retrying(
            "ListStreams", lambda: api.table_streams(table), policy=RetryPolicy(max_attempts=10), metrics=self.metrics
        )
        for arn in arns:
            if arn == latest.arn:
                break  # only streams older than the latest
            checkpoints = await store.load_all(arn)
            if any(not cp.shard_end for cp in checkpoints.values()):
                log.warning(
                    "stream_resumed",
                    stream_arn=arn,
                    latest_stream_arn=latest.arn,
                    action="reading the rest of an older stream of the table first, then its latest stream",
                )
                return await api.resolve(table=None, stream_arn=arn)
        return latest

    def _handle_signals(self, stack: contextlib.AsyncExitStack, signals: Iterable[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
            stack.callback(loop.remove_signal_handler, sig)

    async def _serve_http(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.cfg.metrics
        if not cfg.enabled:
            return
        self.http = HealthServer(self.state, host=cfg.host, port=cfg.port, readiness_timeout_s=cfg.readiness_timeout_s)
        await self.http.start()
        stack.push_async_callback(self.http.close)
        log.info("metrics_listening", host=cfg.host, port=self.http.port)

    def _assignment(self, store: CheckpointStore, clients: Clients, stream_arn: str) -> AssignmentStrategy:
        cfg = self.cfg
        if not cfg.leases.enabled:
            return StaticAssignment(store, stream_arn=stream_arn, metrics=self.metrics)
        assert cfg.checkpoint.table is not None  # noqa: S101 - validated by the config model
        return LeasedAssignment(
            clients.checkpoint_table(),
            cfg.checkpoint.table,
            stream_arn=stream_arn,
            worker_id=self.worker_id,
            cfg=cfg.leases,
            metrics=self.metrics,
        )

    async def _until_stopped(self, coordinator: Coordinator) -> None:
        """Run the coordinator until it returns or stop is asked, whichever comes first.

        On stop the coordinator is cancelled at once: it may be retrying an unreachable Streams API
        without limit, and it holds no records (readers are separate tasks that ``_shutdown`` drains).
        """
        coordinating = asyncio.create_task(coordinator.run(), name="coordinator")
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({coordinating, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not coordinating.done():
                coordinating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await coordinating

    async def _shutdown(self, coordinator: Coordinator, assignment: AssignmentStrategy) -> None:
        self._stop.set()
        self.state.running = False
        coordinator.stop_readers()
        pending = await coordinator.drain(self.shutdown_timeout_s)
        await coordinator.cancel(pending)
        await coordinator.final_checkpoint()
        await assignment.release()
        log.info("stopped")


def checkpoint_store(cfg: Config, clients: Clients) -> CheckpointStore:
    """The configured checkpoint store (``checkpoint.backend``); ``start`` it before use."""
    cp = cfg.checkpoint
    if cp.backend == "dynamodb":
        assert cp.table is not None  # noqa: S101 - validated by the config model
        return DynamoDBCheckpointStore(clients.checkpoint_table(), cp.table)
    return SqliteCheckpointStore(cp.path)

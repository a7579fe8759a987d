"""The coordinator: which of the stream's shards this worker reads, one reader task per shard.

One loop, whichever way shards are owned. Each cycle it
1. lists the stream's shards when due: every ``reader.shard_discovery_interval_s``, and at once after a
   reader finished (an ended shard's children may be new); the assignment hears of every listing;
2. lets the assignment update what this worker owns (leases: refresh, take, steal);
3. starts a reader for every shard that is ready (parents read to their end), not running, not
   stopped by a failure, and claimed by the assignment;
4. waits for a reader to finish, the assignment's cycle time or the next discovery, then records what
   became of finished readers: the shard ended (its children may start), its lease went to another
   worker (not a failure), or it failed (it stays stopped until restart: moving on would break per-key
   order or lose changes).

The service (service.py) cancels ``run`` on stop and drives the shutdown through ``stop_readers``,
``drain``, ``cancel``, ``final_checkpoint`` and the assignment's ``release``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any, Literal

import structlog

from replicator.checkpoint import Checkpoint, for_one_target
from replicator.core.errors import LeaseLostError
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.logs import error_text
from replicator.runtime import stream_watch
from replicator.runtime.checkpoint_cleanup import CheckpointCleanup
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.fanout_reader import MainReaderState, MainReaderStore, run_fanned_out
from replicator.runtime.shard_fanout import ShardFanOut
from replicator.source.shards import ShardTree

if TYPE_CHECKING:
    from collections.abc import Mapping

    from replicator.core.config import Config
    from replicator.observe.metrics import Metrics
    from replicator.observe.state import WorkerState
    from replicator.pipeline.fanout import RecordProcessor
    from replicator.pipeline.processor import BatchProcessor
    from replicator.runtime.assignment import AssignmentStrategy
    from replicator.source.api import ChangeSource, StreamInfo
    from replicator.source.shards import Shard

log = structlog.get_logger(__name__)

DISCOVERY_RETRY = RetryPolicy(max_attempts=None, max_delay_s=10)
"""Listing shards and assigning them is retried without limit: the worker has nothing else to do."""

FINAL_CHECKPOINT_RETRY = RetryPolicy(max_attempts=2, max_delay_s=1)
"""At shutdown a checkpoint gets few attempts: records it does not cover are only read again."""


@dataclasses.dataclass(slots=True)
class _Running:
    task: asyncio.Task[str]
    reader: ShardReader


class Coordinator:
    """Runs the readers of the shards an assignment gives this worker."""

    def __init__(
        self,
        *,
        cfg: Config,
        api: ChangeSource,
        stream_arn: str,
        assignment: AssignmentStrategy,
        processor: RecordProcessor,
        state: WorkerState,
        metrics: Metrics,
        starting_position: Literal["TRIM_HORIZON", "LATEST"] | None = None,
        targets: Mapping[str, BatchProcessor] | None = None,
    ) -> None:
        """Wire the parts; no I/O (``run`` does it). ``starting_position`` overrides the configured one.

        ``targets`` (fan-out, by target id): each shard's reader feeds one queue and writer per target
        (``shard_fanout.py``) instead of ``processor``.
        """
        self.targets = dict(targets) if targets is not None and len(targets) > 1 else None
        self.cfg = cfg
        self.starting_position = starting_position or cfg.starting_position
        self.api = api
        self.stream_arn = stream_arn
        self.assignment = assignment
        self.processor = processor
        self.state = state
        self.metrics = metrics
        self.tree = ShardTree()
        self._running: dict[str, _Running] = {}
        self._failed: set[str] = set()
        self._ended: dict[str, Checkpoint] = {}
        """Shards this worker read to their end: known before the assignment's next refresh says so."""
        self._shutdown_readers: list[ShardReader] = []
        self._stopping = False
        self._rediscover = True
        self.watch = stream_watch.StreamWatch(api, cfg, stream_arn, state=state, metrics=metrics)
        self.next_stream: StreamInfo | None = None
        """Set when ``run`` returned because the old stream is read to its end and a new one replaced it."""
        self._lost_parents: set[str] = set()
        """Parents found trimmed before they were read to their end: reported once."""
        self._initial: set[str] | None = None
        """Shards listed by the first discovery with no checkpoint in their lineage: ``starting_position`` applies."""
        self._latest_open: set[str] = set()
        """With ``starting_position: LATEST``, the shards open at the first discovery: they start at once, at LATEST."""
        self.cleanup = CheckpointCleanup(cfg.leases)

    async def run(self) -> None:
        """Coordinate until cancelled (the service cancels it on stop)."""
        await self.assignment.start()
        interval = self.cfg.reader.shard_discovery_interval_s
        next_discovery = 0.0
        while not self._stopping:
            if self._rediscover or time.monotonic() >= next_discovery:
                await self._discover()
                next_discovery = time.monotonic() + interval
            await self.assignment.assign(self.tree)
            if self._initial is None:
                # After the first assign: leased checkpoints are known only once the leases were read.
                self._note_initial_shards()
            for sid in await self.cleanup.run_if_due(self.assignment.store, self.stream_arn, self.tree):
                self._ended.pop(sid, None)
            self._start_ready()
            until_discovery = max(0.0, next_discovery - time.monotonic())
            cycle_s = self.assignment.cycle_s
            await self._wait(until_discovery if cycle_s is None else min(cycle_s, until_discovery))
            self._reap()
            self.next_stream = self._stream_to_follow()
            if self.next_stream is not None:
                log.info("stream_followed", stream_arn=self.stream_arn, new_stream_arn=self.next_stream.arn)
                return

    async def _discover(self) -> None:
        shards = await retrying(
            "DescribeStream",
            lambda: self.api.list_shards(self.stream_arn),
            policy=DISCOVERY_RETRY,
            metrics=self.metrics,
        )
        self._rediscover = False
        new = self.tree.update(shards)
        if new:
            log.info("shards_discovered", new=len(new), known=len(self.tree.shards))
        self._forget(self.tree.prune((s.shard_id for s in shards), keep=[*self._running, *self._failed]))
        await self.assignment.discovered(shards)
        if self.tree.shards and all(shard.closed for shard in self.tree.shards.values()):
            # An enabled DynamoDB stream always has an open shard: this one was disabled, or replaced.
            await self.watch.check()

    def _stream_to_follow(self) -> StreamInfo | None:
        """The stream that replaced this one, once every shard of this one is read to its end."""
        successor = self.watch.successor
        if successor is None or self._running or self._failed:
            return None
        checkpoints = self._checkpoints()
        done = all((cp := checkpoints.get(sid)) is not None and cp.shard_end for sid in self.tree.shards)
        return successor if done and not self._lost_lineage(checkpoints) else None

    def _note_initial_shards(self) -> None:
        """Remember which shards ``starting_position`` applies to: those listed when reading starts.

        A shard whose lineage has a checkpoint continues that lineage (from TRIM_HORIZON after its
        parent); one that appears later is read from its start. With LATEST, every shard open now starts
        at LATEST at once, without waiting for a listed closed parent: that parent's records, like the
        open shard's, are older than the start and not wanted (a child started after its parent, at
        TRIM_HORIZON, would replay them).
        """
        checkpoints = self._checkpoints()
        initial = set()
        for shard in self.tree.shards.values():
            lineage = (shard.shard_id, shard.parent_shard_id, shard.adjacent_parent_shard_id)
            if not any(sid is not None and sid in checkpoints for sid in lineage):
                initial.add(shard.shard_id)
        self._initial = initial
        if self.starting_position == "LATEST":
            self._latest_open = {sid for sid in initial if not self.tree.shards[sid].closed}

    def _forget(self, gone: list[str]) -> None:
        """Drop what this worker kept of shards the stream no longer lists (a failed one stays visible)."""
        for sid in gone:
            self._ended.pop(sid, None)
            status = self.state.shards.get(sid)
            if status is not None and status.state == "closed":
                self.state.release(sid)

    def _checkpoints(self) -> dict[str, Checkpoint]:
        return {**self.assignment.checkpoints(), **self._ended}

    def _start_ready(self) -> None:
        checkpoints = self._checkpoints()
        busy = set(self._running) | self._failed | self._lost_lineage(checkpoints)
        for shard in self.tree.ready(checkpoints, busy, unordered=self._latest_open):
            stop = self.assignment.claim(shard.shard_id)
            if stop is not None:
                self._start_reader(shard, checkpoints, stop)
        for shard in self.tree.shards.values():
            sid = shard.shard_id
            if sid in busy or sid in self._latest_open:
                continue
            if not self.assignment.owns(sid):
                status = self.state.shards.get(sid)
                if status is not None and status.state == "waiting_on_parent":
                    self.state.release(sid)  # its lease went to another worker before its parent ended
                continue
            if self.tree.parent_pending(shard, checkpoints):
                self.state.set_state(sid, "waiting_on_parent")

    def _lost_lineage(self, checkpoints: dict[str, Checkpoint]) -> set[str]:
        """Children that must not start: a parent left the stream before it was read to its end.

        A listed parent blocks its child until read (``ShardTree``); an unlisted one was trimmed. With no
        checkpoint it was before this replica's time; with one short of shard end, the records after
        it are lost. That is data loss at shard scope, handled as ``reader.on_trimmed_data`` says: the
        parent is reported stopped and the child waits (``fail``), or the child starts with the loss
        counted and logged (``skip_to_trim_horizon``). Never silently.
        """
        blocked: set[str] = set()
        skip = self.cfg.reader.on_trimmed_data == "skip_to_trim_horizon"
        for shard in self.tree.shards.values():
            own = checkpoints.get(shard.shard_id)
            # A lease item without a position is no progress: leases create one for every listed shard.
            started = own is not None and (own.sequence_number is not None or own.shard_end)
            if started or not self.assignment.owns(shard.shard_id):
                continue  # a child already started got past its parent earlier (or is not ours)
            for parent in (shard.parent_shard_id, shard.adjacent_parent_shard_id):
                cp = checkpoints.get(parent) if parent is not None else None
                if parent is None or parent in self.tree.shards or cp is None or cp.shard_end:
                    continue
                if parent not in self._lost_parents:
                    self._lost_parents.add(parent)
                    self._report_lost_parent(parent, shard.shard_id, cp, skip=skip)
                if not skip:
                    blocked.add(shard.shard_id)
        return blocked

    def _report_lost_parent(self, parent: str, child: str, cp: Checkpoint, *, skip: bool) -> None:
        self.metrics.errors.labels(kind="trimmed_data").inc()
        if skip:
            self.metrics.errors.labels(kind="trimmed_data_skipped").inc()
            log.warning(
                "trimmed_data_skipped",
                shard_id=parent,
                child_shard_id=child,
                checkpoint=cp.sequence_number,
                action="the parent left the stream before it was read to its end; its child starts",
            )
            return
        self.state.set_state(parent, "stopped", error="TrimmedDataError")
        log.error(
            "trimmed_data",
            shard_id=parent,
            child_shard_id=child,
            checkpoint=cp.sequence_number,
            action="the parent left the stream before it was read to its end; its child waits. "
            "Set reader.on_trimmed_data: skip_to_trim_horizon to accept the loss and go on",
        )

    def _start_reader(self, shard: Shard, checkpoints: dict[str, Checkpoint], stop: asyncio.Event) -> None:
        cfg = self.cfg
        for parent in self.tree.parents_ending_above(shard):
            # Never seen on AWS and not excluded by its documentation: a key's changes in the same
            # timestamp on both sides of this rollover may be ordered the wrong way (DESIGN, "Ordering").
            self.metrics.errors.labels(kind="sequence_order").inc()
            log.error(
                "sequence_order",
                shard_id=shard.shard_id,
                parent_shard_id=parent.shard_id,
                starting_sequence_number=shard.starting_sequence_number,
                parent_ending_sequence_number=parent.ending_sequence_number,
                action="the child's sequence numbers start below its parent's end; reading goes on. "
                "Run replicator verify --repair once the child is read",
            )
        parent_done = shard.parent_shard_id is not None and shard.parent_shard_id in checkpoints
        # The configured position (LATEST) applies to shards listed when reading starts; a child of a
        # shard we read, or a shard that appears later, is read from its start so none of its records
        # are missed.
        initial = self._initial is not None and shard.shard_id in self._initial
        configured = initial or (self.assignment.configured_position_any_cycle and not parent_done)
        position = self.starting_position if configured else "TRIM_HORIZON"
        settings = ReaderSettings(
            reader=cfg.reader,
            batch_size=cfg.failure.batch_size,
            initial_position=position,
            batching_window_s=cfg.failure.maximum_batching_window_seconds,
            parallelization_factor=cfg.failure.parallelization_factor,
        )
        retry_policy = RetryPolicy(max_attempts=None, max_delay_s=10)
        checkpoint = checkpoints.get(shard.shard_id)
        if self.targets is None:
            reader = ShardReader(
                api=self.api,
                stream_arn=self.stream_arn,
                shard=shard,
                checkpoint=for_one_target(checkpoint, cfg.target.target_id),
                store=self.assignment.store,
                processor=self.processor,
                state=self.state,
                metrics=self.metrics,
                settings=settings,
                retry_policy=retry_policy,
                stop=stop,
            )
            task = asyncio.create_task(reader.run(), name=f"shard:{shard.shard_id}")
            self._running[shard.shard_id] = _Running(task, reader)
            return
        # Fan-out: the reader only hands batches out (one at a time: each target's writer keeps per-key
        # order); each target's writer saves its own progress in the shard's checkpoint.
        fanout = ShardFanOut(
            api=self.api,
            settings=settings,
            stream_arn=self.stream_arn,
            shard=shard,
            checkpoint=checkpoint,
            processors=self.targets,
            store=self.assignment.store,
            state=self.state,
            metrics=self.metrics,
            cfg=cfg.fanout,
            retry_policy=retry_policy,
            stop=stop,
        )
        reader = ShardReader(
            api=self.api,
            stream_arn=self.stream_arn,
            shard=shard,
            checkpoint=checkpoint,
            store=MainReaderStore(fanout),
            processor=fanout,
            state=MainReaderState(self.state),
            metrics=self.metrics,
            settings=dataclasses.replace(settings, parallelization_factor=1),
            retry_policy=retry_policy,
            stop=stop,
        )
        task = asyncio.create_task(run_fanned_out(fanout, reader), name=f"shard:{shard.shard_id}")
        self._running[shard.shard_id] = _Running(task, reader)

    async def _wait(self, timeout_s: float) -> None:
        """Sleep until a reader finishes or ``timeout_s`` passes."""
        tasks: set[asyncio.Future[Any]] = {running.task for running in self._running.values()}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(timeout_s)

    def _reap(self) -> None:
        """Record what became of every finished reader."""
        for shard_id, running in list(self._running.items()):
            task = running.task
            if not task.done():
                continue
            del self._running[shard_id]
            # Whatever ended, the next cycle lists the shards again: an ended shard's children may be new.
            self._rediscover = True
            exc = task.exception() if not task.cancelled() else None
            stopped = exc is None and not task.cancelled() and task.result() == "stopped"
            if isinstance(exc, LeaseLostError) or (
                stopped and not self._stopping and not self.assignment.owns(shard_id)
            ):
                # Another worker holds the shard now and resumes from its last checkpoint: not a failure.
                # Its reader stopped mid-checkpoint (LeaseLostError) or between batches (its stop event);
                # either way the shard is no longer this worker's to report: no state, no lag series.
                log.info("shard_handed_over", shard_id=shard_id)
                self.state.release(shard_id)
            elif exc is not None:
                self.metrics.errors.labels(kind="shard_failed").inc()
                self.state.set_state(shard_id, "stopped", error=type(exc).__name__)
                log.error("shard_stopped", shard_id=shard_id, error=error_text(exc), error_type=type(exc).__name__)
                self._failed.add(shard_id)
            elif task.result() == "shard_end":
                status = self.state.shard(shard_id)
                self._ended[shard_id] = Checkpoint(
                    shard_id, status.checkpoint, shard_end=True, updated_at_s=time.time()
                )
                self.state.set_state(shard_id, "closed")

    # --- shutdown, in the order the service calls it -------------------------------------------------

    def stop_readers(self) -> None:
        """Start no reader any more and tell the running ones to stop after their current batch."""
        self._stopping = True
        self.assignment.stop_readers()
        self._shutdown_readers = [running.reader for running in self._running.values()]

    async def drain(self, timeout_s: float) -> set[asyncio.Task[str]]:
        """Let readers finish their batches and checkpoint, for up to ``timeout_s``; return those still busy."""
        tasks = [running.task for running in self._running.values()]
        if not tasks:
            return set()
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return pending

    async def cancel(self, pending: set[asyncio.Task[str]]) -> None:
        """Cancel readers that did not finish in time (their unsaved records are read again after restart)."""
        for task in pending:
            task.cancel()
        if pending:
            log.warning("shutdown_cancelled_readers", readers=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
        for running in self._running.values():
            task = running.task
            if not task.cancelled() and task.exception() is not None:
                log.error("shard_error_at_shutdown", error=error_text(task.exception()))  # type: ignore[arg-type]

    async def final_checkpoint(self) -> None:
        """Save what readers finished but no checkpoint covers yet (lanes done when their reader was cancelled)."""
        await asyncio.gather(*(self._final_checkpoint(reader) for reader in self._shutdown_readers))

    async def _final_checkpoint(self, reader: ShardReader) -> None:
        try:
            await reader.final_checkpoint(FINAL_CHECKPOINT_RETRY)
        except LeaseLostError:
            pass  # the new owner resumes from the last checkpoint saved
        except Exception as exc:  # noqa: BLE001 - at shutdown an unsaved checkpoint only means reading again
            log.warning("final_checkpoint_failed", shard_id=reader.shard.shard_id, error=type(exc).__name__)

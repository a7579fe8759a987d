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
from typing import TYPE_CHECKING, Any

import structlog

from replicator.checkpoint import Checkpoint
from replicator.core.errors import LeaseLostError
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.logs import error_text
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.source.shards import ShardTree

if TYPE_CHECKING:
    from replicator.core.config import Config
    from replicator.observe.metrics import Metrics
    from replicator.observe.state import WorkerState
    from replicator.pipeline.processor import BatchProcessor
    from replicator.runtime.assignment import AssignmentStrategy
    from replicator.source.api import ChangeSource
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
        processor: BatchProcessor,
        state: WorkerState,
        metrics: Metrics,
    ) -> None:
        """Wire the parts; no I/O (``run`` does it)."""
        self.cfg = cfg
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

    async def run(self) -> None:
        """Coordinate until cancelled (the service cancels it on stop)."""
        await self.assignment.start()
        interval = self.cfg.reader.shard_discovery_interval_s
        first_cycle = True
        next_discovery = 0.0
        while not self._stopping:
            if self._rediscover or time.monotonic() >= next_discovery:
                await self._discover()
                next_discovery = time.monotonic() + interval
            await self.assignment.assign(self.tree)
            self._start_ready(first_cycle=first_cycle)
            first_cycle = False
            until_discovery = max(0.0, next_discovery - time.monotonic())
            cycle_s = self.assignment.cycle_s
            await self._wait(until_discovery if cycle_s is None else min(cycle_s, until_discovery))
            self._reap()

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

    def _forget(self, gone: list[str]) -> None:
        """Drop what this worker kept of shards the stream no longer lists (a failed one stays visible)."""
        for sid in gone:
            self._ended.pop(sid, None)
            status = self.state.shards.get(sid)
            if status is not None and status.state == "closed":
                self.state.release(sid)

    def _checkpoints(self) -> dict[str, Checkpoint]:
        return {**self.assignment.checkpoints(), **self._ended}

    def _start_ready(self, *, first_cycle: bool) -> None:
        checkpoints = self._checkpoints()
        busy = set(self._running) | self._failed
        for shard in self.tree.ready(checkpoints, busy):
            stop = self.assignment.claim(shard.shard_id)
            if stop is not None:
                self._start_reader(shard, checkpoints, stop, first_cycle=first_cycle)
        for shard in self.tree.shards.values():
            sid = shard.shard_id
            if sid not in busy and self.assignment.owns(sid) and self.tree.parent_pending(shard, checkpoints):
                self.state.set_state(sid, "waiting_on_parent")

    def _start_reader(
        self, shard: Shard, checkpoints: dict[str, Checkpoint], stop: asyncio.Event, *, first_cycle: bool
    ) -> None:
        cfg = self.cfg
        parent_done = shard.parent_shard_id is not None and shard.parent_shard_id in checkpoints
        # The configured position (LATEST) applies to shards open when reading starts; a child of a shard
        # we read, or a shard that appears later, is read from its start so none of its records are missed.
        configured = first_cycle or self.assignment.configured_position_any_cycle
        position = cfg.starting_position if (configured and not parent_done) else "TRIM_HORIZON"
        reader = ShardReader(
            api=self.api,
            stream_arn=self.stream_arn,
            shard=shard,
            checkpoint=checkpoints.get(shard.shard_id),
            store=self.assignment.store,
            processor=self.processor,
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
            stop=stop,
        )
        task = asyncio.create_task(reader.run(), name=f"shard:{shard.shard_id}")
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
            if isinstance(exc, LeaseLostError):
                # Another worker holds the shard now and resumes from its last checkpoint: not a failure.
                log.info("shard_handed_over", shard_id=shard_id)
                self.state.set_state(shard_id, "closed")
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

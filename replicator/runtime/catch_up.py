"""A detached target's own reader of the shard, from its own checkpoint until it rejoins the shard's reader.

It is a ``ShardReader`` (iterator AFTER_SEQUENCE_NUMBER of the target's position, polling, throttling,
ExpiredIterator and TrimmedDataAccess handled as for any shard) whose processor writes to this one target
only, and only records the shard's reader already handed out (``ShardFanOut.handed``). Before each write it
checks, with no await between the check and the switch, whether the target has written everything handed
out: then the target is attached again (the reader's next batch is its next record) and the catch-up stops.
Records of a page past the hand-out are left to the reader; if the hand-out moved on meanwhile, they are
written here first.

One catch-up reader per shard at a time (``ShardFanOut.catch_up_slot``): with the shard's reader, two
readers, DynamoDB Streams' documented limit per shard. Detached targets of one shard take turns.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from replicator.checkpoint import Checkpoint
from replicator.core.errors import ReplicatorError
from replicator.pipeline.processor import BatchResult
from replicator.runtime.consumer import ShardReader
from replicator.runtime.shard_fanout import seq_int

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from replicator.core.records import ChangeRecord
    from replicator.observe.state import ShardState
    from replicator.runtime.shard_fanout import ShardFanOut, TargetLane


class CatchUpGapError(ReplicatorError):
    """A catch-up page did not continue from the target's position: writing on would skip records."""


async def catch_up(fanout: ShardFanOut, lane: TargetLane) -> None:
    """Read the shard for one detached target until it is attached again (or the shard stops)."""
    async with fanout.catch_up_slot:
        if fanout.attach_if_caught_up(lane) or fanout.stopping.is_set():
            return
        fanout.readers += 1
        fanout.max_readers = max(fanout.max_readers, fanout.readers)
        stop = asyncio.Event()
        linked = asyncio.ensure_future(_link(fanout.stopping, stop))
        position = lane.position
        initial = fanout.settings.initial_position if position is not None else "TRIM_HORIZON"
        reader = ShardReader(
            api=fanout.api,
            stream_arn=fanout.stream_arn,
            shard=fanout.shard,
            checkpoint=Checkpoint(fanout.shard.shard_id, position, shard_end=False, updated_at_s=0.0),
            store=_NoSaves(),
            processor=_CatchUpWriter(fanout, lane, stop),
            state=_Quiet(),
            metrics=fanout.metrics,
            settings=dataclasses.replace(
                fanout.settings, initial_position=initial, batching_window_s=0.0, parallelization_factor=1
            ),
            retry_policy=fanout.retry_policy,
            stop=stop,
        )
        fanout.log.info("catch_up_started", target=lane.target_id, checkpoint=position)
        try:
            await reader.run()
        finally:
            linked.cancel()
            fanout.readers -= 1
        fanout.log.info("catch_up_ended", target=lane.target_id, attached=lane.attached, checkpoint=lane.position)


async def _link(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


class _CatchUpWriter:
    """The catch-up reader's processor: writes handed-out records to one target, attaches it when through."""

    def __init__(self, fanout: ShardFanOut, lane: TargetLane, stop: asyncio.Event) -> None:
        self.fanout = fanout
        self.lane = lane
        self.stop = stop

    def _undone(self, records: Sequence[ChangeRecord]) -> list[ChangeRecord]:
        position = self.lane.position
        if position is not None:
            return self.lane.undone(records)
        # No position of its own: the target starts where the shard's reader started.
        first = self.fanout.first_handed
        floor = seq_int(first) if first is not None else 0
        return [r for r in records if seq_int(r.sequence_number) >= floor]

    async def process(self, records: Sequence[ChangeRecord]) -> BatchResult:
        """Write the records the reader handed out; attach the target once it wrote all of them."""
        fanout, lane = self.fanout, self.lane
        pending = self._undone(records)
        while True:
            # Check and switch with no await between: nothing can be handed out in between.
            if fanout.attach_if_caught_up(lane):
                self.stop.set()
                return BatchResult()
            if not pending:
                return BatchResult()
            handed = seq_int(fanout.handed) if fanout.handed is not None else -1
            keep = [r for r in pending if seq_int(r.sequence_number) <= handed]
            if not keep:
                raise CatchUpGapError(f"catch-up of shard {fanout.shard.shard_id} found no record to continue from")
            pending = pending[len(keep) :]
            await fanout.write(lane, keep)


class _NoSaves:
    """The catch-up reader's store: the target's progress is saved by ``ShardFanOut.write``."""

    async def start(self) -> None:
        """Nothing to create."""

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Never called by a reader."""
        del stream_arn
        return {}

    async def save(
        self,
        stream_arn: str,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool = False,
        parent_shard_id: str | None = None,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        """Nothing: the shard's end is the shard's reader's to save."""
        del stream_arn, shard_id, sequence_number, shard_end, parent_shard_id, targets

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        """Never called by a reader."""
        del stream_arn, listed, now_s, retention_s
        return []

    async def close(self) -> None:
        """Nothing to release."""


class _Quiet:
    """The catch-up reader's state reports: the shard's status is its main reader's (targets: ``write``)."""

    def set_state(self, shard_id: str, state: ShardState, error: str | None = None) -> None:
        """Ignore."""
        del shard_id, state, error

    def read(self, shard_id: str, *, newest_created_us: int) -> None:
        """Ignore."""
        del shard_id, newest_created_us

    def caught_up(self, shard_id: str) -> None:
        """Ignore."""
        del shard_id

    def batch_done(self, shard_id: str) -> None:
        """Ignore."""
        del shard_id

    def checkpointed(self, shard_id: str, sequence_number: str | None) -> None:
        """Ignore."""
        del shard_id, sequence_number

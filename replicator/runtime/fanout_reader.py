"""The shard's one reader with fan-out: what it reports, what it saves, and how it runs beside the writers.

The reader is a plain ``ShardReader`` whose processor is the shard's ``ShardFanOut``: it hands batches
out. Its own checkpoints are not stored (``MainReaderStore``): what a target wrote is, by the target's
writer; its shard-end save waits for every target. ``run_fanned_out`` runs it with the writers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from replicator.checkpoint import Checkpoint
    from replicator.observe.state import ShardState, WorkerState
    from replicator.runtime.consumer import ReaderExit, ShardReader
    from replicator.runtime.shard_fanout import ShardFanOut


class MainReaderState:
    """The shard reader's reports with fan-out: all but its checkpoints (the targets' saves report those)."""

    def __init__(self, state: WorkerState) -> None:
        """Wrap the worker's state."""
        self._state = state

    def set_state(self, shard_id: str, state: ShardState, error: str | None = None) -> None:
        """Pass on."""
        self._state.set_state(shard_id, state, error)

    def read(self, shard_id: str, *, newest_created_us: int) -> None:
        """Pass on."""
        self._state.read(shard_id, newest_created_us=newest_created_us)

    def caught_up(self, shard_id: str) -> None:
        """Pass on."""
        self._state.caught_up(shard_id)

    def batch_done(self, shard_id: str) -> None:
        """Pass on."""
        self._state.batch_done(shard_id)

    def checkpointed(self, shard_id: str, sequence_number: str | None) -> None:
        """Ignore: the reader's position is what it handed out, not what every target wrote."""
        del shard_id, sequence_number


class MainReaderStore:
    """The shard reader's checkpoint store with fan-out: its saves only hand the shard end over.

    The reader saves after each batch it handed out; the targets' writers save their own progress
    instead (``ShardFanOut.save``). At the shard's end the reader's save waits for every target.
    """

    def __init__(self, fanout: ShardFanOut) -> None:
        """Wrap the shard's fan-out."""
        self.fanout = fanout

    async def start(self) -> None:
        """Nothing to create."""

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Never called by a reader."""
        return await self.fanout.store.load_all(stream_arn)

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        """Never called by a reader: the coordinator cleans up through the assignment's store."""
        del stream_arn, listed, now_s, retention_s
        return []

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
        """At shard end: wait for every target and save the shard end; otherwise nothing to store."""
        del stream_arn, shard_id, sequence_number, parent_shard_id, targets
        if shard_end:
            await self.fanout.finish_shard()

    async def close(self) -> None:
        """Nothing to release."""


async def run_fanned_out(fanout: ShardFanOut, reader: ShardReader) -> ReaderExit:
    """Run a shard's reader and its targets' writers; a writer's failure stops the reader with that error.

    Stopped (shutdown, lease lost), the queued batches are written before it returns; cancelled, the
    writers are cancelled too (their records are read again after a restart).
    """
    if reader.position is None and any(lane.position is not None for lane in fanout.lanes.values()):
        # A target has written records of this shard and another none: the shard has no position of its
        # own, and starting_position LATEST would skip what came since for every target. Read it from the
        # start; targets already past a record skip it.
        reader.settings = dataclasses.replace(reader.settings, initial_position="TRIM_HORIZON")
    fanout.start()
    reading = asyncio.ensure_future(reader.run())
    failed = asyncio.ensure_future(fanout.failed.wait())
    try:
        await asyncio.wait({reading, failed}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done() and fanout.failure is not None:
            raise fanout.failure
        exit_ = await reading
        if exit_ == "stopped":
            await fanout.drain()
        return exit_
    finally:
        failed.cancel()
        if not reading.done():
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        await fanout.close()

"""Review of the set-aside at a shard's end (fanout.on_shard_end_while_detached: dead_letter)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from unit.runtime.fanout_kit import SHARD, Target, seqs, sqlite, stream_of, wire

from replicator.runtime.fanout_reader import run_fanned_out

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_failing_dead_letter_destination_does_not_end_the_shard(tmp_path: Path) -> None:
    """Set-aside whose dead letters fail: the shard fails, no shard end saved, b's position not past its writes."""
    stream = stream_of(60)
    store = await sqlite(tmp_path)
    healthy, stuck = Target(), Target(hold_after=3, dead_letter_error=RuntimeError("destination down"))
    fanout, reader = wire(stream, {"a": healthy, "b": stuck}, store, on_shard_end="dead_letter")
    with pytest.raises(RuntimeError, match="destination down"):
        await asyncio.wait_for(run_fanned_out(fanout, reader), 20)
    # A writer's failure stops the whole shard (documented): a may have batches left unwritten, re-read later.
    assert healthy.written == seqs(1, len(healthy.written))
    saved = (await store.load_all(stream.arn))[SHARD]
    assert saved.targets["a"] == f"{len(healthy.written):021d}"
    assert not saved.shard_end
    assert saved.targets["b"] == f"{len(stuck.written):021d}"
    assert saved.sequence_number == saved.targets["b"]

"""Review of fan-out: one target stuck must not stall the others."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from unit.runtime.fanout_kit import Target, seqs, sqlite, stream_of, until, wire

from replicator.runtime.fanout_reader import run_fanned_out

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("hold_after", [0, 3])
@pytest.mark.parametrize("closed", [True, False])
async def test_a_target_stuck_from_its_first_write_does_not_stall_the_other(
    tmp_path: Path, *, hold_after: int, closed: bool
) -> None:
    """Target b holds from its first write (or its 4th): target a still writes all 50 records."""
    stream = stream_of(50, closed=closed)
    fast, stuck = Target(), Target(hold_after=hold_after)
    fanout, reader = wire(stream, {"a": fast, "b": stuck}, await sqlite(tmp_path))
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await until(lambda: fast.written == seqs(1, 50), task)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

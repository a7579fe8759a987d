"""FanOut: one batch through every target's processor."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import pytest

from replicator.core.records import ChangeRecord
from replicator.pipeline.fanout import FanOut
from replicator.pipeline.processor import BatchResult


class _Target:
    """A processor that records what it got, and fails when told to."""

    def __init__(self, *, fail: BaseException | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def process(self, records: Sequence[ChangeRecord]) -> BatchResult:
        self.batches.append([r.sequence_number for r in records])
        if self.fail is not None:
            raise self.fail
        return BatchResult(collections.Counter(written=len(records)))


def _records(*sequence_numbers: str) -> list[ChangeRecord]:
    return [
        ChangeRecord(
            event_name="INSERT",
            sequence_number=n,
            shard_id="shard-1",
            keys={"pk": {"S": n}},
            new_image={"pk": {"S": n}},
            old_image=None,
            approximate_creation_time_us=1,
            event={},
        )
        for n in sequence_numbers
    ]


def _fan_out(**targets: _Target) -> FanOut:
    # Duck-typed stand-ins for BatchProcessor: FanOut only calls process().
    return FanOut(dict(targets.items()))  # type: ignore[arg-type]


async def test_every_target_gets_the_whole_batch_and_outcomes_add_up() -> None:
    """Each target processes the same records; the result sums the targets' outcomes."""
    a, b = _Target(), _Target()
    result = await _fan_out(a=a, b=b).process(_records("1", "2"))
    assert a.batches == b.batches == [["1", "2"]]
    assert result.outcomes == {"written": 4}


async def test_one_target_failing_fails_the_batch_after_the_others_finished() -> None:
    """A failure of one target is raised, and the other target still processed the batch."""
    a, b = _Target(fail=RuntimeError("down")), _Target()
    with pytest.raises(RuntimeError, match="down"):
        await _fan_out(a=a, b=b).process(_records("1"))
    assert b.batches == [["1"]]

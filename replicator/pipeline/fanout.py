"""One batch of a shard, written to every target: each target through its own ``BatchProcessor``.

A target's processor is exactly the single-target one (its own filters, transforms, conditional writer,
``TargetHealth`` and write gate), so what holds for one target holds for each. ``FanOut.process`` returns
when every target has its outcome for every record, and raises the first failure after all have finished:
the reader then checkpoints nothing of the batch, and a replay reaches the targets that already have it as
superseded writes (last-writer-wins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from replicator.pipeline.processor import BatchResult

if TYPE_CHECKING:
    from replicator.core.records import ChangeRecord
    from replicator.pipeline.processor import BatchProcessor


class RecordProcessor(Protocol):
    """What a shard reader hands its batches to: one target's ``BatchProcessor`` or a ``FanOut``."""

    async def process(self, records: Sequence[ChangeRecord]) -> BatchResult:
        """Return once every record of the batch has its outcome; raise when one cannot be given."""
        ...


class FanOut:
    """Every target's processor, fed the same batches."""

    def __init__(self, processors: Mapping[str, BatchProcessor]) -> None:
        """``processors``: by target id (``TargetConfig.target_id``), in configuration order."""
        self.processors = dict(processors)

    async def process(self, records: Sequence[ChangeRecord]) -> BatchResult:
        """Process the batch for every target at once; the outcomes are summed over targets."""
        results = await asyncio.gather(
            *(processor.process(records) for processor in self.processors.values()), return_exceptions=True
        )
        total = BatchResult()
        for result in results:
            if isinstance(result, BaseException):
                raise result
            total.outcomes.update(result.outcomes)
        return total

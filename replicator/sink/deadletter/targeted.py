"""One destination shared by every target of a fan-out, seen by one target: its letters name that target.

The service and the Lambda handler open one destination (``from_config``) and give each target's
processor ``for_target(sink, target)``: the same file or queue (one group commit, one SQS client), with
letters stamped with that target's id, region and table, so ``redrive`` replays each to its own target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from replicator.sink.deadletter.jsonl import JsonlDeadLetters
from replicator.sink.deadletter.sqs import SqsDeadLetters

if TYPE_CHECKING:
    from replicator.core.records import ChangeRecord
    from replicator.core.target_config import TargetConfig
    from replicator.sink.deadletter.document import DeadLetterContext

S = TypeVar("S")


class TargetDeadLetters:
    """A destination's view for one target (see the module docstring)."""

    def __init__(self, sink: JsonlDeadLetters | SqsDeadLetters, context: DeadLetterContext) -> None:
        """Bind to the shared ``sink``; no I/O."""
        self.sink = sink
        self.context = context

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Store one dead letter naming this view's target; returns once it is stored."""
        await self.sink.send_document(self.context.document(record, error=error, attempts=attempts))


def for_target(sink: S, target: TargetConfig) -> S | TargetDeadLetters:
    """``sink`` as seen by ``target``'s processor; any other sink (a test's, redrive's collector) as it is."""
    if isinstance(sink, JsonlDeadLetters | SqsDeadLetters):
        return TargetDeadLetters(sink, sink.context.with_target(target))
    return sink

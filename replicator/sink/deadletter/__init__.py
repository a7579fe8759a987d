"""Dead-letter destinations: where a record that cannot be replicated goes, replayable by ``redrive``.

A dead letter is one JSON document holding the original stream record, the error, and where the record
came from and was going; ``redrive`` rebuilds the ChangeRecord from it alone. ``document`` defines that
format (``replicator.dead_letter/1``) and its SQS message bodies.

Two destinations, chosen by ``failure.on_failure.destination``:

- ``jsonl``: a JSONL file (a path or ``file://`` URL), created 0600: one document per line, appended and
  fsynced; concurrent ``send`` calls are group-committed (one write and one fsync per batch of dead
  letters); a line torn by a crash is set aside before the next append;
- ``sqs``: an SQS queue (an ``https://`` queue URL): SendMessageBatch. A document over SQS's message
  size limit is gzip-compressed; if still too large it is split into numbered parts that ``redrive``
  reassembles (see DESIGN.md, "Failure handling"). A FIFO queue gets a message group per target and item key.

Every letter names its target (``target.id``); with fan-out, each target's processor gets the shared
destination through ``for_target`` (``targeted.py``).

``send`` returns only once the dead letter is stored; raising means it was not, and the processor must
not let the checkpoint pass the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from replicator.sink.deadletter.document import (
    FORMAT,
    SQS_MAX_MESSAGE_BYTES,
    DeadLetterContext,
    DeadLetterError,
    SqsAssembler,
    dumps,
    encode_sqs_bodies,
    letter_target_id,
    record_from_document,
)
from replicator.sink.deadletter.jsonl import JsonlContents, JsonlDeadLetters, read_jsonl, scan_jsonl
from replicator.sink.deadletter.sqs import (
    SQS_BATCH_MAX,
    SqsDeadLetters,
    is_fifo,
    message_group_id,
    open_sqs_client,
    sqs_region,
)
from replicator.sink.deadletter.targeted import TargetDeadLetters, for_target

if TYPE_CHECKING:
    import contextlib

    from replicator.core.config import Config
    from replicator.core.records import ChangeRecord
    from replicator.observe.metrics import Metrics

__all__ = [
    "FORMAT",
    "SQS_BATCH_MAX",
    "SQS_MAX_MESSAGE_BYTES",
    "DeadLetterContext",
    "DeadLetterError",
    "DeadLetterSink",
    "JsonlContents",
    "JsonlDeadLetters",
    "SqsAssembler",
    "SqsDeadLetters",
    "TargetDeadLetters",
    "dumps",
    "encode_sqs_bodies",
    "for_target",
    "from_config",
    "is_fifo",
    "is_sqs_url",
    "jsonl_path",
    "letter_target_id",
    "message_group_id",
    "open_sqs_client",
    "read_jsonl",
    "record_from_document",
    "scan_jsonl",
    "sqs_region",
]


class DeadLetterSink(Protocol):
    """Where records that cannot be replicated go, with everything needed to replay them.

    ``send`` returns once the dead letter is durably stored; raising means it was not, and the caller
    must not advance the checkpoint past the record.
    """

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Store one dead letter durably."""


# --------------------------------------------------------------------------------------------------
# From the configuration
# --------------------------------------------------------------------------------------------------


def is_sqs_url(destination: str) -> bool:
    """Tell an SQS queue URL (http(s)://...) from a file path or file:// URL."""
    return urlparse(destination).scheme in ("http", "https")


def jsonl_path(destination: str) -> Path:
    """Return the file a ``file://`` URL or plain path names."""
    parsed = urlparse(destination)
    if parsed.scheme == "file":
        return Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)
    return Path(destination)


async def from_config(
    cfg: Config,
    stack: contextlib.AsyncExitStack,
    *,
    metrics: Metrics | None = None,
    destination: str | None = None,
) -> JsonlDeadLetters | SqsDeadLetters | None:
    """Open the sink ``failure.on_failure.destination`` (or ``destination``) names; None without one."""
    dest = destination if destination is not None else cfg.failure.on_failure.destination
    if not dest:
        return None
    context = DeadLetterContext.from_config(cfg)
    if is_sqs_url(dest):
        client = await open_sqs_client(stack, cfg, dest)
        return SqsDeadLetters(client, dest, context=context, metrics=metrics)
    sink = JsonlDeadLetters(jsonl_path(dest), context=context)
    stack.push_async_callback(sink.close)
    return sink


def _check_protocol(sink: JsonlDeadLetters | SqsDeadLetters) -> DeadLetterSink:
    # Keeps mypy checking that both destinations satisfy DeadLetterSink above.
    return sink

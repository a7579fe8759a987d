"""Dead letters sent to an SQS queue (an ``https://`` queue URL) with SendMessageBatch.

A document too large for one message goes in several (see
:func:`replicator.sink.deadletter.document.encode_sqs_bodies`); ``send`` returns once SQS has them all.

A FIFO queue (URL ending ``.fifo``) gets a MessageGroupId per source table, target and item key (one
target's letters of one key stay in order; other keys and targets are not held up behind them) and a
MessageDeduplicationId from the body (the same body sent again within SQS's 5-minute window is stored
once).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from replicator.core.records import ChangeRecord
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics
from replicator.sink.deadletter.document import (
    SQS_MAX_MESSAGE_BYTES,
    DeadLetterContext,
    DeadLetterError,
    encode_sqs_bodies,
    letter_target_id,
)

if TYPE_CHECKING:
    import contextlib

    from types_aiobotocore_sqs import SQSClient

    from replicator.core.config import Config

SQS_BATCH_MAX = 10


class SqsDeadLetters:
    """Sends dead letters to an SQS queue with SendMessageBatch (retried like every AWS call)."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        context: DeadLetterContext | None = None,
        metrics: Metrics | None = None,
        retry_policy: RetryPolicy | None = None,
        max_message_bytes: int = SQS_MAX_MESSAGE_BYTES,
    ) -> None:
        """Bind to a queue; no I/O."""
        self.client = client
        self.queue_url = queue_url
        self.context = context or DeadLetterContext()
        self.metrics = metrics or Metrics()
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=None, max_delay_s=10)
        self.max_message_bytes = max_message_bytes

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Send one dead letter (in as many messages as its size needs); returns once SQS has them all."""
        await self.send_document(self.context.document(record, error=error, attempts=attempts))

    async def send_document(self, doc: dict[str, Any]) -> None:
        """Send a ready document."""
        bodies = encode_sqs_bodies(doc, max_bytes=self.max_message_bytes)
        group = message_group_id(doc) if is_fifo(self.queue_url) else None
        batch: list[dict[str, str]] = []
        size = 0
        for index, body in enumerate(bodies):
            length = len(body.encode("utf-8"))
            # A SendMessageBatch request carries at most 10 messages and max_message_bytes in total.
            if batch and (len(batch) == SQS_BATCH_MAX or size + length > self.max_message_bytes):
                await self._send_batch(batch)
                batch, size = [], 0
            entry = {"Id": str(index), "MessageBody": body}
            if group is not None:
                entry["MessageGroupId"] = group
                entry["MessageDeduplicationId"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
            batch.append(entry)
            size += length
        if batch:
            await self._send_batch(batch)

    async def _send_batch(self, entries: list[dict[str, str]]) -> None:
        remaining = entries
        while remaining:
            resp = await retrying(
                "SendMessageBatch",
                lambda r=remaining: self.client.send_message_batch(QueueUrl=self.queue_url, Entries=r),  # type: ignore[misc]
                policy=self.retry_policy,
                metrics=self.metrics,
            )
            failed = resp.get("Failed") or []
            if not failed:
                return
            permanent = [f for f in failed if f.get("SenderFault")]
            if permanent:
                codes = sorted({str(f.get("Code")) for f in permanent})
                raise DeadLetterError(f"SQS refused dead letters for {self.queue_url}: {', '.join(codes)}")
            # Entries failed on SQS's side: send just those again after a pause.
            failed_ids = {f["Id"] for f in failed}
            remaining = [e for e in remaining if e["Id"] in failed_ids]
            self.metrics.retries.labels(operation="SendMessageBatch").inc()
            await asyncio.sleep(self.retry_policy.delay_s(1))


def is_fifo(queue_url: str) -> bool:
    """True for a FIFO queue (its name ends in ``.fifo``)."""
    return queue_url.rstrip("/").endswith(".fifo")


def message_group_id(doc: dict[str, Any]) -> str:
    """The FIFO message group of a dead letter: a hash of its source table, target and item key (no item data).

    A letter without a target id (written before targets had ids) keeps its former group: table and key.
    """
    keys = (doc.get("record") or {}).get("dynamodb", {}).get("Keys")
    if keys is None:
        return str(doc.get("id"))
    table = (doc.get("source") or {}).get("table") or doc.get("streamArn")
    target_id = letter_target_id(doc)
    parts = [table, keys] if target_id is None else [table, target_id, keys]
    identity = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()


def sqs_region(queue_url: str, default: str) -> str:
    """Return the region in an SQS URL (``https://sqs.<region>.amazonaws.com/...``), else ``default``."""
    host = urlparse(queue_url).hostname or ""
    parts = host.split(".")
    if len(parts) >= 4 and parts[0] == "sqs":  # noqa: PLR2004 - sqs.<region>.amazonaws.com
        return parts[1]
    return default


async def open_sqs_client(stack: contextlib.AsyncExitStack, cfg: Config, queue_url: str) -> SQSClient:
    """Open an SQS client for ``queue_url`` inside ``stack`` (region/endpoint from failure.on_failure)."""
    from aiobotocore.session import get_session  # noqa: PLC0415 - only with an SQS destination

    from replicator.aws.clients import client_config  # noqa: PLC0415 - same

    of = cfg.failure.on_failure
    return await stack.enter_async_context(
        get_session().create_client(
            "sqs",
            region_name=of.region or sqs_region(queue_url, cfg.target.region),
            endpoint_url=of.endpoint_url,
            config=client_config(),
        )
    )

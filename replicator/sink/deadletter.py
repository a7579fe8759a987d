"""Dead-letter destinations: where a record that cannot be replicated goes, replayable by ``redrive``.

A dead letter is one JSON document holding the original stream record in the Lambda event shape
(``record``; B/BS bytes base64-encoded, as on Lambda's wire), the error, and where the record came from
and was going (shard, sequence number, stream ARN, source and target table and region, attempts,
timestamps). ``redrive`` rebuilds the ChangeRecord from it alone, so a record can be replayed long after
the stream's 24 h retention has passed.

Two destinations, chosen by ``failure.on_failure.destination``:

- a JSONL file (a path or ``file://`` URL): one document per line, appended and fsynced; concurrent
  ``send`` calls are group-committed (one write and one fsync per batch of dead letters);
- an SQS queue (an ``https://`` queue URL): SendMessageBatch. A document over SQS's message size limit
  is gzip-compressed; if still too large it is split into numbered parts that ``redrive`` reassembles
  (see DESIGN.md, "Failure handling").

``send`` returns only once the dead letter is stored; raising means it was not, and the processor must
not let the checkpoint pass the record.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import structlog

from replicator.core.errors import ReplicatorError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable

    from types_aiobotocore_sqs import SQSClient

    from replicator.core.config import Config
    from replicator.pipeline.processor import DeadLetterSink

log = structlog.get_logger(__name__)

FORMAT = "replicator.dead_letter/1"
SQS_MAX_MESSAGE_BYTES = 256 * 1024
"""SQS's classic limit; queues created with a larger MaximumMessageSize still accept this."""
SQS_BATCH_MAX = 10
_IMAGES = ("Keys", "NewImage", "OldImage")


class DeadLetterError(ReplicatorError):
    """A dead letter could not be stored, or a stored one cannot be read back."""


# --------------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------------


def _encode_value(value: Any) -> Any:  # noqa: ANN401 - walks arbitrary AttributeValue JSON
    """Replace bytes in an AttributeValue by base64 text (B, BS, nested in M and L)."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for type_, scalar in value.items():
        if type_ == "B" and isinstance(scalar, bytes | bytearray):
            out[type_] = base64.b64encode(scalar).decode("ascii")
        elif type_ == "BS" and isinstance(scalar, list):
            out[type_] = [
                base64.b64encode(b).decode("ascii") if isinstance(b, bytes | bytearray) else b for b in scalar
            ]
        elif type_ == "M" and isinstance(scalar, dict):
            out[type_] = {k: _encode_value(v) for k, v in scalar.items()}
        elif type_ == "L" and isinstance(scalar, list):
            out[type_] = [_encode_value(v) for v in scalar]
        else:
            out[type_] = scalar
    return out


def _decode_value(value: Any) -> Any:  # noqa: ANN401 - walks arbitrary AttributeValue JSON
    """Undo ``_encode_value``: base64 text in B/BS back to bytes."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for type_, scalar in value.items():
        if type_ == "B" and isinstance(scalar, str):
            out[type_] = base64.b64decode(scalar)
        elif type_ == "BS" and isinstance(scalar, list):
            out[type_] = [base64.b64decode(b) if isinstance(b, str) else b for b in scalar]
        elif type_ == "M" and isinstance(scalar, dict):
            out[type_] = {k: _decode_value(v) for k, v in scalar.items()}
        elif type_ == "L" and isinstance(scalar, list):
            out[type_] = [_decode_value(v) for v in scalar]
        else:
            out[type_] = scalar
    return out


def _map_images(event: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    ddb = dict(event.get("dynamodb") or {})
    for name in _IMAGES:
        image = ddb.get(name)
        if isinstance(image, dict):
            ddb[name] = {attr: fn(v) for attr, v in image.items()}
    return {**event, "dynamodb": ddb}


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).isoformat()


class DeadLetterContext:
    """Where records come from and go to: stamped on every dead letter so a reader needs nothing else."""

    def __init__(
        self,
        *,
        source_region: str | None = None,
        source_table: str | None = None,
        target_region: str | None = None,
        target_table: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Hold the names; no I/O."""
        self.source_region = source_region
        self.source_table = source_table
        self.target_region = target_region
        self.target_table = target_table
        self.clock = clock

    @classmethod
    def from_config(cls, cfg: Config, *, clock: Callable[[], float] = time.time) -> DeadLetterContext:
        """Take the names from the configuration."""
        return cls(
            source_region=cfg.source.region,
            source_table=cfg.source.table,
            target_region=cfg.target.region,
            target_table=cfg.target.table,
            clock=clock,
        )

    def document(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> dict[str, Any]:
        """Build the dead letter for ``record``: JSON-serialisable, replayable on its own."""
        now = self.clock()
        cause = error.__cause__
        return {
            "format": FORMAT,
            "id": str(uuid.uuid4()),
            "record": _map_images(record.event, _encode_value),
            "error": {
                "type": type(error).__name__,
                "message": str(error),
                "cause": None if cause is None else type(cause).__name__,
            },
            "shardId": record.shard_id,
            "sequenceNumber": record.sequence_number,
            "eventName": record.event_name,
            "attempts": attempts,
            "streamArn": record.event.get("eventSourceARN"),
            "source": {"region": self.source_region, "table": self.source_table},
            "target": {"region": self.target_region, "table": self.target_table},
            "approximateCreationDateTime": record.approximate_creation_time_s,
            "approximateCreationTime": _iso(record.approximate_creation_time_s),
            "deadLetteredAt": _iso(now),
            "recordAgeSeconds": round(max(0.0, now - record.approximate_creation_time_s), 3),
        }


def record_from_document(doc: dict[str, Any]) -> ChangeRecord:
    """Rebuild the ChangeRecord a dead letter holds; raises DeadLetterError when it is not one."""
    if doc.get("format") != FORMAT or not isinstance(doc.get("record"), dict):
        raise DeadLetterError(f"not a replicator dead letter (format {doc.get('format')!r})")
    event = _map_images(doc["record"], _decode_value)
    try:
        return from_lambda_event(event, shard_id=str(doc.get("shardId") or "redrive"))
    except ValueError as exc:
        raise DeadLetterError(f"dead letter {doc.get('id')}: {exc}") from exc


def dumps(doc: dict[str, Any]) -> str:
    """One compact JSON line (``default=str`` keeps an unexpected type from losing the dead letter)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)


# --------------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------------


class JsonlDeadLetters:
    """Appends dead letters to a local JSONL file, fsynced before ``send`` returns.

    Concurrent sends (a batch's writes run concurrently) share one write and one fsync: the first
    sender flushes everything queued so far while later ones wait for that flush.
    """

    def __init__(self, path: Path | str, *, context: DeadLetterContext | None = None) -> None:
        """Bind to the file (created on first send, with its directory); no I/O."""
        self.path = Path(path)
        self.context = context or DeadLetterContext()
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.fsyncs = 0

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Append one dead letter; returns once it is on disk."""
        await self.send_document(self.context.document(record, error=error, attempts=attempts))

    async def send_document(self, doc: dict[str, Any]) -> None:
        """Append a ready document (``redrive`` re-writes failed ones this way)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((dumps(doc) + "\n", future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        # Let the other sends of this batch (scheduled in the same loop iteration) join the group.
        await asyncio.sleep(0)
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._append, "".join(line for line, _ in group))
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                err = DeadLetterError(f"cannot append dead letters to {self.path}: {exc}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(err)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.fsyncs += 1

    async def close(self) -> None:
        """Wait for a flush in progress."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every dead letter in a JSONL file; raises DeadLetterError naming the bad line."""
    docs: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                # A crash mid-append can leave a torn last line; anything else is corruption.
                raise DeadLetterError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            docs.append(doc)
    return docs


# --------------------------------------------------------------------------------------------------
# SQS
# --------------------------------------------------------------------------------------------------


def encode_sqs_bodies(doc: dict[str, Any], *, max_bytes: int = SQS_MAX_MESSAGE_BYTES) -> list[str]:
    """Encode ``doc`` as SQS message bodies: itself, gzip-compressed, or compressed and split in parts."""
    body = dumps(doc)
    if len(body.encode("utf-8")) <= max_bytes:
        return [body]
    packed = base64.b64encode(gzip.compress(body.encode("utf-8"))).decode("ascii")
    envelope = {"format": FORMAT, "id": doc["id"], "encoding": "gzip+base64", "data": packed}
    whole = dumps(envelope)
    if len(whole.encode("utf-8")) <= max_bytes:
        return [whole]
    overhead = len(dumps({**envelope, "data": "", "part": 999, "parts": 999}).encode("utf-8"))
    chunk = max_bytes - overhead
    pieces = [packed[i : i + chunk] for i in range(0, len(packed), chunk)]
    count = len(pieces)
    return [dumps({**envelope, "data": piece, "part": i, "parts": count}) for i, piece in enumerate(pieces)]


class SqsAssembler:
    """Reassembles dead letters from SQS bodies (whole, compressed, or in parts)."""

    def __init__(self) -> None:
        """Start with no parts."""
        self._parts: dict[str, dict[int, str]] = {}

    def add(self, body: str) -> tuple[str, dict[str, Any] | None]:
        """Take one body; return (dead letter id, the document once complete, else None)."""
        msg = json.loads(body)
        if msg.get("encoding") is None:
            return str(msg.get("id")), msg
        if msg.get("encoding") != "gzip+base64":
            raise DeadLetterError(f"dead letter {msg.get('id')}: unknown encoding {msg.get('encoding')!r}")
        doc_id = str(msg["id"])
        if "parts" not in msg:
            return doc_id, json.loads(gzip.decompress(base64.b64decode(msg["data"])))
        parts = self._parts.setdefault(doc_id, {})
        parts[int(msg["part"])] = msg["data"]
        if len(parts) < int(msg["parts"]):
            return doc_id, None
        data = "".join(parts[i] for i in range(int(msg["parts"])))
        del self._parts[doc_id]
        return doc_id, json.loads(gzip.decompress(base64.b64decode(data)))

    @property
    def incomplete(self) -> list[str]:
        """Ids of dead letters with parts still missing."""
        return list(self._parts)


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
        batch: list[dict[str, str]] = []
        size = 0
        for index, body in enumerate(bodies):
            length = len(body.encode("utf-8"))
            # A SendMessageBatch request carries at most 10 messages and max_message_bytes in total.
            if batch and (len(batch) == SQS_BATCH_MAX or size + length > self.max_message_bytes):
                await self._send_batch(batch)
                batch, size = [], 0
            batch.append({"Id": str(index), "MessageBody": body})
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
    # Keeps mypy checking that both classes satisfy the processor's protocol.
    return sink

"""The dead-letter document, format ``replicator.dead_letter/1``, and its SQS message bodies.

A dead letter is one JSON document holding the original stream record in the Lambda event shape
(``record``; B/BS bytes base64-encoded, as on Lambda's wire), the error, and where the record came from
and was going (shard, sequence number, stream ARN, source and target table and region, attempts,
timestamps). ``target.id`` names the target of the configuration (``TargetConfig.target_id``) whose
write failed: with fan-out (``targets:``) ``redrive`` replays the letter to that target only (letters
written before it existed have none). ``redrive`` rebuilds the ChangeRecord from the letter alone, so a
record can be replayed long after the stream's 24 h retention has passed.

On SQS a document over the message size limit is gzip-compressed; if still too large it is split into
numbered parts that :class:`SqsAssembler` reassembles (see DESIGN.md, "Failure handling").
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from replicator.core.codec import decode_event, encode_event
from replicator.core.errors import ReplicatorError
from replicator.core.records import US_PER_S, ChangeRecord, from_lambda_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator.core.config import Config
    from replicator.core.target_config import TargetConfig

FORMAT = "replicator.dead_letter/1"
SQS_MAX_MESSAGE_BYTES = 256 * 1024
"""SQS's classic limit; queues created with a larger MaximumMessageSize still accept this."""


class DeadLetterError(ReplicatorError):
    """A dead letter could not be stored, or a stored one cannot be read back."""


# --------------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------------


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
        target_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Hold the names; no I/O."""
        self.source_region = source_region
        self.source_table = source_table
        self.target_region = target_region
        self.target_table = target_table
        self.target_id = target_id
        self.clock = clock

    @classmethod
    def from_config(cls, cfg: Config, *, clock: Callable[[], float] = time.time) -> DeadLetterContext:
        """Take the names from the configuration."""
        return cls(
            source_region=cfg.source.region,
            source_table=cfg.source.table,
            target_region=cfg.target.region,
            target_table=cfg.target.table,
            target_id=cfg.target.target_id,
            clock=clock,
        )

    def with_target(self, target: TargetConfig) -> DeadLetterContext:
        """The same source and clock, for letters bound for ``target`` (one target of a fan-out)."""
        return DeadLetterContext(
            source_region=self.source_region,
            source_table=self.source_table,
            target_region=target.region,
            target_table=target.table,
            target_id=target.target_id,
            clock=self.clock,
        )

    def document(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> dict[str, Any]:
        """Build the dead letter for ``record``: JSON-serialisable, replayable on its own."""
        now = self.clock()
        created_s = record.approximate_creation_time_us / US_PER_S
        cause = error.__cause__
        event = encode_event(record.event)
        return {
            "format": FORMAT,
            "id": record_id(record.shard_id, event),
            "record": event,
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
            "target": self._target(),
            "approximateCreationDateTime": created_s,
            "approximateCreationTime": _iso(created_s),
            "deadLetteredAt": _iso(now),
            "recordAgeSeconds": round(max(0.0, now - created_s), 3),
        }

    def _target(self) -> dict[str, str | None]:
        target = {"region": self.target_region, "table": self.target_table}
        return target if self.target_id is None else {"id": self.target_id, **target}


def letter_target_id(doc: dict[str, Any]) -> str | None:
    """The target id a dead letter names (``target.id``); None for a letter written before targets had ids."""
    target = doc.get("target")
    value = target.get("id") if isinstance(target, dict) else None
    return str(value) if value else None


def record_id(shard_id: str, event: dict[str, Any]) -> str:
    """The dead letter's id: derived from the record (its shard and whole event), the same on every retry.

    A record dead-lettered again after a crash or a failed send gets the same id, so the parts already
    sent and the ones sent again belong to one letter (the assembler keeps one copy).
    """
    digest = hashlib.sha256(_dumps_raw([shard_id, event]).encode("utf-8", "surrogatepass")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def record_from_document(doc: dict[str, Any]) -> ChangeRecord:
    """Rebuild the ChangeRecord a dead letter holds; raises DeadLetterError when it is not one."""
    if doc.get("format") != FORMAT or not isinstance(doc.get("record"), dict):
        raise DeadLetterError(f"not a replicator dead letter (format {doc.get('format')!r})")
    event = decode_event(doc["record"])
    try:
        return from_lambda_event(event, shard_id=str(doc.get("shardId") or "redrive"))
    except ValueError as exc:
        raise DeadLetterError(f"dead letter {doc.get('id')}: {exc}") from exc


# Outside SQS's allowed characters (#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF).
# JSON already escapes the controls below #x20; these remain, and only ever inside JSON strings.
_NOT_SQS_SAFE = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _dumps_raw(doc: Any) -> str:  # noqa: ANN401 - any JSON value
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)


def dumps(doc: dict[str, Any]) -> str:
    r"""One compact JSON line (``default=str`` keeps an unexpected type from losing the dead letter).

    Non-ASCII text stays readable, except U+FFFE, U+FFFF and lone surrogates, written as ``\uXXXX``
    escapes: SQS refuses them in a body (and a lone surrogate cannot be written as UTF-8). ``json.loads``
    gives back the same string.
    """
    return _NOT_SQS_SAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", _dumps_raw(doc))


# --------------------------------------------------------------------------------------------------
# SQS message bodies
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
    overhead = len(dumps({**envelope, "digest": "0" * 16, "data": "", "part": 999, "parts": 999}).encode("utf-8"))
    chunk = max_bytes - overhead
    pieces = [packed[i : i + chunk] for i in range(0, len(packed), chunk)]
    count = len(pieces)
    # Parts of one letter sent twice (a retry after a crash) may differ (the error, the times): the
    # digest tells the two sets apart, so the assembler never mixes them.
    digest = hashlib.sha256(packed.encode("ascii")).hexdigest()[:16]
    return [
        dumps({**envelope, "digest": digest, "data": piece, "part": i, "parts": count})
        for i, piece in enumerate(pieces)
    ]


class SqsAssembler:
    """Reassembles dead letters from SQS bodies (whole, compressed, or in parts; parts may come twice)."""

    def __init__(self) -> None:
        """Start with no parts."""
        # id -> digest (one per sending of the letter) -> part number -> data
        self._parts: dict[str, dict[str, dict[int, str]]] = {}

    def add(self, body: str) -> tuple[str, dict[str, Any] | None]:
        """Take one body; return (dead letter id, the document once complete, else None)."""
        msg = json.loads(body)
        if not isinstance(msg, dict):
            raise DeadLetterError("not a replicator dead letter (not a JSON object)")
        if msg.get("encoding") is None:
            return str(msg.get("id")), msg
        if msg.get("encoding") != "gzip+base64":
            raise DeadLetterError(f"dead letter {msg.get('id')}: unknown encoding {msg.get('encoding')!r}")
        doc_id = str(msg["id"])
        if "parts" not in msg:
            return doc_id, json.loads(gzip.decompress(base64.b64decode(msg["data"])))
        parts = self._parts.setdefault(doc_id, {}).setdefault(str(msg.get("digest", "")), {})
        parts[int(msg["part"])] = msg["data"]
        if len(parts) < int(msg["parts"]):
            return doc_id, None
        data = "".join(parts[i] for i in range(int(msg["parts"])))
        # Any other sending's parts of this letter are duplicates: the caller deletes them with it.
        del self._parts[doc_id]
        return doc_id, json.loads(gzip.decompress(base64.b64decode(data)))

    def forget(self, doc_id: str) -> None:
        """Drop the parts kept for ``doc_id`` (a letter already replayed: these are duplicates)."""
        self._parts.pop(doc_id, None)

    @property
    def incomplete(self) -> list[str]:
        """Ids of dead letters with parts still missing."""
        return list(self._parts)

"""The contract every change source keeps: ``ChangeSource``, and the types its calls take and return.

Two sources implement it, independently: DynamoDB Streams (``streams.py``) and Kinesis Data Streams for
DynamoDB (``kinesis.py``). The shard reader, the coordinator and ``replicator status`` use nothing else,
so they need nothing source-specific.

Errors: a call either returns or raises one of the errors below (``core/errors.py``); an AWS error
that is none of them is raised as botocore gave it (permissions, validation: a bug or a
misconfiguration that retrying cannot fix). ``translate_error`` is the one mapping from AWS error
codes to these, shared by both sources.

- ``TransientError`` (``retriable`` is True): throttling, a 5xx, a connection failure or timeout.
  Repeat the same call, with the same arguments and iterator, after a backoff.
- ``ExpiredIteratorError``: the iterator outlived its lifetime. Not retriable as it is: get a new
  iterator from the last checkpoint (``AFTER_SEQUENCE_NUMBER``) and read on from there.
- ``TrimmedDataError``: the position asked for is older than the stream's retention; the records
  between it and the oldest one left are lost. The caller decides: stop, or read from TRIM_HORIZON.
- ``ShardGoneError``: the shard (or the stream) is no longer there; nothing more can be read from it.
- ``StreamConfigError`` (``resolve`` only): the stream is missing or cannot serve replication.

Times: ``ChangeRecord.approximate_creation_time_us`` is integer epoch microseconds; every duration
in this package (pacing, iterator lifetimes) is in seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, Protocol

from replicator.core.errors import (
    ExpiredIteratorError,
    ShardGoneError,
    TransientError,
    TrimmedDataError,
    error_code,
    is_transient,
)
from replicator.core.records import ChangeRecord
from replicator.source.shards import Shard

IteratorType = Literal["TRIM_HORIZON", "LATEST", "AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER"]


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """The source stream."""

    arn: str
    view_type: str
    status: str


@dataclasses.dataclass(frozen=True, slots=True)
class ShardIterator:
    """A position in one shard, as ``get_iterator`` and ``get_records`` hand it out.

    Immutable: reading through it does not move it, so a failed ``get_records`` is retried with the
    very same object. Only its source can use it.
    """

    stream_arn: str
    shard_id: str
    token: str
    """The service's opaque iterator string."""
    position: str | None = None
    """The sequence number of the last record read up to this iterator (or that it was asked to start
    after), when known."""


class RecordPage(NamedTuple):
    """One ``get_records`` answer."""

    records: list[ChangeRecord]
    next_iterator: ShardIterator | None
    """Where the next page starts; None once a closed shard has been read to its end."""


class ChangeSource(Protocol):
    """A stream of a DynamoDB table's changes, read shard by shard."""

    async def resolve(self, *, table: str | None, stream_arn: str | None) -> StreamInfo:
        """Find the stream: the one ``stream_arn`` names, else the table's.

        Raises StreamConfigError when there is none, or it cannot be used (the message says how to fix
        it); TransientError as every call does. No side effects: safe to repeat.
        """
        ...

    async def list_shards(self, stream_arn: str) -> list[Shard]:
        """Return every shard the stream still has, open and closed, all pages read.

        Parents are listed before their children. A shard older than the retention may be missing
        (trimmed): its children are then readable at once. Paced within the API's call limit; no side
        effects, safe to repeat.
        """
        ...

    async def get_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: IteratorType, sequence_number: str | None = None
    ) -> ShardIterator:
        """Return an iterator into the shard: at its start, its end, at or after ``sequence_number``.

        Each call makes a fresh iterator and changes nothing else, so it may be repeated freely; the
        iterator expires after a while (DynamoDB Streams: 15 minutes, Kinesis: 5 minutes).
        Raises TrimmedDataError when ``sequence_number`` is older than the retention, ShardGoneError
        when the shard is gone.
        """
        ...

    async def get_records(self, iterator: ShardIterator, limit: int) -> RecordPage:
        """Return the records after ``iterator`` (at most ``limit``) and the iterator after them.

        Order: within a shard, records come in sequence-number order, and the next page's first record
        follows this page's last; nothing is skipped. Across shards there is no order (lineage, in
        ``shards.py``, is the caller's business). Kinesis may hold one change twice (DynamoDB delivers
        to it at least once): consumers must be idempotent, as last-writer-wins is.

        Pages: an empty page with a next iterator means nothing more for now (DynamoDB Streams may also
        return empty pages before later records: read on). A page may hold fewer than ``limit``
        records while more follow (another table's changes in a Kinesis stream are left out).

        Idempotent: the iterator is not used up, so calling again with it (before it expires) returns
        the same records; a failed call is retried as it was. A call may first sleep to keep the
        shard within its read limits.

        Each record is a ChangeRecord built by the source: ``event`` in the Lambda event shape (what
        filters match and dead letters carry), ``shard_id`` the iterator's, the creation time in
        integer epoch µs.

        Raises ExpiredIteratorError, TrimmedDataError or ShardGoneError (see the module's docstring).
        """
        ...


def translate_error(exc: Exception, operation: str) -> Exception:
    """Return the error of this contract for an AWS error raised by ``operation``, or ``exc`` itself.

    Raise the result ``from exc``. Both DynamoDB Streams and Kinesis name these conditions alike.
    """
    code = error_code(exc)
    if code == "ExpiredIteratorException":
        return ExpiredIteratorError(f"{operation}: shard iterator expired")
    if code == "TrimmedDataAccessException":
        return TrimmedDataError(
            f"{operation}: records past the checkpoint were trimmed from the stream (24 h retention)"
        )
    if code == "ResourceNotFoundException":
        return ShardGoneError(f"{operation}: {exc}")
    if is_transient(exc):
        err = TransientError(f"{operation}: {code or type(exc).__name__}")
        err.__cause__ = exc
        return err
    return exc

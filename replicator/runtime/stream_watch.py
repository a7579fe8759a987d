"""Whether the stream being read is still the table's stream: disabled, or replaced by a new one.

Disabling a table's stream closes its shards; enabling it again makes a NEW stream (a new ARN), never
reopens the old one. A worker that only lists the old stream's shards would read them to their end and
report itself caught up while the table's changes go to the new stream, or to none.

When every listed shard is closed (an enabled DynamoDB stream always has open shards), the coordinator
asks ``check``: the stream's own status (DescribeStream) and, for a source named by table, the table's
``LatestStreamArn`` (DescribeTable). The answer:

- ``disabled``: the stream is DISABLED/DISABLING and the table has no enabled stream. Reported (log
  ``stream_disabled``, ``replicator_errors_total{kind="stream_disabled"}``, /readyz not ready); the old
  shards are still read to their end. Changes made while no stream is enabled are in no stream: they
  reach the replica only through a backfill.
- ``replaced``: the table's latest stream is another one. Reported the same way (``stream_replaced``);
  the worker finishes the old stream's shards, then follows the new stream from TRIM_HORIZON (its first
  change on), whatever ``starting_position`` says: none of its changes are skipped.

A source pinned by ``source.stream_arn`` (or Kinesis) is only checked for its own status: there is no
"latest" to follow.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

import structlog

from replicator.core.errors import StreamConfigError

if TYPE_CHECKING:
    from replicator.core.config import Config
    from replicator.source.api import ChangeSource, StreamInfo

log = structlog.get_logger(__name__)

_GONE = frozenset({"DISABLED", "DISABLING", "DELETING"})
"""Stream statuses (DynamoDB Streams, Kinesis) of a stream that gets no new changes."""


@dataclasses.dataclass(frozen=True, slots=True)
class StreamChange:
    """What became of the stream being read."""

    kind: Literal["disabled", "replaced"]
    status: str
    """The old stream's status."""
    latest: StreamInfo | None = None
    """The table's stream now (``replaced`` only)."""


async def check(api: ChangeSource, cfg: Config, stream_arn: str) -> StreamChange | None:
    """Return what became of ``stream_arn`` (None: still the table's enabled stream)."""
    current = await api.resolve(table=None, stream_arn=stream_arn)
    latest: StreamInfo | None = None
    if cfg.source.kind == "dynamodb" and cfg.source.stream_arn is None and cfg.source.table is not None:
        try:
            latest = await api.resolve(table=cfg.source.table, stream_arn=None)
        except StreamConfigError:
            latest = None  # the table has no enabled stream now
    if latest is not None and latest.arn != stream_arn:
        return StreamChange("replaced", current.status, latest)
    if current.status in _GONE:
        return StreamChange("disabled", current.status)
    return None

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
    from replicator.observe.metrics import Metrics
    from replicator.observe.state import WorkerState
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


class StreamWatch:
    """Checks one stream on request and reports each change of its fate once (log, metric, /readyz)."""

    def __init__(
        self, api: ChangeSource, cfg: Config, stream_arn: str, *, state: WorkerState, metrics: Metrics
    ) -> None:
        """Bind to the stream read; no I/O."""
        self.api = api
        self.cfg = cfg
        self.stream_arn = stream_arn
        self.state = state
        self.metrics = metrics
        self.change: StreamChange | None = None
        """What became of the stream as of the last check; None: nothing."""

    async def check(self) -> None:
        """Check the stream now (a failed check is tried again the next time)."""
        try:
            change = await check(self.api, self.cfg, self.stream_arn)
        except Exception as exc:  # noqa: BLE001 - a failed check is tried again at the next discovery
            log.warning("stream_check_failed", stream_arn=self.stream_arn, error_type=type(exc).__name__)
            return
        if change == self.change:
            return
        self.change = change
        self.state.stream_problem = None if change is None else f"stream_{change.kind}"
        if change is None:
            log.info("stream_enabled_again", stream_arn=self.stream_arn)
            return
        self.metrics.errors.labels(kind=f"stream_{change.kind}").inc()
        if change.latest is not None:
            log.error(
                "stream_replaced",
                stream_arn=self.stream_arn,
                status=change.status,
                new_stream_arn=change.latest.arn,
                action="the old stream's shards are read to their end, then the new stream from TRIM_HORIZON; "
                "changes made while no stream was enabled are in neither: backfill them",
            )
        else:
            log.error(
                "stream_disabled",
                stream_arn=self.stream_arn,
                status=change.status,
                action="enable the table's stream (NEW_AND_OLD_IMAGES): the worker follows the new stream; "
                "changes made while it is disabled are in no stream: backfill them",
            )

    @property
    def successor(self) -> StreamInfo | None:
        """The stream that replaced this one, once known."""
        return self.change.latest if self.change is not None else None

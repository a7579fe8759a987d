"""The settings that bear on convergence, and every combination of them the checker explores."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any, Literal

from replicator.core.config import Config
from replicator.core.errors import ConfigError

REGIONS = ("us-east-1", "us-west-2")
TABLE = "model-table"
TS = "updatedAt"

Transform = Literal["none", "keep_ts", "drop_ts"]
StreamClock = Literal["streams_s", "kinesis_ms_skewed"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """One configuration of both workers (the same settings in each direction)."""

    timestamp: bool
    deletes: Literal["tombstone", "delete"]
    source_tombstones: bool
    skip_echoes: bool
    transform: Transform
    active_active: bool
    ttl_shorter_than_replay: bool
    """``tombstone_ttl_s`` shorter than a replay window: a tombstone may expire before a replay."""
    stream_clock: StreamClock = "streams_s"
    """streams_s: DynamoDB Streams' whole seconds (every change in one second, the worst case);
    kinesis_ms_skewed: Kinesis' milliseconds, the stream's clock 5 ms ahead of the application's."""

    def label(self) -> str:
        """A short name for reports."""
        parts = [
            "active-active" if self.active_active else "one-way",
            f"ts={'on' if self.timestamp else 'off'}",
            f"deletes={self.deletes}",
            f"source_tombstones={self.source_tombstones}",
            f"skip_echoes={self.skip_echoes}",
            f"transform={self.transform}",
            f"ttl{'<' if self.ttl_shorter_than_replay else '>='}replay",
            self.stream_clock,
        ]
        return " ".join(parts)

    def config(self, direction: int) -> Config:
        """The worker's Config for ``direction`` (0: region 0 into region 1; 1: back)."""
        return Config(**self.config_data(direction))

    def config_data(self, direction: int) -> dict[str, Any]:
        """The raw configuration, as a YAML file would hold it."""
        replication: dict[str, Any] = {
            "deletes": self.deletes,
            "source_tombstones": self.source_tombstones,
            "skip_echoes": self.skip_echoes,
            # 1 day against SQS's 14: shorter than the dead-letter queue keeps a record.
            "tombstone_ttl_s": 24 * 3600 if self.ttl_shorter_than_replay else 15 * 24 * 3600,
        }
        if self.timestamp:
            replication |= {"timestamp_attribute": TS, "timestamp_unit": "ms"}
        transforms: list[dict[str, Any]] = []
        if self.transform == "keep_ts":
            transforms = [{"type": "exclude", "attributes": ["b"]}]
        elif self.transform == "drop_ts":
            transforms = [{"type": "exclude", "attributes": [TS]}]
        data: dict[str, Any] = {
            "source": {"region": REGIONS[direction], "table": TABLE},
            "target": {"region": REGIONS[1 - direction], "table": TABLE},
            "replication": replication,
            "transforms": transforms,
            "metrics": {"enabled": False},
        }
        if self.ttl_shorter_than_replay:
            data["failure"] = {"on_failure": {"destination": "https://sqs.us-east-1.amazonaws.com/1/dlq"}}
        return data

    def refusal(self) -> str | None:
        """The start-up error this configuration gets (``check-config`` and ``run``), or None."""
        try:
            for direction in (0, 1) if self.active_active else (0,):
                cfg = self.config(direction)
                from replicator.pipeline.stages import Pipeline  # noqa: PLC0415 - transforms compile here

                Pipeline.from_config(cfg)
        except (ConfigError, ValueError) as exc:
            return str(exc)
        return None

    @property
    def excluded(self) -> frozenset[str]:
        """Attributes the comparison of the two tables leaves out (a transform drops them)."""
        if self.transform == "keep_ts":
            return frozenset({"b"})
        if self.transform == "drop_ts":
            return frozenset({TS})
        return frozenset()


def all_settings() -> Iterator[Settings]:
    """Every combination that bears on convergence (meaningless ones left out)."""
    for ts, deletes, src_tomb, skip, transform, aa, short_ttl, clock in itertools.product(
        (True, False),
        ("tombstone", "delete"),
        (False, True),
        (True, False),
        ("none", "keep_ts", "drop_ts"),
        (True, False),
        (False, True),
        ("streams_s", "kinesis_ms_skewed"),
    ):
        if not ts and (transform == "drop_ts" or clock != "streams_s"):
            continue  # nothing to drop; without an application clock, skew changes nothing
        if (src_tomb or not skip) and not aa:
            continue  # both only mean something with a worker in each direction
        if short_ttl and deletes == "delete":
            continue  # no tombstones to expire
        yield Settings(ts, deletes, src_tomb, skip, transform, aa, short_ttl, clock)

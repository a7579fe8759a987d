"""The settings that bear on convergence, and every combination of them the checker explores."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator
from typing import Any, Literal

from replicator.core.config import Config
from replicator.core.errors import ConfigError

REGIONS = ("us-east-1", "us-west-2")
MESH3 = ("us-east-1", "us-west-2", "eu-west-1")
"""A full mesh of three regions; eu-west-1 sorts first, so every tie-break order between the three occurs."""
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
    regions: tuple[str, ...] = REGIONS
    """Region 0 takes the writes one-way; active-active, every region does and replicates to every other."""

    @functools.cached_property
    def lanes(self) -> tuple[tuple[int, int], ...]:
        """The (source, target) region pairs a worker replicates, each with its own checkpoint.

        Two regions: lane 0 is region 0 into region 1, lane 1 the way back. More: one worker per source
        region fans each change out to every other region (``targets:``), one writer per target.
        """
        sources = range(len(self.regions)) if self.active_active else (0,)
        return tuple((s, t) for s in sources for t in range(len(self.regions)) if t != s)

    @property
    def forwards_application_only(self) -> bool:
        """Whether a worker must forward only the application's changes, never a replicator's or TTL's.

        With ``skip_echoes: false`` echoes are forwarded by design (one-way only). With ``deletes: delete``
        a replicated DeleteItem's record looks like the application's and goes back once (it finds no
        item there, so it makes no record): bounded, and that configuration is a documented exception.
        """
        return self.skip_echoes and self.deletes == "tombstone"

    def label(self) -> str:
        """A short name for reports."""
        n = len(self.regions)
        parts = [
            ("active-active" if self.active_active else "one-way")
            if n == 2
            else (f"{n}-region-mesh" if self.active_active else f"one-to-{n - 1}"),
            f"ts={'on' if self.timestamp else 'off'}",
            f"deletes={self.deletes}",
            f"source_tombstones={self.source_tombstones}",
            f"skip_echoes={self.skip_echoes}",
            f"transform={self.transform}",
            f"ttl{'<' if self.ttl_shorter_than_replay else '>='}replay",
            self.stream_clock,
        ]
        return " ".join(parts)

    def config(self, lane: int) -> Config:
        """The Config of ``lane``'s writer (``lanes``; two regions: 0 is region 0 into region 1, 1 back)."""
        return Config(**self.config_data(lane))

    def config_data(self, lane: int) -> dict[str, Any]:
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
        source, target = self.lanes[lane]
        data: dict[str, Any] = {
            "source": {"region": self.regions[source], "table": TABLE},
            "target": {"region": self.regions[target], "table": TABLE},
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
            for lane in range(len(self.lanes)):
                cfg = self.config(lane)
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

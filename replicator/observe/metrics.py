"""Prometheus metrics, on an injected registry so tests read exact sample values.

Labels are bounded: shard ids (a stream retains a few hundred at most), outcomes, operations and
states. Never item keys or contents.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

OUTCOMES = (
    "replicated",  # written to the target
    "superseded",  # lost last-writer-wins to a newer version already in the target (conflict)
    "collapsed",  # replaced inside its batch by a newer change to the same key
    "filtered",  # dropped on purpose by a filter or a transform
    "echo_skipped",  # arrived by replication; not sent back
    "ttl_skipped",  # a TTL deletion, skipped because replication.ttl_deletes is skip
    "dead_lettered",  # sent to the on-failure destination
)
"""Every record read ends in exactly one outcome; their sum equals records read."""

SHARD_STATES = ("owned", "reading", "waiting_on_parent", "closed", "stopped")

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class ExpositionRegistry(CollectorRegistry):
    """A registry that leaves out the ``_created`` series unless asked.

    prometheus_client adds a ``<name>_created`` timestamp series beside every counter and histogram
    (one more series per label set, rarely queried). Its own switch, ``disable_created_metrics()`` or
    ``PROMETHEUS_DISABLE_CREATED_SERIES``, is process-wide; this does the same for one registry.
    """

    def __init__(self, *, created_series: bool = False) -> None:
        """An empty registry; ``created_series`` keeps the ``_created`` series."""
        super().__init__()
        self.created_series = created_series

    def collect(self) -> Iterable[Metric]:
        """Yield every family, without ``_created`` samples unless ``created_series``."""
        for family in super().collect():
            if not self.created_series and family.type in {"counter", "histogram", "summary", "gaugehistogram"}:
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class Metrics:
    """Every metric the replicator exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, created_series: bool = False) -> None:
        """Create the metrics on ``registry`` (by default a fresh one without ``_created`` series); no I/O."""
        self.registry = registry if registry is not None else ExpositionRegistry(created_series=created_series)
        r = self.registry
        self.records_read = Counter("replicator_records_read", "Stream records read, per shard.", ["shard"], registry=r)
        self.records_written = Counter(
            "replicator_records_written", "Records written to the target, per shard.", ["shard"], registry=r
        )
        self.records = Counter(
            "replicator_records",
            "Records by final outcome (their sum equals records read).",
            ["outcome"],
            registry=r,
        )
        self.conflicts = Counter(
            "replicator_conflicts", "Conditional writes that lost last-writer-wins (superseded).", registry=r
        )
        self.iterator_age = Gauge(
            "replicator_iterator_age_seconds",
            "Seconds since the newest record read from the shard was written to the source; 0 once a read"
            " comes back empty (caught up). Grows while the shard's records are stuck (Lambda IteratorAge).",
            ["shard"],
            registry=r,
        )
        self.replication_latency = Histogram(
            "replicator_replication_latency_seconds",
            "Source ApproximateCreationDateTime to target write acknowledged.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.get_records_calls = Counter(
            "replicator_get_records_calls",
            "GetRecords calls, by result (records or empty).",
            ["result"],
            registry=r,
        )
        self.retries = Counter("replicator_retries", "Retried AWS calls, by operation.", ["operation"], registry=r)
        self.throttles = Counter(
            "replicator_throttles", "Throttled AWS calls, by operation.", ["operation"], registry=r
        )
        self.target_concurrency_limit = Gauge(
            "replicator_target_concurrency_limit",
            "Target writes allowed in flight now (sink.ratelimit: cut by 0.7 on a throttle, +1 per window of"
            " successes, at most target.max_concurrent_writes).",
            registry=r,
        )
        self.target_write_rate_limit = Gauge(
            "replicator_target_write_rate_limit",
            "Target write attempts/s allowed since the last throttle (sink.ratelimit: 0.7 x the measured"
            " rate, growing back); 0 = no limit.",
            registry=r,
        )
        self.target_write_wait = Counter(
            "replicator_target_write_wait_seconds",
            "Seconds target write attempts waited for the concurrency limit and target.max_writes_per_s.",
            registry=r,
        )
        self.errors = Counter(
            "replicator_errors",
            "Errors by kind (trimmed_data, expired_iterator, shard_failed ...).",
            ["kind"],
            registry=r,
        )
        self.source_records_skipped = Counter(
            "replicator_source_records_skipped",
            "Source records that are not changes of the source table (a shared Kinesis stream), by reason;"
            " never read, so not in records_read.",
            ["reason"],
            registry=r,
        )
        self.shards = Gauge("replicator_shards", "Shards by state.", ["state"], registry=r)
        self.checkpoint_age = Gauge(
            "replicator_checkpoint_age_seconds",
            "Seconds since the shard's checkpoint was last known current (saved, or confirmed by an empty"
            " read); grows while the shard is stuck, stays near 0 on an idle shard.",
            ["shard"],
            registry=r,
        )
        self.last_checkpoint_timestamp = Gauge(
            "replicator_last_checkpoint_timestamp_seconds",
            "Unix time of the shard's last checkpoint save.",
            ["shard"],
            registry=r,
        )
        self.dead_letters = Counter(
            "replicator_dead_letters", "Records sent to the on-failure destination.", registry=r
        )
        self.target_unavailable = Gauge(
            "replicator_target_unavailable",
            "1 while the target refuses every write (target scope: credentials, permissions, table gone,"
            " key schema, KMS), by AWS error code; writes and checkpoints are held, nothing is dead-lettered.",
            ["code"],
            registry=r,
        )
        self.target_errors = Counter(
            "replicator_target_errors",
            "Failed target writes that were not transient, by scope (record or target) and AWS error code.",
            ["scope", "code"],
            registry=r,
        )
        self.batch_size = Histogram(
            "replicator_batch_records",
            "Records per processed batch.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.build_info = Info("replicator_build", "Version and the configured source and target.", registry=r)
        for outcome in OUTCOMES:
            self.records.labels(outcome=outcome)
        for state in SHARD_STATES:
            self.shards.labels(state=state).set(0)
        self.get_records_calls.labels(result="records")
        self.get_records_calls.labels(result="empty")

    @property
    def per_shard_gauges(self) -> tuple[Gauge, ...]:
        """Gauges labelled by shard: their series go as soon as the shard is closed or released."""
        return (self.iterator_age, self.checkpoint_age, self.last_checkpoint_timestamp)

    @property
    def per_shard_counters(self) -> tuple[Counter, ...]:
        """Counters labelled by shard: their series go a grace period after the shard is closed."""
        return (self.records_read, self.records_written)

    def remove_shard_series(self, shard_id: str, *, counters: bool) -> None:
        """Drop a shard's per-shard series so label cardinality stays bounded as shards roll over.

        Shards of a DynamoDB stream close every few hours and new ones open; keeping every closed
        shard's series would grow the scrape without bound. Counters are dropped only with
        ``counters=True`` (after a grace period, so the last increments were scraped).
        """
        metrics = self.per_shard_gauges + (self.per_shard_counters if counters else ())
        for metric in metrics:
            with contextlib.suppress(KeyError):  # never set for this shard
                metric.remove(shard_id)

"""Prometheus metrics, on an injected registry so tests read exact sample values.

Labels are bounded: shard ids (a stream retains a few hundred at most), target ids (``targets:``),
outcomes, operations and states. Never item keys or contents. The metrics of a target's writes carry a
``target`` label (``TargetConfig.target_id``; with one target, its name or region); the shard's reading
(records read, iterator age, GetRecords calls, checkpoints) is one for all targets and carries none.
"""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from replicator.observe.target_metrics import NO_TARGET, TargetBound, TargetCounter, TargetGauge, TargetHistogram

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

TARGET_METRICS = (
    "records_written",
    "records",
    "conflicts",
    "replication_latency",
    "retries",
    "throttles",
    "target_concurrency_limit",
    "target_write_rate_limit",
    "target_write_wait",
    "dead_letters",
    "target_unavailable",
    "target_errors",
    "batch_size",
)
"""The metrics of one target's writes: labelled by ``target``, bound by ``Metrics.for_target``."""

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

    target: str = NO_TARGET
    """The target this view records for (``for_target``); empty on the worker's own metrics."""

    def __init__(self, registry: CollectorRegistry | None = None, *, created_series: bool = False) -> None:
        """Create the metrics on ``registry`` (by default a fresh one without ``_created`` series); no I/O."""
        self.registry = registry if registry is not None else ExpositionRegistry(created_series=created_series)
        r = self.registry
        self.records_read = Counter("replicator_records_read", "Stream records read, per shard.", ["shard"], registry=r)
        self.records_written = TargetCounter(
            Counter(
                "replicator_records_written",
                "Records written to the target, per target and shard.",
                ["target", "shard"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.records = TargetCounter(
            Counter(
                "replicator_records",
                "Records by target and final outcome (per target, their sum equals records read).",
                ["target", "outcome"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.conflicts = TargetCounter(
            Counter(
                "replicator_conflicts",
                "Conditional writes that lost last-writer-wins (superseded), per target.",
                ["target"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.iterator_age = Gauge(
            "replicator_iterator_age_seconds",
            "Seconds since the newest record read from the shard was written to the source; 0 once a read"
            " comes back empty (caught up). Grows while the shard's records are stuck (Lambda IteratorAge).",
            ["shard"],
            registry=r,
        )
        self.replication_latency = TargetHistogram(
            Histogram(
                "replicator_replication_latency_seconds",
                "Source ApproximateCreationDateTime to target write acknowledged, per target.",
                ["target"],
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            NO_TARGET,
        )
        self.get_records_calls = Counter(
            "replicator_get_records_calls",
            "GetRecords calls, by result (records or empty).",
            ["result"],
            registry=r,
        )
        self.retries = TargetCounter(
            Counter(
                "replicator_retries",
                "Retried AWS calls, by operation and target (empty: not a target's call, e.g. GetRecords).",
                ["target", "operation"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.throttles = TargetCounter(
            Counter(
                "replicator_throttles",
                "Throttled AWS calls, by operation and target (empty: not a target's call, e.g. GetRecords).",
                ["target", "operation"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.target_concurrency_limit = TargetGauge(
            Gauge(
                "replicator_target_concurrency_limit",
                "Target writes allowed in flight now (sink.ratelimit: cut by 0.7 on a throttle, +1 per window"
                " of successes, at most target.max_concurrent_writes), per target.",
                ["target"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.target_write_rate_limit = TargetGauge(
            Gauge(
                "replicator_target_write_rate_limit",
                "Target write attempts/s allowed since the last throttle (sink.ratelimit: 0.7 x the measured"
                " rate, growing back), per target; 0 = no limit.",
                ["target"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.target_write_wait = TargetCounter(
            Counter(
                "replicator_target_write_wait_seconds",
                "Seconds target write attempts waited for the concurrency limit and target.max_writes_per_s,"
                " per target.",
                ["target"],
                registry=r,
            ),
            NO_TARGET,
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
        self.dead_letters = TargetCounter(
            Counter(
                "replicator_dead_letters",
                "Records sent to the on-failure destination, per target.",
                ["target"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.target_unavailable = TargetGauge(
            Gauge(
                "replicator_target_unavailable",
                "1 while the target refuses every write (target scope: credentials, permissions, table gone,"
                " key schema, KMS), by target and AWS error code; its writes and checkpoints are held, nothing"
                " is dead-lettered.",
                ["target", "code"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.target_errors = TargetCounter(
            Counter(
                "replicator_target_errors",
                "Failed target writes that were not transient, by target, scope (record or target) and AWS error code.",
                ["target", "scope", "code"],
                registry=r,
            ),
            NO_TARGET,
        )
        self.batch_size = TargetHistogram(
            Histogram(
                "replicator_batch_records",
                "Records per processed batch, per target.",
                ["target"],
                buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
                registry=r,
            ),
            NO_TARGET,
        )
        self.build_info = Info("replicator_build", "Version and the configured source and target.", registry=r)
        for state in SHARD_STATES:
            self.shards.labels(state=state).set(0)
        self.get_records_calls.labels(result="records")
        self.get_records_calls.labels(result="empty")

    def for_target(self, target_id: str) -> Metrics:
        """These metrics as one target's processor records them: every per-target metric's label bound.

        The same registry and families (a view, no copy of any series); the shard's metrics are shared.
        The target's outcome, conflict, dead-letter, latency and batch series are exported at 0 at once,
        so rate() and alerts see a target before its first write.
        """
        view = copy.copy(self)
        view.target = target_id
        for name in TARGET_METRICS:
            bound: TargetBound[Counter] | TargetBound[Gauge] | TargetBound[Histogram] = getattr(self, name)
            setattr(view, name, bound.bound(target_id))
        for outcome in OUTCOMES:
            view.records.labels(outcome=outcome)
        for metric in (view.conflicts, view.dead_letters, view.target_write_wait):
            metric.inc(0)
        for histogram in (view.replication_latency, view.batch_size):
            histogram.labels()
        return view

    @property
    def per_shard_gauges(self) -> tuple[Gauge, ...]:
        """Gauges labelled by shard: their series go as soon as the shard is closed or released."""
        return (self.iterator_age, self.checkpoint_age, self.last_checkpoint_timestamp)

    @property
    def per_shard_counters(self) -> tuple[Counter, ...]:
        """Counters labelled by shard alone: their series go a grace period after the shard is closed.

        ``records_written`` (by target and shard) goes with them, every target's (``remove_shard_series``).
        """
        return (self.records_read,)

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
        if counters:
            family = self.records_written.family
            targets = {
                sample.labels["target"]
                for collected in family.collect()
                for sample in collected.samples
                if sample.labels.get("shard") == shard_id
            }
            for target in targets:
                family.remove(target, shard_id)

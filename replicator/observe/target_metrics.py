"""A metric with its ``target`` label bound: what one target's processor records through.

With ``targets:`` every batch is written by one processor per target, all on one registry. The metrics
of a target's writes carry a ``target`` label (``TargetConfig.target_id``); ``Metrics.for_target`` gives
a processor the same metrics with that label already bound, so its code reads as with one target:
``metrics.records.labels(outcome="replicated").inc()`` or ``metrics.conflicts.inc()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, Self, TypeVar

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

NO_TARGET = ""
"""The ``target`` of a call that is no target's (a GetRecords retry): Prometheus drops an empty label."""

M = TypeVar("M", Counter, Gauge, Histogram)


class TargetBound(Generic[M]):
    """One metric family with a ``target`` label, seen from one target."""

    def __init__(self, family: M, target: str) -> None:
        """Bind ``family``'s ``target`` label to ``target``; creates no series (``for_target`` does)."""
        self.family: M = family
        self.target = target
        self._own: M | None = None

    def labels(self, **labels: str) -> M:
        """The child of this target and ``labels`` (every label of the family but ``target``)."""
        return self.family.labels(target=self.target, **labels)

    def bound(self, target: str) -> Self:
        """The same family with ``target`` bound instead."""
        return type(self)(self.family, target)

    def collect(self) -> Iterable[Metric]:
        """The whole family, every target's series."""
        return self.family.collect()

    def _child(self) -> M:
        # Cached: an unlabelled metric is moved once per record written (latency), so no lookup each time.
        if self._own is None:
            self._own = self.family.labels(target=self.target)
        return self._own


class TargetCounter(TargetBound[Counter]):
    """A counter by target; ``inc`` when ``target`` is its only label."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` to this target's series."""
        self._child().inc(amount)


class TargetGauge(TargetBound[Gauge]):
    """A gauge by target; ``set`` when ``target`` is its only label."""

    def set(self, value: float) -> None:
        """Set this target's series."""
        self._child().set(value)


class TargetHistogram(TargetBound[Histogram]):
    """A histogram by target; ``observe`` when ``target`` is its only label."""

    def observe(self, amount: float) -> None:
        """Observe ``amount`` in this target's series."""
        self._child().observe(amount)

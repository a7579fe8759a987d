"""Retrying transient AWS failures: exponential backoff with full jitter.

Retries are unlimited by default, so an outage of the target region only delays replication; the
caller's shutdown cancels a retry loop that is waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog

from replicator.core.errors import error_code, is_throttle, is_transient, request_id

T = TypeVar("T")
log = structlog.get_logger(__name__)


class _Increment(Protocol):
    def inc(self) -> None: ...


class _ByOperation(Protocol):
    def labels(self, *, operation: str) -> _Increment: ...


class RetryMetrics(Protocol):
    """The two counters a retry loop moves (``observe.metrics.Metrics`` has them): core knows no registry."""

    @property
    def retries(self) -> _ByOperation:
        """Retries by operation."""
        ...

    @property
    def throttles(self) -> _ByOperation:
        """Throttled calls by operation."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a transient failure is retried."""

    base_delay_s: float = 0.05
    max_delay_s: float = 20.0
    max_attempts: int | None = None
    """None: retry without limit (the default for target writes)."""

    def delay_s(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)] (AWS Architecture Blog)."""
        return float(rng() * min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt, 30))))


async def retrying(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    metrics: RetryMetrics,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``call``; retry it while it fails transiently and attempts remain; re-raise otherwise."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                raise
            if is_throttle(exc):
                metrics.throttles.labels(operation=operation).inc()
            metrics.retries.labels(operation=operation).inc()
            delay = policy.delay_s(attempt)
            if attempt in (1, 10) or attempt % 100 == 0:
                log.warning(
                    "retrying",
                    operation=operation,
                    attempt=attempt,
                    error=type(exc).__name__,
                    code=error_code(exc),
                    request_id=request_id(exc),
                    delay_s=round(delay, 3),
                )
            await sleep(delay)

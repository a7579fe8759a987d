"""Whether the target takes writes at all: one object per process, shared by every shard's writes.

A failure of target scope (``core/errors.py``: credentials, permissions, a deleted table, KMS, a wrong
key schema, a 403 page) is about no record: dead-lettering would turn the whole stream into dead letters.
Instead every write is held (so no checkpoint moves), one write at a time probes the target after a
capped, jittered backoff shared by all shards, and when a probe succeeds every held write goes on. While
held, ``replicator_target_unavailable{code}`` is 1 and the log names the code (never the message).

Ambiguous failures (ValidationException, unknown codes, unexpected exceptions) go through a breaker: the
first few distinct keys failing that way with no success in between are treated as record scope (each
dead-lettered); the ``breaker_keys``-th trips the breaker and the failure is held as target scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TYPE_CHECKING

import structlog

from replicator.core.errors import Scope, error_scope, failure_code
from replicator.core.retry import RetryPolicy

if TYPE_CHECKING:
    from replicator.observe.metrics import Metrics

log = structlog.get_logger(__name__)

BREAKER_KEYS = 3
"""Distinct keys failing with the same ambiguous code, no success between, that make it target scope."""

HOLD_POLICY = RetryPolicy(base_delay_s=0.5, max_delay_s=30.0)
"""Backoff between probes of an unavailable target: full jitter, capped at 30 s."""


class RetentionReached(Exception):  # noqa: N818 - an outcome of waiting, not an error of the caller
    """A held write's record reached its dead-letter deadline (near the stream's retention) while held."""


class TargetHealth:
    """The target's availability and the ambiguous-error breaker; no I/O, no task."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        policy: RetryPolicy = HOLD_POLICY,
        breaker_keys: int = BREAKER_KEYS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start healthy."""
        self._metrics = metrics
        self._policy = policy
        self._breaker_keys = breaker_keys
        self._sleep = sleep
        self._monotonic = monotonic
        self._probe = asyncio.Lock()
        self._code: str | None = None
        self._since = 0.0
        self._failures = 0
        self._ambiguous: dict[str, set[Hashable]] = {}

    @property
    def unavailable_code(self) -> str | None:
        """The AWS error code the target refuses writes with; None while it takes them."""
        return self._code

    def scope(self, exc: BaseException, key: Hashable) -> Scope:
        """The scope of a failed write of ``key``: ``error_scope``, with ambiguous ones settled here."""
        scope = error_scope(exc)
        if scope != "ambiguous":
            return scope
        code = failure_code(exc)
        keys = self._ambiguous.setdefault(code, set())
        keys.add(key)
        return "target" if len(keys) >= self._breaker_keys else "record"

    def counted(self, scope: Scope, exc: BaseException) -> None:
        """Count a failure that is not transient by scope and code."""
        if scope in {"record", "target"}:
            self._metrics.target_errors.labels(scope=scope, code=failure_code(exc)).inc()

    def failed(self, exc: BaseException) -> None:
        """A write failed with target scope: hold every write from now on until a probe succeeds."""
        code = failure_code(exc)
        self._failures += 1
        if self._code is None:
            self._since = self._monotonic()
            log.error("target_unavailable", code=code, action="holding every write and checkpoint; retrying")
        elif code != self._code:
            self._metrics.target_unavailable.labels(code=self._code).set(0)
            log.error("target_unavailable", code=code, previous_code=self._code)
        elif self._failures % 20 == 0:
            log.error("target_still_unavailable", code=code, probes=self._failures)
        self._code = code
        self._metrics.target_unavailable.labels(code=code).set(1)

    def succeeded(self) -> None:
        """A write went through: the target takes writes; ambiguous failures start counting afresh."""
        self._ambiguous.clear()
        if self._code is None:
            return
        log.warning(
            "target_available",
            code=self._code,
            unavailable_s=round(self._monotonic() - self._since, 3),
            probes=self._failures,
        )
        self._metrics.target_unavailable.labels(code=self._code).set(0)
        self._code = None
        self._failures = 0

    @contextlib.asynccontextmanager
    async def turn(self, *, deadline_s: float | None = None) -> AsyncIterator[None]:
        """Wait until this write may be sent: at once while the target is healthy; else it is one probe.

        While the target is unavailable one write at a time holds the probe: it waits the backoff, then
        is sent. ``deadline_s`` (seconds from now; None: none): raise ``RetentionReached`` instead of
        waiting past it.
        """
        if self._code is None:
            yield
            return
        started = self._monotonic()
        try:
            async with asyncio.timeout(deadline_s):
                await self._probe.acquire()
        except TimeoutError:
            raise RetentionReached from None
        try:
            if self._code is not None:
                delay = self._policy.delay_s(min(self._failures, 30))
                if deadline_s is not None and delay >= deadline_s - (self._monotonic() - started):
                    raise RetentionReached
                await self._sleep(delay)
            yield
        finally:
            self._probe.release()

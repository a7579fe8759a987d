"""Target writes that respect throttling: an adaptive send rate and concurrency (AIMD), an optional cap.

Without this, each of up to ``target.max_concurrent_writes`` writers backs off on its own after a
throttle while the others keep sending, so a throttled table sees the same request rate and throttles
on. botocore's adaptive retry mode answers that with a client-side send rate that drops by a factor
(``beta`` 0.7, its CUBIC calculator) on every throttle and climbs back on success; its state is per
client and it is off on our clients (the lean write path bypasses botocore anyway). ``WriteGate`` does
the same for one worker's target writes, shared by every shard of the worker, on two quantities:

- the send rate (``AdaptiveRate``, after botocore's design): no limit until the first throttle; then 0.7
  times the measured send rate (later throttles: 0.7 times the limit), growing back by a tenth of the rate
  it was cut from per second of successes, and no limit again once it reaches twice that rate;
- the writes in flight (``AimdLimit``), which bounds the burst a batch can fire at once:

  a throttled write multiplies the limit by ``beta`` (at least ``min_limit``); only the first throttle
  among writes started since the last decrease counts, so 64 writes throttled at once cut the limit once,
  not 64 times (as TCP cuts its window once per round trip); each write that succeeds adds ``1 / limit``
  (one per ``limit`` successes: one per round of the window), up to ``max_limit``.

A rate and not only a window: against a target a few milliseconds away even two writes in flight exceed
a table's rate, so a window alone keeps oscillating through throttles (measured in bench/throttle.py).
- ``max_writes_per_s`` (``target.max_writes_per_s``): a token bucket (GCRA) that spaces write attempts,
  retries included, at most that rate with a burst of a tenth of a second's worth.

Time is injected (``clock``, ``sleep``) so the schedule is testable without waiting.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from replicator.core.errors import is_throttle

if TYPE_CHECKING:
    from replicator.observe.metrics import Metrics

T = TypeVar("T")

BETA = 0.7
"""Multiplicative decrease on a throttle: botocore's CUBIC calculator uses the same factor."""


class AimdLimit:
    """The concurrency limit alone: additive increase on success, multiplicative decrease on throttling."""

    def __init__(self, *, max_limit: int, min_limit: int = 1, beta: float = BETA) -> None:
        """Start at ``max_limit``: nothing is throttled until the target says so."""
        if not 1 <= min_limit <= max_limit:
            msg = f"need 1 <= min_limit ({min_limit}) <= max_limit ({max_limit})"
            raise ValueError(msg)
        self.max_limit = max_limit
        self.min_limit = min_limit
        self.beta = beta
        self._limit = float(max_limit)
        self.epoch = 0
        """Bumped on every decrease: a throttle of a write started in an older epoch is not counted."""

    @property
    def limit(self) -> int:
        """Writes allowed in flight now."""
        return max(self.min_limit, int(self._limit))

    def on_success(self) -> None:
        """One write went through: grow by one per ``limit`` successes."""
        self._limit = min(float(self.max_limit), self._limit + 1.0 / max(self._limit, 1.0))

    def on_throttle(self, started_epoch: int) -> bool:
        """A write started in ``started_epoch`` was throttled; return whether the limit was cut."""
        if started_epoch != self.epoch:
            return False
        self._limit = max(float(self.min_limit), self._limit * self.beta)
        self.epoch += 1
        return True


class TokenBucket:
    """At most ``rate_per_s`` acquisitions per second, bursts up to ``burst`` (GCRA, FIFO reservations)."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``burst`` defaults to a tenth of a second's worth (at least one)."""
        if rate_per_s <= 0:
            msg = f"rate_per_s must be positive, got {rate_per_s}"
            raise ValueError(msg)
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, burst if burst is not None else rate_per_s / 10)
        self._interval_s = 1.0 / rate_per_s
        self._tolerance_s = (self.burst - 1.0) * self._interval_s
        self._clock = clock
        self._sleep = sleep
        self._tat = clock()  # theoretical arrival time of the next acquisition

    def set_rate(self, rate_per_s: float) -> None:
        """Change the rate (and the burst, a tenth of a second's worth) for the acquisitions to come."""
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, rate_per_s / 10)
        self._interval_s = 1.0 / rate_per_s
        self._tolerance_s = (self.burst - 1.0) * self._interval_s

    def reserve(self) -> float:
        """Take the next slot; return how long to wait before using it (0: now)."""
        now = self._clock()
        tat = max(self._tat, now)
        wait_s = max(0.0, tat - self._tolerance_s - now)
        self._tat = tat + self._interval_s
        return wait_s

    async def acquire(self) -> float:
        """Wait for a slot; return the seconds waited."""
        wait_s = self.reserve()
        if wait_s > 0:
            await self._sleep(wait_s)
        return wait_s


class AdaptiveRate:
    """A send rate from throttling feedback: unlimited until throttled, ``beta`` x measured on a throttle."""

    BUCKET_S = 0.5
    SMOOTHING = 0.8
    """The measured rate: 0.5 s buckets, smoothed as botocore's RateClocker does."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        beta: float = BETA,
        growth_per_s: float = 0.1,
        min_rate_per_s: float = 1.0,
    ) -> None:
        """No limit yet."""
        self.rate_per_s: float | None = None
        self.beta = beta
        self.growth_per_s = growth_per_s
        self.min_rate_per_s = min_rate_per_s
        self._clock = clock
        self._cut_from = 0.0
        self._measured = 0.0
        self._count = 0
        self._bucket_start = clock()

    @property
    def measured_per_s(self) -> float:
        """The smoothed send rate; before the first bucket closes, the current bucket's (over at least 0.5 s)."""
        if self._measured > 0:
            return self._measured
        return self._count / max(self._clock() - self._bucket_start, self.BUCKET_S)

    def on_send(self) -> None:
        """Count one attempt sent."""
        self._count += 1
        now = self._clock()
        elapsed = now - self._bucket_start
        if elapsed >= self.BUCKET_S:
            current = self._count / elapsed
            self._measured = current * self.SMOOTHING + self._measured * (1 - self.SMOOTHING)
            self._count = 0
            self._bucket_start = now

    def on_success(self) -> None:
        """Grow back: about ``growth_per_s`` of the rate cut from, per second at full demand."""
        if self.rate_per_s is None:
            return
        # Per success, so about this much per second at full demand; at least a tenth of the current rate
        # too, so a cut made from a low measurement (just after start) does not take minutes to undo.
        step = max(1.0, self.growth_per_s * max(self._cut_from, self.rate_per_s))
        self.rate_per_s += step / self.rate_per_s
        if self.rate_per_s >= 2 * self._cut_from:
            # The target took twice the rate it throttled at: it is no longer what holds the worker back.
            self.rate_per_s = None

    def on_throttle(self) -> None:
        """Cut to ``beta`` times the limit, or (no limit yet) times the measured send rate.

        Not the measured rate once a limit exists: a worker's sends come in batches, and while a batch's
        last writes wait out their retry backoff the measured rate falls towards zero; cutting from it
        collapsed the limit to a few writes/s (seen in bench/throttle.py).
        """
        if self.rate_per_s is not None:
            sent = self.rate_per_s
        else:
            sent = max(self._measured, self._count / max(self._clock() - self._bucket_start, self.BUCKET_S))
        sent = max(sent, self.min_rate_per_s)
        self._cut_from = sent
        self.rate_per_s = max(self.min_rate_per_s, self.beta * sent)


class WriteGate:
    """Admits one worker's target write attempts: an AIMD concurrency limit, then the optional rate cap."""

    def __init__(
        self,
        *,
        max_concurrent_writes: int,
        adaptive: bool = True,
        max_writes_per_s: float | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """No I/O and no tasks; the waiters' futures are created on first use, in the running loop."""
        self.aimd = AimdLimit(max_limit=max_concurrent_writes)
        self.rate = AdaptiveRate(clock=clock)
        self.adaptive = adaptive
        self._adaptive_bucket = TokenBucket(1.0, clock=clock, sleep=sleep)
        self.bucket = TokenBucket(max_writes_per_s, clock=clock, sleep=sleep) if max_writes_per_s else None
        self._metrics = metrics
        self._clock = clock
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._publish_limit()

    @property
    def limit(self) -> int:
        """Writes allowed in flight now."""
        return self.aimd.limit if self.adaptive else self.aimd.max_limit

    @property
    def in_flight(self) -> int:
        """Writes admitted and not yet finished."""
        return self._in_flight

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one write attempt once admitted; feed its outcome back into the limit."""
        started = self._clock()
        await self._acquire_slot()
        try:
            if self.adaptive and self.rate.rate_per_s is not None:
                await self._adaptive_bucket.acquire()
            if self.bucket is not None:
                await self.bucket.acquire()
            if self.adaptive:
                self.rate.on_send()
            waited_s = self._clock() - started
            if waited_s > 0 and self._metrics is not None:
                self._metrics.target_write_wait.inc(waited_s)
            epoch = self.aimd.epoch
            try:
                result = await call()
            except Exception as exc:
                if is_throttle(exc) and self.adaptive and self.aimd.on_throttle(epoch):
                    self.rate.on_throttle()
                    self._publish_limit()
                raise
            if self.adaptive:
                before = self.aimd.limit, self.rate.rate_per_s
                self.aimd.on_success()
                self.rate.on_success()
                if (self.aimd.limit, self.rate.rate_per_s) != before:
                    self._publish_limit()
            return result
        finally:
            self._release_slot()

    async def _acquire_slot(self) -> None:
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Admitted just as it was cancelled: hand the slot on.
                self._release_slot()
            elif waiter in self._waiters:
                # Not there when a slot freed in the same turn: _admit already dropped it as done.
                self._waiters.remove(waiter)
            raise

    def _release_slot(self) -> None:
        self._in_flight -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    def _publish_limit(self) -> None:
        rate = self.rate.rate_per_s
        if rate is not None:
            self._adaptive_bucket.set_rate(rate)
        if self._metrics is not None:
            self._metrics.target_concurrency_limit.set(self.limit)
            self._metrics.target_write_rate_limit.set(rate or 0)

"""The backfill's rate limit: one token bucket shared by every Scan segment (``--rate``)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


class TokenBucket:
    """A token bucket shared by every segment: ``rate`` tokens/s, bursts up to ``capacity``.

    ``take`` may leave the bucket in debt (a Scan page is only counted after it returns); the next
    caller then waits until the debt is paid, so the long-run rate holds.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        """Start full."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def wait_ready(self) -> None:
        """Wait until the bucket is out of debt (at least one token)."""
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await self._sleep((1 - self._tokens) / self.rate)
                self._refill()

    def take(self, n: int) -> None:
        """Spend ``n`` tokens (the items a page returned)."""
        self._refill()
        self._tokens -= n

"""The token bucket behind ``backfill --rate``."""

from __future__ import annotations

import pytest

from replicator.ops.backfill import TokenBucket


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_token_bucket_holds_the_long_run_rate() -> None:
    """At 100/s with a burst of 100, the tenth page of 100 items may start only after 8 s (fake time)."""
    t = _FakeTime()
    bucket = TokenBucket(100, clock=t.clock, sleep=t.sleep)
    for _ in range(10):
        await bucket.wait_ready()
        bucket.take(100)
    assert sum(t.slept) == pytest.approx(8.0, abs=0.05)

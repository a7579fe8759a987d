"""sink.ratelimit: the AIMD concurrency limit, the token bucket and the write gate, on an injected clock."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError

from replicator.observe.metrics import Metrics
from replicator.sink.ratelimit import AdaptiveRate, AimdLimit, TokenBucket, WriteGate

EU = {"target": "eu-west-1"}
"""The labels of the gate's own target: every gate is one target's (``Metrics.for_target``)."""


def _throttle() -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem")


class _FakeClock:
    """Time that moves only when a sleeper sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_aimd_cuts_by_beta_once_per_epoch_and_never_below_the_minimum() -> None:
    """A burst of throttles from writes started together cuts the limit once; repeated cuts stop at min."""
    aimd = AimdLimit(max_limit=64)
    epoch = aimd.epoch
    assert aimd.on_throttle(epoch)
    assert aimd.limit == 44  # int(64 * 0.7)
    for _ in range(63):
        assert not aimd.on_throttle(epoch)  # started before the cut: already accounted for
    assert aimd.limit == 44
    for _ in range(50):
        aimd.on_throttle(aimd.epoch)
    assert aimd.limit == 1


def test_aimd_grows_by_one_per_window_of_successes_up_to_the_maximum() -> None:
    """From 10, ten successes add one; the limit never passes max_limit."""
    aimd = AimdLimit(max_limit=12)
    while aimd.limit > 10:
        aimd.on_throttle(aimd.epoch)
    aimd._limit = 10.0
    for _ in range(10):
        aimd.on_success()
    assert aimd._limit == pytest.approx(11, abs=0.05)  # 1/limit per success, the limit rising
    for _ in range(1000):
        aimd.on_success()
    assert aimd.limit == 12


def test_aimd_rejects_an_empty_range() -> None:
    """min_limit above max_limit is a programming error."""
    with pytest.raises(ValueError, match="min_limit"):
        AimdLimit(max_limit=2, min_limit=3)


async def test_token_bucket_spaces_acquisitions_at_the_rate_after_its_burst() -> None:
    """100/s with a burst of 10: ten at once, then one every 10 ms; 110 acquisitions take 1 s of clock."""
    clock = _FakeClock()
    bucket = TokenBucket(100, clock=clock, sleep=clock.sleep)
    assert bucket.burst == 10
    waits = [await bucket.acquire() for _ in range(110)]
    assert waits[:10] == [0.0] * 10
    assert all(w == pytest.approx(0.01) for w in waits[10:])
    assert clock.now - 1000.0 == pytest.approx(1.0)


async def test_token_bucket_refills_while_idle_but_only_up_to_its_burst() -> None:
    """After a long pause the next burst is again at most ``burst`` acquisitions without waiting."""
    clock = _FakeClock()
    bucket = TokenBucket(10, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        await bucket.acquire()
    clock.now += 60
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_token_bucket_needs_a_positive_rate() -> None:
    """A zero rate is refused (the config's gt=0 guards the edge)."""
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


async def test_gate_cuts_the_shared_limit_on_throttles_and_publishes_it() -> None:
    """Throttled attempts cut the limit (gauge follows); successes grow it back; in-flight never exceeds it."""
    metrics = Metrics().for_target("eu-west-1")
    gate = WriteGate(max_concurrent_writes=20, metrics=metrics)
    assert metrics.registry.get_sample_value("replicator_target_concurrency_limit", EU) == 20
    peak = 0

    async def write(*, throttled: bool) -> str:
        nonlocal peak
        peak = max(peak, gate.in_flight)
        await asyncio.sleep(0)
        if throttled:
            raise _throttle()
        return "ok"

    results = await asyncio.gather(
        *(gate.run(lambda: write(throttled=True)) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, ClientError) for r in results)
    assert gate.limit == 14  # one cut for twenty writes started together
    assert metrics.registry.get_sample_value("replicator_target_concurrency_limit", EU) == 14
    results = await asyncio.gather(*(gate.run(lambda: write(throttled=False)) for _ in range(200)))
    assert results == ["ok"] * 200
    assert peak <= 20
    assert gate.limit == 20
    assert metrics.registry.get_sample_value("replicator_target_concurrency_limit", EU) == 20


async def test_gate_admits_no_more_than_the_limit_at_once() -> None:
    """With the limit cut to 1, writes never exceed the (growing) limit; the others' wait is counted."""
    metrics = Metrics().for_target("eu-west-1")
    clock = _FakeClock()
    gate = WriteGate(max_concurrent_writes=4, metrics=metrics, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        gate.aimd.on_throttle(gate.aimd.epoch)
    assert gate.limit == 1
    over: list[tuple[int, int]] = []

    async def write() -> None:
        if gate.in_flight > gate.limit:
            over.append((gate.in_flight, gate.limit))
        clock.now += 0.5
        await asyncio.sleep(0)

    await asyncio.gather(*(gate.run(write) for _ in range(4)))
    assert over == []
    # The first runs alone (limit 1); its success lifts the limit to 2, so the other three wait for it.
    waited = metrics.registry.get_sample_value("replicator_target_write_wait_seconds_total", EU)
    assert waited is not None
    assert waited >= 3 * 0.5


async def test_gate_without_adaptation_keeps_the_configured_limit() -> None:
    """Without adaptation throttles do not move the limit (the configured max_concurrent_writes holds)."""
    gate = WriteGate(max_concurrent_writes=8, adaptive=False)

    async def throttled() -> None:
        raise _throttle()

    with pytest.raises(ClientError):
        await gate.run(throttled)
    assert gate.limit == 8


async def test_gate_applies_the_rate_cap_to_every_attempt() -> None:
    """max_writes_per_s 50 (burst 5): 55 attempts take 1 s of the injected clock."""
    clock = _FakeClock()
    gate = WriteGate(max_concurrent_writes=64, max_writes_per_s=50, clock=clock, sleep=clock.sleep)

    async def write() -> None:
        await asyncio.sleep(0)

    for _ in range(55):
        await gate.run(write)
    assert clock.now - 1000.0 == pytest.approx(1.0)


@pytest.mark.parametrize("as_the_slot_frees", [False, True])
async def test_a_cancelled_waiter_ends_cancelled_and_gives_its_place_back(as_the_slot_frees: bool) -> None:  # noqa: FBT001 - a parameter
    """A write cancelled while waiting for a slot (also in the loop turn the slot frees) leaves no slot taken.

    Cancelled as the slot frees, it once ended with ValueError (removed twice from the waiters).
    """
    gate = WriteGate(max_concurrent_writes=1)
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    first = asyncio.create_task(gate.run(hold))
    await asyncio.sleep(0)
    second = asyncio.create_task(gate.run(hold))
    await asyncio.sleep(0)
    if as_the_slot_frees:
        # The first write finishes (and frees its slot) before the cancelled waiter's task runs again.
        release.set()
        second.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
    else:
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        await first
    assert gate.in_flight == 0
    await gate.run(hold)
    assert gate.in_flight == 0


def test_adaptive_rate_cuts_to_beta_of_the_measured_rate_and_grows_back() -> None:
    """Sending 200/s then throttled: the rate limit is 140/s; successes at that rate lift it ~20/s per second."""
    clock = _FakeClock()
    rate = AdaptiveRate(clock=clock)
    assert rate.rate_per_s is None
    for _ in range(400):  # two seconds at 200/s
        clock.now += 0.005
        rate.on_send()
    assert rate.measured_per_s == pytest.approx(200, rel=0.01)
    rate.on_throttle()
    assert rate.rate_per_s == pytest.approx(140, rel=0.01)
    for _ in range(140):  # one second of successes at the limit
        rate.on_success()
    assert rate.rate_per_s == pytest.approx(160, rel=0.02)


def test_adaptive_rate_lifts_the_limit_once_the_target_took_twice_the_throttled_rate() -> None:
    """Successes grow the limit even at low demand; at twice the rate it was cut from, the limit goes."""
    clock = _FakeClock()
    rate = AdaptiveRate(clock=clock)
    for _ in range(100):
        clock.now += 0.01
        rate.on_send()
    rate.on_throttle()
    assert rate.rate_per_s is not None
    lifted_after = None
    for i in range(3000):  # demand falls to 10/s while successes keep growing the limit
        clock.now += 0.1
        rate.on_send()
        rate.on_success()
        if rate.rate_per_s is None:
            lifted_after = i
            break
        assert rate.rate_per_s < 200  # twice the 100/s it was cut from
    assert lifted_after is not None


def test_a_later_throttle_cuts_the_limit_not_the_measured_rate() -> None:
    """A throttle while sends paused (a batch's tail in backoff) cuts 0.7 x the limit, not 0.7 x ~0."""
    clock = _FakeClock()
    rate = AdaptiveRate(clock=clock)
    for _ in range(200):
        clock.now += 0.01
        rate.on_send()
    rate.on_throttle()
    assert rate.rate_per_s == pytest.approx(70, rel=0.02)
    for _ in range(20):  # two seconds with a send every 100 ms: the measured rate falls to ~10/s
        clock.now += 0.1
        rate.on_send()
    rate.on_throttle()
    assert rate.rate_per_s == pytest.approx(49, rel=0.02)


async def test_gate_paces_attempts_at_the_adapted_rate_after_a_throttle() -> None:
    """After a throttle at ~100/s the gate spaces the next attempts at about 70/s (the injected clock shows it)."""
    clock = _FakeClock()
    gate = WriteGate(max_concurrent_writes=64, clock=clock, sleep=clock.sleep)

    async def ok() -> None:
        clock.now += 0.01  # 100 sequential writes/s
        await asyncio.sleep(0)

    for _ in range(200):
        await gate.run(ok)

    async def throttled() -> None:
        raise _throttle()

    with pytest.raises(ClientError):
        await gate.run(throttled)
    assert gate.rate.rate_per_s == pytest.approx(70, rel=0.05)
    start = clock.now

    async def instant() -> None:
        await asyncio.sleep(0)

    for _ in range(70):
        await gate.run(instant)
    # 63 spaced at ~1/70 s after a burst of 7 (a tenth of a second's worth), the rate creeping up meanwhile.
    assert 0.75 < clock.now - start < 0.9


def test_a_throttle_right_after_start_cuts_from_the_burst_not_to_the_minimum() -> None:
    """64 writes in the first 50 ms, then a throttle: the limit is 0.7 x 64 per 0.5 s, not 1/s."""
    clock = _FakeClock()
    rate = AdaptiveRate(clock=clock)
    for _ in range(64):
        clock.now += 0.05 / 64
        rate.on_send()
    rate.on_throttle()
    assert rate.rate_per_s == pytest.approx(0.7 * 64 / 0.5, rel=0.01)

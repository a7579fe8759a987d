"""Idle polling: consecutive empty reads back off up to the cap; records bring the fast interval back."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from scripted_stream import ScriptedStream

from replicator.core.config import ReaderConfig
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.polling import CATCH_UP_EMPTY_READS, STALE_RECORD_S, IdleBackoff
from replicator.source.shards import Shard
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from replicator.core.records import ChangeRecord

OLD_IDLE_CAP_S = 1.0
"""The cap before adaptive backoff: an idle shard cost a GetRecords a second."""


def _at_tip(backoff: IdleBackoff) -> IdleBackoff:
    """A reader that read a fresh record is at the shard's tip: its empty reads mean idleness."""
    backoff.after_records(newest_age_s=1.0)
    return backoff


def test_schedule_doubles_from_the_fast_interval_to_the_cap_and_resets_on_records() -> None:
    """0.25 -> 0.5 -> 1 -> 2 -> 4 -> 4 ...; a read with records starts again at 0.25."""
    backoff = _at_tip(IdleBackoff(fast_s=0.25, max_s=4.0))
    assert [backoff.after_empty() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.after_records()
    assert [backoff.after_empty() for _ in range(3)] == [0.25, 0.5, 1.0]


def test_a_shards_first_empty_reads_and_those_after_old_records_stay_fast_then_back_off() -> None:
    """Empty portions of a shard behind its tip are not idleness: a few empty reads keep the fast interval."""
    growth = [0.25, 0.5, 1.0, 2.0, 4.0]
    backoff = IdleBackoff(fast_s=0.25, max_s=4.0)
    assert [backoff.after_empty() for _ in range(CATCH_UP_EMPTY_READS + 5)] == [0.25] * CATCH_UP_EMPTY_READS + growth
    backoff.after_records(newest_age_s=STALE_RECORD_S + 1)  # an hour-old page: read behind the tip
    assert [backoff.after_empty() for _ in range(CATCH_UP_EMPTY_READS + 2)] == [0.25] * CATCH_UP_EMPTY_READS + [
        0.25,
        0.5,
    ]
    backoff.after_records(newest_age_s=0.5)  # a fresh page: at the tip, the next empty read is idleness
    assert [backoff.after_empty() for _ in range(3)] == growth[:3]


def test_a_cap_below_the_fast_interval_keeps_the_fast_interval() -> None:
    """A cap below the fast interval (or 0, in tests) never waits less than the fast interval."""
    assert [IdleBackoff(fast_s=0.25, max_s=0.1).after_empty() for _ in range(3)] == [0.25] * 3
    zero = IdleBackoff(fast_s=0, max_s=0)
    assert [zero.after_empty() for _ in range(3)] == [0, 0, 0]


def test_a_zero_fast_interval_still_backs_off_an_idle_shard_to_the_cap() -> None:
    """poll_interval_s 0 (allowed: poll busy shards back to back) must not poll an idle shard back to back too."""
    backoff = _at_tip(IdleBackoff(fast_s=0, max_s=5.0))
    waits = [backoff.after_empty() for _ in range(30)]
    assert waits[0] == 0
    assert waits == sorted(waits)
    assert waits[-1] == 5.0
    backoff.after_records()
    assert backoff.after_empty() == 0


def test_default_cap_cuts_idle_get_records_to_a_quarter_at_most() -> None:
    """The default cap is at least 4x the old 1 s, so an idle shard's steady poll rate is <= 1/4 of before."""
    cfg = ReaderConfig()
    assert cfg.poll_interval_s == 0.25  # Lambda's 4 polls/s for busy shards, unchanged
    assert cfg.max_idle_poll_interval_s >= 4 * OLD_IDLE_CAP_S


class _Processor:
    def __init__(self) -> None:
        self.records: list[str] = []

    async def process(self, records: Sequence[ChangeRecord]) -> None:
        self.records.extend(r.sequence_number for r in records)


class _Store:
    async def save(self, *_: Any, **__: Any) -> None:
        return None


async def test_reader_backs_off_on_an_idle_shard_and_polls_fast_once_it_wakes() -> None:
    """With the default config the waits grow to the cap, a record resets them, then they grow again."""
    stream = ScriptedStream()
    stream.add_shard("s1")
    processor = _Processor()
    stop = asyncio.Event()
    cfg = ReaderConfig()
    cap = cfg.max_idle_poll_interval_s
    pauses: list[float] = []

    start = CATCH_UP_EMPTY_READS  # a shard's first empty reads may be empty portions: kept fast
    wake = start + 8

    async def pause(delay_s: float) -> None:
        pauses.append(delay_s)
        if len(pauses) == wake:
            stream.put("s1", "k", 1)  # the shard wakes up while the reader waits at the cap
        if len(pauses) == wake + 4:
            stop.set()

    metrics = Metrics()
    reader = _reader(stream, processor=processor, cfg=cfg, stop=stop, pause=pause, metrics=metrics)
    assert await asyncio.wait_for(reader.run(), 10) == "stopped"
    assert len(processor.records) == 1
    growth = [0.25, 0.5, 1.0, 2.0, 4.0]
    assert pauses[:start] == [cfg.poll_interval_s] * start
    assert pauses[start : start + 5] == growth
    assert pauses[start + 5 : wake] == [cap] * 3
    # The poll after the wake read the record: the next wait is at most the fast interval (from that poll's
    # start)...
    assert pauses[wake] <= cfg.poll_interval_s
    # ...and, the record being fresh, the empty reads after it start the growth again at once.
    assert pauses[wake + 1 : wake + 4] == growth[:3]
    assert metrics.registry.get_sample_value("replicator_get_records_calls_total", {"result": "empty"}) == wake + 3


def _reader(
    stream: ScriptedStream,
    *,
    processor: _Processor,
    cfg: ReaderConfig,
    stop: asyncio.Event,
    pause: Callable[[float], Awaitable[None]],
    metrics: Metrics,
) -> ShardReader:
    return ShardReader(
        api=StreamsSource(stream, stream),
        stream_arn=stream.arn,
        shard=Shard("s1", None, "1"),
        checkpoint=None,
        store=_Store(),  # type: ignore[arg-type]
        processor=processor,  # type: ignore[arg-type]
        state=WorkerState(metrics),
        metrics=metrics,
        settings=ReaderSettings(reader=cfg, batch_size=100, initial_position="TRIM_HORIZON"),
        retry_policy=RetryPolicy(max_attempts=1),
        stop=stop,
        pause=pause,
    )


class _EmptyPortions(ScriptedStream):
    """A shard whose records sit behind ``empty`` empty pages, as DynamoDB Streams documents can happen."""

    def __init__(self, empty: int) -> None:
        super().__init__()
        self.empty = empty

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        if self.empty > 0:
            self.empty -= 1
            return {"Records": [], "NextShardIterator": ShardIterator}
        return await super().get_records(ShardIterator, Limit)


async def test_a_reader_behind_the_tip_crosses_empty_portions_at_the_fast_interval() -> None:
    """Old records behind empty pages: the reader does not back off towards the cap on its way to them."""
    stream = _EmptyPortions(empty=6)
    stream.add_shard("s1")
    stream.put("s1", "k", 1)
    old = dt.datetime.now(tz=dt.UTC) - dt.timedelta(hours=1)
    stream.shards["s1"].records[0]["dynamodb"]["ApproximateCreationDateTime"] = old
    processor, stop, cfg = _Processor(), asyncio.Event(), ReaderConfig()
    pauses: list[float] = []

    async def pause(delay_s: float) -> None:
        pauses.append(delay_s)
        if processor.records:
            stop.set()

    reader = _reader(stream, processor=processor, cfg=cfg, stop=stop, pause=pause, metrics=Metrics())
    assert await asyncio.wait_for(reader.run(), 10) == "stopped"
    assert len(processor.records) == 1
    assert pauses[:6] == [cfg.poll_interval_s] * 6, "the empty portions were waited out as idleness"

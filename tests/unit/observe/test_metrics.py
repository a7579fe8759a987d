"""Each metric's semantics, read as exact sample values from an injected registry.

The real reader, processor and state run against a scripted DynamoDB Streams stand-in
(tests/scripted_stream.py) and scripted targets: DynamoDB itself is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import generate_latest
from scripted_stream import RecordingTarget, ScriptedStream

from replicator import __version__
from replicator.aws.clients import Clients, TargetClient
from replicator.checkpoint import Checkpoint
from replicator.core.config import Config
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import OUTCOMES, SHARD_STATES, Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.service import Replicator
from replicator.runtime.wiring import build_processor
from replicator.source.shards import Shard
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from replicator.core.records import ChangeRecord

T0 = 1_700_000_000.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        """Set up the fake."""
        self.now = now

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now


class MemoryStore:
    """CheckpointStore in a dict."""

    def __init__(self) -> None:
        """Set up the fake."""
        self.saved: dict[str, Checkpoint] = {}

    async def start(self) -> None:
        """Nothing to create."""

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Return the saved checkpoints."""
        del stream_arn
        return dict(self.saved)

    async def save(
        self,
        stream_arn: str,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool = False,
        parent_shard_id: str | None = None,
    ) -> None:
        """Keep the checkpoint."""
        del stream_arn
        self.saved[shard_id] = Checkpoint(shard_id, sequence_number, shard_end, 0.0, parent_shard_id)

    async def close(self) -> None:
        """Nothing to release."""


class ScriptedTarget(RecordingTarget):
    """A target whose next writes raise the given AWS error codes, then succeed; can block on a gate."""

    def __init__(self, errors: list[str] | None = None) -> None:
        """Set up the fake."""
        super().__init__()
        self.errors = list(errors or [])
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    async def _maybe_fail(self, operation: str) -> None:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.errors:
            code = self.errors.pop(0)
            status = 500 if code == "InternalServerError" else 400
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": "scripted"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
                operation,
            )

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Fail or block as scripted, else record the write."""
        await self._maybe_fail("PutItem")
        return await super().put_item(**params)

    async def delete_item(self, **params: Any) -> dict[str, Any]:
        """Fail or block as scripted, else record the write."""
        await self._maybe_fail("DeleteItem")
        return await super().delete_item(**params)


class ListDeadLetters:
    """DeadLetterSink keeping what it was sent."""

    def __init__(self) -> None:
        """Set up the fake."""
        self.sent: list[tuple[ChangeRecord, str]] = []

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Keep the dead letter."""
        del attempts
        self.sent.append((record, type(error).__name__))


def _config(tmp_path: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": "Orders"},
        "target": {"region": "eu-west-1", "table": "Orders"},
        "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        "metrics": {"enabled": False},
        "reader": {
            "poll_interval_s": 0.01,
            "max_idle_poll_interval_s": 0.02,
            "shard_discovery_interval_s": 0.05,
        },
    }
    data.update(overrides)
    return Config(**data)


def _at(stream: ScriptedStream, shard_id: str, created_s: float) -> None:
    """Set the source creation time of the shard's last record."""
    when = dt.datetime.fromtimestamp(created_s, tz=dt.UTC)
    stream.shards[shard_id].records[-1]["dynamodb"]["ApproximateCreationDateTime"] = when


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class Harness:
    """One shard reader wired to the real processor and state, on a scripted stream and target."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        target: ScriptedTarget | None = None,
        dead_letters: Any = None,
        clock: FakeClock | None = None,
        **cfg: Any,
    ) -> None:
        """Set up the fake."""
        self.cfg = _config(tmp_path, **cfg)
        self.stream = ScriptedStream()
        self.target = target or ScriptedTarget()
        self.metrics = Metrics()
        self.clock = clock or FakeClock()
        self.state = WorkerState(self.metrics, clock=self.clock)
        self.store = MemoryStore()
        self.stop = asyncio.Event()
        self.processor = build_processor(
            self.cfg,
            target_client=TargetClient(self.target),
            metrics=self.metrics,
            dead_letters=dead_letters,
            clock=self.clock,
        )

    def reader(self, shard_id: str, parent: str | None = None) -> ShardReader:
        """Return a reader of the shard wired to this harness."""
        closed = self.stream.shards[shard_id].closed
        return ShardReader(
            api=StreamsSource(self.stream, self.stream),
            stream_arn=self.stream.arn,
            shard=Shard(shard_id, parent, "1", "9" if closed else None),
            checkpoint=None,
            store=self.store,
            processor=self.processor,
            state=self.state,
            metrics=self.metrics,
            settings=ReaderSettings(reader=self.cfg.reader, batch_size=100, initial_position="TRIM_HORIZON"),
            retry_policy=RetryPolicy(max_attempts=3, base_delay_s=0.001),
            stop=self.stop,
        )

    def value(self, name: str, **labels: str) -> float | None:
        """Return a sample value from this harness's registry."""
        return _value(self.metrics, name, **labels)


async def _until(predicate: Any, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state that other tasks change without an event
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# Registration


def test_every_series_family_is_exported_from_the_start() -> None:
    """Outcomes, shard states and GetRecords results start at 0, so rate() and alerts see them at once."""
    metrics = Metrics()
    metrics.for_target("eu-west-1")  # a target's series: from when its processor is built (build_processor)
    for outcome in OUTCOMES:
        assert _value(metrics, "replicator_records_total", target="eu-west-1", outcome=outcome) == 0
    for state in SHARD_STATES:
        assert _value(metrics, "replicator_shards", state=state) == 0
    assert _value(metrics, "replicator_get_records_calls_total", result="records") == 0
    assert _value(metrics, "replicator_get_records_calls_total", result="empty") == 0
    assert _value(metrics, "replicator_dead_letters_total", target="eu-west-1") == 0


def test_no_label_carries_item_contents(tmp_path: Path) -> None:
    """After a run with a recognisable value, no metric label holds a key or attribute value."""

    async def run() -> Metrics:
        h = Harness(tmp_path)
        h.stream.add_shard("s1")
        h.stream.put("s1", "secret-key-4711", 1)
        h.stream.close("s1")
        assert await h.reader("s1").run() == "shard_end"
        return h.metrics

    metrics = asyncio.run(run())
    labels = [v for family in metrics.registry.collect() for s in family.samples for v in s.labels.values()]
    assert "s1" in labels
    assert not any("secret-key-4711" in v for v in labels)


# ---------------------------------------------------------------------------------------------
# Iterator age and checkpoint age (state semantics, fake clock)


def test_iterator_age_grows_while_behind_and_is_zero_when_caught_up() -> None:
    """Age of the newest record read, computed at collection: grows while stuck, 0 after an empty read."""
    clock = FakeClock()
    metrics = Metrics()
    state = WorkerState(metrics, clock=clock)
    state.set_state("s1", "reading")
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == 0
    state.read("s1", newest_created_us=int((T0 - 30) * 1_000_000))
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == 30
    clock.now += 45  # nothing reported: the batch is stuck
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == 75
    state.batch_done("s1")
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == 75
    state.caught_up("s1")
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == 0
    clock.now += 100
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == 0


def test_checkpoint_age_grows_while_stuck_and_resets_on_save_or_empty_read() -> None:
    """Seconds since the checkpoint was last known current; an idle, caught-up shard stays at 0."""
    clock = FakeClock()
    metrics = Metrics()
    state = WorkerState(metrics, clock=clock)
    state.set_state("s1", "reading")
    clock.now += 10
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="s1") == 10
    state.checkpointed("s1", "100")
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="s1") == 0
    assert _value(metrics, "replicator_last_checkpoint_timestamp_seconds", shard="s1") == T0 + 10
    clock.now += 600  # stuck: no save, no read
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="s1") == 600
    state.caught_up("s1")
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="s1") == 0
    state.set_state("s1", "stopped", error="PoisonRecordError")
    clock.now += 300
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="s1") == 300


def test_checkpoint_age_starts_when_reading_starts_not_when_first_seen() -> None:
    """A child that waited an hour on its parent starts reading with a checkpoint age of 0."""
    clock = FakeClock()
    metrics = Metrics()
    state = WorkerState(metrics, clock=clock)
    state.set_state("child", "waiting_on_parent")
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="child") is None
    assert _value(metrics, "replicator_iterator_age_seconds", shard="child") is None
    clock.now += 3600
    state.set_state("child", "reading")
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="child") == 0


def test_shards_by_state_counts_owned_and_each_state() -> None:
    """Owned counts every held shard not closed or stopped; each state counts its own."""
    metrics = Metrics()
    state = WorkerState(metrics, clock=FakeClock())
    state.set_state("a", "reading")
    state.set_state("b", "reading")
    state.set_state("c", "waiting_on_parent")
    state.set_state("d", "closed")
    state.set_state("e", "stopped", error="TrimmedDataError")
    expected = {"owned": 3, "reading": 2, "waiting_on_parent": 1, "closed": 1, "stopped": 1}
    for name, n in expected.items():
        assert _value(metrics, "replicator_shards", state=name) == n, name
    state.set_state("a", "closed")
    assert _value(metrics, "replicator_shards", state="reading") == 1
    assert _value(metrics, "replicator_shards", state="closed") == 2
    assert _value(metrics, "replicator_shards", state="owned") == 2


def test_closed_shard_drops_gauges_at_once_and_counters_after_grace() -> None:
    """Cardinality stays bounded: a closed shard's gauges go now, its counters once scrapes saw them."""
    clock = FakeClock()
    metrics = Metrics()
    state = WorkerState(metrics, clock=clock, closed_counter_grace_s=60)
    state.set_state("s1", "reading")
    state.read("s1", newest_created_us=int((T0 - 5) * 1_000_000))
    state.checkpointed("s1", "100")
    metrics.records_read.labels(shard="s1").inc(3)
    metrics.for_target("eu-west-1").records_written.labels(shard="s1").inc(2)
    state.set_state("s1", "closed")
    for gauge in (
        "replicator_iterator_age_seconds",
        "replicator_checkpoint_age_seconds",
        "replicator_last_checkpoint_timestamp_seconds",
    ):
        assert _value(metrics, gauge, shard="s1") is None, gauge
    assert _value(metrics, "replicator_records_read_total", shard="s1") == 3
    clock.now += 59
    state.refresh_gauges()
    assert _value(metrics, "replicator_records_written_total", target="eu-west-1", shard="s1") == 2
    clock.now += 1
    state.refresh_gauges()
    assert _value(metrics, "replicator_records_read_total", shard="s1") is None
    assert _value(metrics, "replicator_records_written_total", target="eu-west-1", shard="s1") is None
    assert _value(metrics, "replicator_shards", state="closed") == 1


def test_released_shard_drops_every_series() -> None:
    """A shard handed to another worker leaves no per-shard series and no state entry here."""
    metrics = Metrics()
    state = WorkerState(metrics, clock=FakeClock())
    state.set_state("s1", "reading")
    state.checkpointed("s1", "7")
    metrics.records_read.labels(shard="s1").inc()
    state.release("s1")
    assert "s1" not in state.shards
    assert _value(metrics, "replicator_checkpoint_age_seconds", shard="s1") is None
    assert _value(metrics, "replicator_records_read_total", shard="s1") is None
    assert _value(metrics, "replicator_shards", state="owned") == 0


# ---------------------------------------------------------------------------------------------
# Through the real reader and processor


async def test_reader_counts_get_records_calls_and_reads(tmp_path: Path) -> None:
    """A closed shard read in one page: one call with records, none empty; an empty closed one: one empty."""
    h = Harness(tmp_path)
    h.stream.add_shard("full")
    for i in range(3):
        h.stream.put("full", f"k{i}", i)
    h.stream.close("full")
    h.stream.add_shard("empty")
    h.stream.close("empty")
    assert await h.reader("full").run() == "shard_end"
    assert h.value("replicator_get_records_calls_total", result="records") == 1
    assert h.value("replicator_get_records_calls_total", result="empty") == 0
    assert h.value("replicator_records_read_total", shard="full") == 3
    assert h.value("replicator_records_written_total", target="eu-west-1", shard="full") == 3
    assert await h.reader("empty").run() == "shard_end"
    assert h.value("replicator_get_records_calls_total", result="records") == 1
    assert h.value("replicator_get_records_calls_total", result="empty") == 1


async def test_reader_iterator_age_tracks_stuck_batch_then_caught_up(tmp_path: Path) -> None:
    """While a write is stuck the iterator and checkpoint ages grow; after the empty read both are 0."""
    target = ScriptedTarget()
    target.gate = asyncio.Event()
    h = Harness(tmp_path, target=target)
    h.stream.add_shard("s1")
    h.stream.put("s1", "k", 1)
    _at(h.stream, "s1", T0 - 20)
    task = asyncio.create_task(h.reader("s1").run())
    try:
        await asyncio.wait_for(target.waiting.wait(), 2)
        assert h.value("replicator_iterator_age_seconds", shard="s1") == 20
        h.clock.now += 100
        assert h.value("replicator_iterator_age_seconds", shard="s1") == 120
        assert h.value("replicator_checkpoint_age_seconds", shard="s1") == 100
        assert h.state.not_ready(timeout_s=60) == ["s1"]
        target.gate.set()
        await _until(lambda: h.value("replicator_iterator_age_seconds", shard="s1") == 0)
        assert h.value("replicator_checkpoint_age_seconds", shard="s1") == 0
        assert h.value("replicator_records_total", target="eu-west-1", outcome="replicated") == 1
        assert h.state.not_ready(timeout_s=60) == []
    finally:
        h.stop.set()
        assert await task == "stopped"


async def test_outcomes_sum_to_records_read(tmp_path: Path) -> None:
    """Replicated, collapsed, filtered, echo_skipped, superseded, dead_lettered: one outcome per record."""
    dead = ListDeadLetters()
    target = ScriptedTarget()
    h = Harness(tmp_path, target=target, dead_letters=dead, filters=[{"eventName": ["INSERT", "MODIFY"]}])
    h.stream.add_shard("s1")
    h.stream.put("s1", "a", 1)  # collapsed by the next
    h.stream.put("s1", "a", 2)  # replicated
    h.stream.put("s1", "b", 1, event_name="REMOVE")  # filtered
    h.stream.put("s1", "c", 1)  # echo: a replicator wrote a new version
    h.stream.shards["s1"].records[-1]["dynamodb"]["NewImage"]["_rep_version"] = {"S": "v2"}
    h.stream.put("s1", "d", 1)  # superseded
    h.stream.put("s1", "e", 1)  # rejected by the target: dead-lettered
    h.stream.close("s1")
    codes = {"d": "ConditionalCheckFailedException", "e": "ValidationException"}
    original = target.put_item

    async def put_item(**params: Any) -> dict[str, Any]:
        """Fail or block as scripted, else record the write."""
        code = codes.get(params["Item"]["pk"]["S"])
        if code:
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "PutItem")
        return await original(**params)

    target.put_item = put_item  # type: ignore[method-assign]
    assert await h.reader("s1").run() == "shard_end"
    expected = {
        "replicated": 1,
        "collapsed": 1,
        "filtered": 1,
        "echo_skipped": 1,
        "superseded": 1,
        "dead_lettered": 1,
        "ttl_skipped": 0,
    }
    for outcome, n in expected.items():
        assert h.value("replicator_records_total", target="eu-west-1", outcome=outcome) == n, outcome
    assert sum(expected.values()) == h.value("replicator_records_read_total", shard="s1") == 6
    assert h.value("replicator_conflicts_total", target="eu-west-1") == 1
    assert h.value("replicator_dead_letters_total", target="eu-west-1") == 1
    assert [name for _, name in dead.sent] == ["RecordRejectedError"]
    assert h.value("replicator_records_written_total", target="eu-west-1", shard="s1") == 1
    assert h.value("replicator_batch_records_count", target="eu-west-1") == 1
    assert h.value("replicator_batch_records_sum", target="eu-west-1") == 6


async def test_retries_and_throttles_by_operation(tmp_path: Path) -> None:
    """A throttled write counts a throttle and a retry; a 500 counts a retry only; both under PutItem."""
    h = Harness(tmp_path, target=ScriptedTarget(["ProvisionedThroughputExceededException", "InternalServerError"]))
    h.stream.add_shard("s1")
    h.stream.put("s1", "k", 1)
    h.stream.close("s1")
    assert await h.reader("s1").run() == "shard_end"
    assert h.value("replicator_retries_total", target="eu-west-1", operation="PutItem") == 2
    assert h.value("replicator_throttles_total", target="eu-west-1", operation="PutItem") == 1
    assert h.value("replicator_retries_total", target="", operation="GetRecords") is None
    assert h.value("replicator_records_total", target="eu-west-1", outcome="replicated") == 1


async def test_replication_latency_is_creation_to_write_acknowledged(tmp_path: Path) -> None:
    """One replicated record created 2.5 s before its write was acknowledged: one observation of 2.5."""
    h = Harness(tmp_path)
    h.stream.add_shard("s1")
    h.stream.put("s1", "k", 1)
    _at(h.stream, "s1", T0 - 2.5)
    h.stream.put("s1", "superseded-not-observed", 1)
    h.stream.close("s1")
    original = h.target.put_item

    async def put_item(**params: Any) -> dict[str, Any]:
        """Fail or block as scripted, else record the write."""
        if params["Item"]["pk"]["S"] != "k":
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "no"}}, "PutItem")
        return await original(**params)

    h.target.put_item = put_item  # type: ignore[method-assign]
    assert await h.reader("s1").run() == "shard_end"
    assert h.value("replicator_replication_latency_seconds_count", target="eu-west-1") == 1
    assert h.value("replicator_replication_latency_seconds_sum", target="eu-west-1") == 2.5
    assert h.value("replicator_replication_latency_seconds_bucket", target="eu-west-1", le="2.0") == 0
    assert h.value("replicator_replication_latency_seconds_bucket", target="eu-west-1", le="3.0") == 1


# ---------------------------------------------------------------------------------------------
# Through the service


async def test_service_build_info_and_closed_parent_series(tmp_path: Path) -> None:
    """The service exports build info and its target's outcomes; a closed parent's gauges go, the child reads."""
    cfg = _config(tmp_path)
    stream = ScriptedStream()
    stream.add_shard("parent")
    stream.put("parent", "k", 1)
    stream.close("parent")
    stream.add_shard("child", parent="parent")
    stream.put("child", "k", 2)
    metrics = Metrics()
    target = RecordingTarget()
    replicator = Replicator(
        cfg, metrics=metrics, clients=Clients(source=stream, streams=stream, target=TargetClient(target))
    )
    task = asyncio.create_task(replicator.run())
    try:
        await _until(
            lambda: target.values_of("k") == [1, 2] and replicator.state.shard("child").newest_record_s is None
        )
        assert replicator.state.running
        info = {
            "version": __version__,
            "source_region": "us-east-1",
            "source_table": "Orders",
            "target_region": "eu-west-1",
            "target_table": "Orders",
            "checkpoint_backend": "sqlite",
        }
        assert _value(metrics, "replicator_build_info", **info) == 1
        assert _value(metrics, "replicator_shards", state="closed") == 1
        assert _value(metrics, "replicator_shards", state="reading") == 1
        assert _value(metrics, "replicator_iterator_age_seconds", shard="parent") is None
        assert _value(metrics, "replicator_iterator_age_seconds", shard="child") == 0
        assert _value(metrics, "replicator_records_read_total", shard="parent") == 1
        # The service's processor records under its target's region; the worker itself under no target.
        assert _value(metrics, "replicator_records_total", target="eu-west-1", outcome="replicated") == 2
        assert _value(metrics, "replicator_records_total", target="eu-west-1", outcome="dead_lettered") == 0
        assert _value(metrics, "replicator_records_total", target="", outcome="replicated") is None
    finally:
        replicator.stop()
        await task
    assert not replicator.state.running


def test_state_rejects_nothing_for_unknown_shard_reads() -> None:
    """Reports for a shard never set to a state create its entry (owned) without exporting ages."""
    metrics = Metrics()
    state = WorkerState(metrics, clock=FakeClock())
    state.caught_up("x")
    assert state.shards["x"].state == "owned"
    assert _value(metrics, "replicator_iterator_age_seconds", shard="x") is None
    assert _value(metrics, "replicator_shards", state="owned") == 1


@pytest.mark.parametrize("age", [0.0, 12.0])
def test_progressed_keeps_its_older_meaning(age: float) -> None:
    """progressed(age=0) means caught up; age > 0 means a batch done that far behind."""
    clock = FakeClock()
    metrics = Metrics()
    state = WorkerState(metrics, clock=clock)
    state.set_state("s1", "reading")
    state.progressed("s1", iterator_age_s=age)
    assert _value(metrics, "replicator_iterator_age_seconds", shard="s1") == age


def test_no_created_series_by_default() -> None:
    """Counters and histograms export no _created series unless asked: the exact exposition of one counter."""
    metrics = Metrics()
    metrics.for_target("eu-west-1").conflicts.inc()
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text
    lines = text.splitlines()
    help_line = (
        "# HELP replicator_conflicts_total Conditional writes that lost last-writer-wins (superseded), per target."
    )
    start = lines.index(help_line)
    assert lines[start : start + 3] == [
        help_line,
        "# TYPE replicator_conflicts_total counter",
        'replicator_conflicts_total{target="eu-west-1"} 1.0',
    ]


def test_created_series_on_request() -> None:
    """metrics.created_series in the config brings them back on the service's registry (a target's too)."""
    cfg = Config(
        source={"region": "us-east-1", "table": "src"},
        target={"region": "eu-west-1", "table": "dst"},
        metrics={"created_series": True},
    )
    metrics = Replicator(cfg).metrics
    metrics.for_target("eu-west-1")  # what the service's build_processor does for its target
    text = generate_latest(metrics.registry).decode()
    assert 'replicator_conflicts_created{target="eu-west-1"} ' in text
    assert 'replicator_records_created{outcome="replicated",target="eu-west-1"} ' in text

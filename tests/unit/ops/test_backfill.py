"""Backfill's pure parts: the token bucket, the synthetic record, and saved progress."""

from __future__ import annotations

import json

import pytest

from replicator.core.config import ReplicationConfig
from replicator.ops.backfill import (
    BackfillError,
    JsonProgressStore,
    SegmentProgress,
    TokenBucket,
    synthetic_record,
)
from replicator.pipeline.origin import classify
from replicator.pipeline.version import TIEBREAK_DIGITS, change_version


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


def test_synthetic_record_is_versioned_before_its_read_and_below_a_streamed_change() -> None:
    """A scanned item's version is read time minus margin, tie-breaker 0, and it is an application change."""
    item = {"pk": {"S": "a"}, "v": {"N": "1"}, "_rep_version": {"S": "00000000000000001#eu-west-1#0"}}
    record = synthetic_record(item, ("pk",), read_time_s=1000.0, safety_margin_s=60.0, segment=2)
    assert record.keys == {"pk": {"S": "a"}}
    assert record.event["dynamodb"]["NewImage"] == item
    # Carries another region's marker, yet it is the source's state: not skipped as an echo.
    assert classify(record, ReplicationConfig()) == "application"
    version, _ = change_version(
        record,
        origin="us-east-1",
        version_attribute="_rep_version",
        timestamp_attribute=None,
        timestamp_unit="ms",
    )
    assert version == f"{940 * 1_000_000:017d}#us-east-1#{'0' * TIEBREAK_DIGITS}"


async def test_json_progress_round_trips_binary_keys_and_refuses_other_segment_counts(tmp_path) -> None:
    """A LastEvaluatedKey with a B attribute survives the file; another --segments is refused."""
    store = JsonProgressStore(tmp_path / "p.json")
    key = {"pk": {"B": b"\x00\xff"}, "sk": {"N": "1.50"}}
    await store.save("T", 3, SegmentProgress(1, key, done=False, scanned=7))
    loaded = await JsonProgressStore(tmp_path / "p.json").load("T", 3)
    assert loaded == {1: SegmentProgress(1, key, done=False, scanned=7)}
    with pytest.raises(BackfillError, match="--segments 3"):
        await JsonProgressStore(tmp_path / "p.json").load("T", 4)
    assert await JsonProgressStore(tmp_path / "p.json").load("other", 4) == {}


async def test_progress_saved_before_the_shared_codec_still_loads(tmp_path) -> None:
    """A progress file whose binary keys carry the old "B64" tag resumes from the same key."""
    path = tmp_path / "p.json"
    old = {"pk": {"B64": "AP8="}, "sk": {"N": "1.50"}}
    path.write_text(
        json.dumps({"T": {"segments": 3, "progress": {"1": {"last_key": old, "done": False, "scanned": 7}}}}),
        encoding="utf-8",
    )
    loaded = await JsonProgressStore(path).load("T", 3)
    assert loaded == {1: SegmentProgress(1, {"pk": {"B": b"\x00\xff"}, "sk": {"N": "1.50"}}, done=False, scanned=7)}


async def test_progress_is_saved_in_the_attribute_value_json_form(tmp_path) -> None:
    """New progress holds keys as DynamoDB's JSON does: B values as base64 text under "B"."""
    path = tmp_path / "p.json"
    await JsonProgressStore(path).save("T", 1, SegmentProgress(0, {"pk": {"B": b"\x00\xff"}}, done=False, scanned=1))
    assert json.loads(path.read_text(encoding="utf-8"))["T"]["progress"]["0"]["last_key"] == {"pk": {"B": "AP8="}}

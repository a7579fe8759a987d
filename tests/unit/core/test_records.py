"""core.records: creation times as integer microseconds, the same values versions were always built from."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.records import epoch_us, from_lambda_event, from_stream_record


def _old_us(seconds: float) -> int:
    """How versions turned a creation time in float seconds into µs before it was kept as µs."""
    return int(Decimal(str(seconds)) * 1_000_000)


def _event(created: object) -> dict[str, Any]:
    return {
        "eventName": "INSERT",
        "dynamodb": {"ApproximateCreationDateTime": created, "Keys": {"pk": {"S": "a"}}, "SequenceNumber": "1"},
    }


# hypothesis takes naive bounds; ``timezones`` makes the generated values aware.
_SINCE = dt.datetime(1971, 1, 1)  # noqa: DTZ001 - see above
_UNTIL = dt.datetime(2100, 1, 1)  # noqa: DTZ001 - see above


@given(st.datetimes(min_value=_SINCE, max_value=_UNTIL, timezones=st.just(dt.UTC)))
def test_a_datetime_gives_the_microseconds_its_timestamp_gave(moment: dt.datetime) -> None:
    """Datetimes (as botocore parses them) give exact µs, equal to what the float timestamp used to give."""
    assert epoch_us(moment) == _old_us(moment.timestamp())


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_seconds_with_up_to_six_decimals_are_exact(micros: int) -> None:
    """Epoch seconds as a JSON number (Lambda events, the lean GetRecords path) keep every digit."""
    seconds = micros / 1_000_000
    assert epoch_us(seconds) == micros == _old_us(seconds)


@pytest.mark.parametrize(
    ("created", "micros"),
    [(1700000000, 1700000000000000), (1700000000.25, 1700000000250000), (0, 0), (True, 1_000_000)],
)
def test_numbers_become_microseconds(created: object, micros: int) -> None:
    """Whole and fractional epoch seconds become integer µs."""
    assert epoch_us(created) == micros


def test_other_types_are_refused() -> None:
    """A string is not a creation time: ValueError names the type."""
    with pytest.raises(ValueError, match="unexpected type str"):
        epoch_us("1700000000")


def test_a_lambda_event_without_a_time_is_at_zero() -> None:
    """A record lacking ApproximateCreationDateTime is at the epoch, as before."""
    event = _event(0)
    del event["dynamodb"]["ApproximateCreationDateTime"]
    assert from_lambda_event(event, shard_id="s").approximate_creation_time_us == 0


def test_a_known_exact_time_wins_over_the_events_seconds() -> None:
    """A source that knows the time to the µs passes it; the event keeps its epoch seconds."""
    record = from_lambda_event(_event(1700000000.123), shard_id="s", created_us=1700000000123456)
    assert record.approximate_creation_time_us == 1700000000123456
    assert record.event["dynamodb"]["ApproximateCreationDateTime"] == 1700000000.123


def test_a_stream_record_keeps_its_datetime_to_the_microsecond() -> None:
    """GetRecords via botocore: the datetime becomes µs exactly and the event epoch seconds."""
    created = dt.datetime(2023, 11, 14, 22, 13, 20, 999999, tzinfo=dt.UTC)
    record = from_stream_record(_event(created), shard_id="s", stream_arn="arn")
    assert record.approximate_creation_time_us == 1700000000999999
    assert record.event["dynamodb"]["ApproximateCreationDateTime"] == created.timestamp()
    assert record.event["eventSourceARN"] == "arn"


def test_plugins_still_read_the_creation_time_in_seconds() -> None:
    """approximate_creation_time_s, the field plugins saw before integer µs, gives the same float seconds."""
    event = {
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": "a"}}, "SequenceNumber": "1", "ApproximateCreationDateTime": 1700000000.5},
    }
    record = from_lambda_event(event, shard_id="s")
    assert record.approximate_creation_time_us == 1_700_000_000_500_000
    assert record.approximate_creation_time_s == 1700000000.5

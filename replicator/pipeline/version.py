"""Versions: one sortable string per change that orders all changes to a key totally.

``<timestamp µs, 17 digits>#<origin region>#<tie-breaker, 56 digits>`` (``:`` and 129 digits for a longer
sequence number: ``MAX_TIEBREAK_DIGITS``) compares as a string exactly as
the tuple (timestamp, origin, tie-breaker) compares, because ``#`` sorts below every character a region
name may hold ([a-z0-9-]) and the numbers are zero-padded to a fixed width. One string lets a single
ConditionExpression (``#ver < :ver``) decide last-writer-wins.

- timestamp: the item's ``replication.timestamp_attribute`` when configured and present, else the
  stream record's ApproximateCreationDateTime. Without an application timestamp, the time is bumped past
  the version the item carried before this change (a hybrid logical clock), so a change always
  supersedes the state it modified, even when the stream's one-second clock says otherwise.
- origin: the configured source region (never ``awsRegion`` or an ARN: DynamoDB Local says ``ddblocal``).
- tie-breaker: the source sequence number, so same-origin changes in one microsecond keep source order.
"""

from __future__ import annotations

from replicator.core.records import ChangeRecord, Item
from replicator.core.timestamps import TimestampUnit, parse_app_timestamp, unit_us

TS_DIGITS = 17
TIEBREAK_DIGITS = 56
"""Width of a tie-breaker of up to 56 digits (DynamoDB Streams has 21-40, Kinesis usually 56): zero-padded."""
MAX_TIEBREAK_DIGITS = 129
"""The longest sequence number the Kinesis API allows."""
LONG_TIEBREAK_PREFIX = ":"
"""Marks a tie-breaker of 57 to 129 digits, padded to 129. ``:`` sorts above every digit, and such a number
is above every number of 56 digits or fewer, so string order stays numeric order; versions stored with
the 56-digit form (every one written before) keep their encoding and compare correctly with the new."""


def _encode_tiebreak(tiebreak: str) -> str:
    if not tiebreak.isdigit() or len(tiebreak.lstrip("0")) > MAX_TIEBREAK_DIGITS:
        raise ValueError(f"version tie-breaker {tiebreak!r} is not a decimal of at most {MAX_TIEBREAK_DIGITS} digits")
    digits = tiebreak.lstrip("0") or "0"
    if len(digits) <= TIEBREAK_DIGITS:
        return digits.rjust(TIEBREAK_DIGITS, "0")
    return LONG_TIEBREAK_PREFIX + digits.rjust(MAX_TIEBREAK_DIGITS, "0")


def encode(timestamp_us: int, origin: str, tiebreak: str) -> str:
    """Encode a version; ``tiebreak`` is a decimal string (a sequence number, up to 129 digits)."""
    if timestamp_us < 0 or timestamp_us >= 10**TS_DIGITS:
        raise ValueError(f"version timestamp {timestamp_us} µs is out of range")
    return f"{timestamp_us:0{TS_DIGITS}d}#{origin}#{_encode_tiebreak(tiebreak)}"


def timestamp_of(version: str) -> int:
    """Return the timestamp (µs) part of an encoded version."""
    return int(version[:TS_DIGITS])


def _marker_version(image: Item | None, version_attribute: str) -> str | None:
    if not image:
        return None
    value = image.get(version_attribute)
    if value is None or "S" not in value:
        return None
    return str(value["S"])


def change_version(
    record: ChangeRecord,
    *,
    origin: str,
    version_attribute: str,
    timestamp_attribute: str | None,
    timestamp_unit: TimestampUnit,
    timestamp_marker_attribute: str = "_rep_ts",
) -> tuple[str, int | None]:
    """Return ``(version, app_timestamp_us)`` for a change read from the source.

    ``app_timestamp_us`` is the application's own timestamp (None when not configured or absent);
    for a delete it is derived from the deleted image's timestamp (see below), else the stream time.
    """
    stream_us = record.approximate_creation_time_us
    app_us: int | None = None
    if timestamp_attribute is not None:
        if record.event_name == "REMOVE":
            per_unit_us = unit_us(timestamp_unit)
            old = record.old_image or {}
            old_us = parse_app_timestamp(old.get(timestamp_attribute), timestamp_unit)
            # A delete happens after the write it removes, on the application's clock, never the
            # stream's: a re-create stamped by the application must be able to follow it. Deleting
            # this region's own write: same timestamp, and the sequence number puts the delete after
            # it (and a re-create in the same unit after the delete). Deleting a write replicated from
            # elsewhere: one unit later, as the origin region would otherwise break the tie. Always
            # derived, in whole units: the tombstone's timestamp attribute must order as the version.
            if old_us is None:
                derived = stream_us
            else:
                replicated = old.get(timestamp_marker_attribute) == old.get(timestamp_attribute)
                derived = old_us + (per_unit_us if replicated else 0)
            app_us = -(-derived // per_unit_us) * per_unit_us
        else:
            app_us = parse_app_timestamp((record.new_image or {}).get(timestamp_attribute), timestamp_unit)
    if app_us is not None:
        ts = app_us
    else:
        ts = stream_us
        previous = _marker_version(record.old_image, version_attribute) or _marker_version(
            record.new_image, version_attribute
        )
        if previous is not None:
            ts = max(ts, timestamp_of(previous) + 1)
    return encode(ts, origin, record.sequence_number), app_us

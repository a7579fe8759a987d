"""The application's timestamp attribute (``replication.timestamp_attribute``) in its configured unit, as epoch µs.

Pure conversions of a DynamoDB ``N`` value: the decimal string is never parsed into a float, so no
precision is lost at any unit.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Literal

from replicator.core.records import AttributeValue

TimestampUnit = Literal["s", "ms", "us"]
_PER_SECOND: dict[TimestampUnit, int] = {"s": 1, "ms": 1_000, "us": 1_000_000}


def unit_us(unit: TimestampUnit) -> int:
    """Microseconds in one ``unit``."""
    return 1_000_000 // _PER_SECOND[unit]


def parse_app_timestamp(value: AttributeValue | None, unit: TimestampUnit) -> int | None:
    """Return an application timestamp attribute as epoch µs, or None if absent or not a number."""
    if not value or "N" not in value:
        return None
    try:
        number = Decimal(value["N"])
    except InvalidOperation:
        return None
    return int(number * unit_us(unit))


def app_timestamp_value(timestamp_us: int, unit: TimestampUnit) -> AttributeValue:
    """Render µs as the application's timestamp attribute (N in the configured unit, rounded up)."""
    per = unit_us(unit)
    return {"N": str(-(-timestamp_us // per))}

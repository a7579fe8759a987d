"""Transform stages: small pure functions ``ChangeRecord -> ChangeRecord | None``, run in order.

:mod:`replicator.pipeline.transform_specs` turns the ``transforms:`` config into these stages, as
structlog chains processors. A stage returns a new record (never edits the input's dicts:
``record.event`` shares them and goes into dead letters as read) or None to drop it.

At run time any failure surfaces as :class:`TransformError` naming the stage and the record's shard and
sequence number, never item contents (they may be personal data); the original error is chained.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

from replicator.core.errors import TransformError
from replicator.core.records import US_PER_S, AttributeValue, ChangeRecord, Item

Stage: TypeAlias = Callable[[ChangeRecord], ChangeRecord | None]

# The values a set stage can derive from the record or the replication (see deriver).
DerivedValue: TypeAlias = Literal[
    "replication_time_iso",
    "replication_time_epoch_ms",
    "source_approximate_creation_time_epoch_s",
    "source_region",
    "source_sequence_number",
]


# --------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------


class _StageError(Exception):
    """A stage refuses a record; the message names only configured attribute names, never values."""


_FAST_FIELDS = (
    "event_name",
    "keys",
    "new_image",
    "old_image",
    "sequence_number",
    "approximate_creation_time_us",
    "shard_id",
    "event",
    "is_ttl_delete",
)


def _with_direct(record: ChangeRecord, keys: Item, new_image: Item | None, old_image: Item | None) -> ChangeRecord:
    # Positional construction is ~5x faster than dataclasses.replace (0.3 us against 1.6 us).
    return ChangeRecord(
        record.event_name,
        keys,
        new_image,
        old_image,
        record.sequence_number,
        record.approximate_creation_time_us,
        record.shard_id,
        record.event,
        record.is_ttl_delete,
    )


def _with_replace(record: ChangeRecord, keys: Item, new_image: Item | None, old_image: Item | None) -> ChangeRecord:
    return dataclasses.replace(record, keys=keys, new_image=new_image, old_image=old_image)


# Should ChangeRecord gain a field, fall back to dataclasses.replace so no field is lost.
_with = _with_direct if tuple(f.name for f in dataclasses.fields(ChangeRecord)) == _FAST_FIELDS else _with_replace


def copy_value(value: AttributeValue) -> AttributeValue:
    """Copy an AttributeValue's containers, so no two records share a mutable dict or list."""
    ((type_, inner),) = value.items()
    if type_ == "M":
        return {"M": {k: copy_value(v) for k, v in inner.items()}}
    if type_ == "L":
        return {"L": [copy_value(v) for v in inner]}
    if type_ in ("SS", "NS", "BS"):
        return {type_: list(inner)}
    return {type_: inner}


def _copy_item(item: Item | None) -> Item | None:
    return None if item is None else {k: copy_value(v) for k, v in item.items()}


def guard(name: str, stage: Stage) -> Stage:
    """Wrap ``stage`` so any failure is a TransformError naming ``name`` and the record, never its contents."""

    def guarded(record: ChangeRecord) -> ChangeRecord | None:
        try:
            return stage(record)
        except Exception as exc:
            # Only the exception's type: its message may quote item contents (a plugin's KeyError...).
            reason = str(exc) if isinstance(exc, _StageError) else f"raised {type(exc).__name__}"
            raise TransformError(
                f"{name} failed on record {record.sequence_number} of shard {record.shard_id}: {reason}"
            ) from exc

    guarded.__qualname__ = name
    return guarded


def include_stage(allowed: frozenset[str]) -> Stage:
    """Keep only ``allowed`` and the key attributes in both images."""

    def include(record: ChangeRecord) -> ChangeRecord:
        keys = record.keys
        new, old = record.new_image, record.old_image
        return _with(
            record,
            keys,
            None if new is None else {k: v for k, v in new.items() if k in allowed or k in keys},
            None if old is None else {k: v for k, v in old.items() if k in allowed or k in keys},
        )

    return include


def exclude_stage(excluded: frozenset[str]) -> Stage:
    """Drop ``excluded`` from both images; a record whose keys hold one of them fails."""

    def exclude(record: ChangeRecord) -> ChangeRecord:
        keys = record.keys
        if not excluded.isdisjoint(keys):
            names = ", ".join(repr(n) for n in sorted(excluded.intersection(keys)))
            raise _StageError(f"cannot exclude key attribute {names}")
        new, old = record.new_image, record.old_image
        return _with(
            record,
            keys,
            None if new is None else {k: v for k, v in new.items() if k not in excluded},
            None if old is None else {k: v for k, v in old.items() if k not in excluded},
        )

    return exclude


def _renamed(image: Item | None, mapping: dict[str, str]) -> Item | None:
    if image is None:
        return None
    out: Item = {}
    for name, value in image.items():
        new = mapping.get(name, name)
        if new in out:
            # Two attributes landing on one name would silently lose one of them.
            other = name if new != name else next(k for k, v in mapping.items() if v == name)
            raise _StageError(f"renaming {other!r} to {new!r} collides with an existing attribute")
        out[new] = value
    return out


def rename_stage(mapping: dict[str, str]) -> Stage:
    """Rename non-key attributes ``{old: new}`` in both images."""
    sources = frozenset(mapping)
    targets = frozenset(mapping.values())

    def rename(record: ChangeRecord) -> ChangeRecord:
        keys = record.keys
        if not sources.isdisjoint(keys):
            names = ", ".join(repr(n) for n in sorted(sources.intersection(keys)))
            raise _StageError(f"cannot rename key attribute {names} (use map_keys)")
        if not targets.isdisjoint(keys):
            names = ", ".join(repr(n) for n in sorted(targets.intersection(keys)))
            raise _StageError(f"cannot rename onto key attribute {names}")
        return _with(record, keys, _renamed(record.new_image, mapping), _renamed(record.old_image, mapping))

    return rename


def map_keys_stage(mapping: dict[str, str]) -> Stage:
    """Rename key attributes ``{old: new}`` in the keys and both images."""

    def map_keys(record: ChangeRecord) -> ChangeRecord:
        missing = [name for name in mapping if name not in record.keys]
        if missing:
            raise _StageError(f"key attribute {', '.join(repr(n) for n in missing)} is not in the record's keys")
        keys = _renamed(record.keys, mapping)
        assert keys is not None  # noqa: S101 - keys is never None; narrows the type for mypy
        return _with(record, keys, _renamed(record.new_image, mapping), _renamed(record.old_image, mapping))

    return map_keys


def set_stage(attribute: str, make: Callable[[ChangeRecord], AttributeValue]) -> Stage:
    """Set ``attribute`` to ``make(record)`` in both images."""

    def set_(record: ChangeRecord) -> ChangeRecord:
        if attribute in record.keys:
            raise _StageError(f"cannot set key attribute {attribute!r}")
        new, old = record.new_image, record.old_image
        if new is None and old is None:
            return record
        value = make(record)
        return _with(
            record,
            record.keys,
            None if new is None else {**new, attribute: value},
            # Each image gets its own copy: no two dicts in flight share a mutable value.
            None if old is None else {**old, attribute: value if new is None else copy_value(value)},
        )

    set_.__name__ = "set"
    return set_


def _epoch_ms(seconds: float) -> int:
    # Round to microseconds (a float's real precision here) before flooring to milliseconds, so a
    # clock reading of 1.001 gives 1001 ms, not 1000 (1.001 * 1000 is 1000.9999999999999).
    return round(seconds * 1_000_000) // 1000


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def deriver(
    derived: DerivedValue, source_region: str, clock: Callable[[], float]
) -> Callable[[ChangeRecord], AttributeValue]:
    """The function giving a record's ``derived`` value, for :func:`set_stage`."""
    if derived == "replication_time_iso":
        cache = [-1, ""]  # the last whole second and its formatted prefix: most records share one

        def iso(_record: ChangeRecord) -> AttributeValue:
            seconds, millis = divmod(_epoch_ms(clock()), 1000)
            if seconds != cache[0]:
                moment = _EPOCH + dt.timedelta(seconds=seconds)
                cache[:] = [seconds, moment.strftime("%Y-%m-%dT%H:%M:%S")]
            return {"S": f"{cache[1]}.{millis:03d}Z"}

        return iso
    if derived == "replication_time_epoch_ms":
        return lambda _record: {"N": str(_epoch_ms(clock()))}
    if derived == "source_approximate_creation_time_epoch_s":

        def creation(record: ChangeRecord) -> AttributeValue:
            seconds, fraction = divmod(record.approximate_creation_time_us, US_PER_S)
            # The float's repr is the form this attribute has always had (e.g. 1700000000.123).
            return {"N": str(seconds) if fraction == 0 else repr(record.approximate_creation_time_us / US_PER_S)}

        return creation
    if derived == "source_region":
        return lambda _record: {"S": source_region}
    # A string, not N: Kinesis sequence numbers run to 56 digits, past DynamoDB's 38-digit numbers.
    return lambda record: {"S": record.sequence_number}


def drop_deletes(record: ChangeRecord) -> ChangeRecord | None:
    """Drop REMOVE records."""
    return None if record.event_name == "REMOVE" else record


def plugin_stage(func: Callable[[ChangeRecord], object]) -> Stage:
    """Call user code with a copy of each record; it returns a ChangeRecord or None."""

    def plugin(record: ChangeRecord) -> ChangeRecord | None:
        # User code gets its own copies of the keys and images, so an in-place edit cannot reach
        # record.event (which shares them and goes into dead letters as read).
        keys = _copy_item(record.keys)
        assert keys is not None  # noqa: S101 - keys is never None; narrows the type for mypy
        result = func(_with(record, keys, _copy_item(record.new_image), _copy_item(record.old_image)))
        if result is None or isinstance(result, ChangeRecord):
            return result
        raise _StageError(f"plugin returned {type(result).__name__}, expected ChangeRecord or None")

    return plugin


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def apply_transforms(stages: Sequence[Stage], record: ChangeRecord) -> ChangeRecord | None:
    """Run the stages in order; return the transformed record, or None if a stage dropped it.

    Raises TransformError (chained to the cause) if a stage fails.
    """
    current = record
    for index, stage in enumerate(stages):
        try:
            result = stage(current)
        except TransformError:
            raise
        except Exception as exc:
            # Stages from build_transforms wrap their own errors; this covers hand-made ones.
            raise TransformError(
                f"transforms[{index}] failed on record {record.sequence_number} of shard {record.shard_id}: "
                f"raised {type(exc).__name__}"
            ) from exc
        if result is None:
            return None
        current = result
    return current

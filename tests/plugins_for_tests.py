"""Plugin functions that tests/unit/pipeline/test_transform*.py name as ``plugins_for_tests:<name>``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from replicator.core.records import ChangeRecord

NOT_CALLABLE = 42


def tag(record: ChangeRecord) -> ChangeRecord:
    """Add a constant attribute to the new image (a well-behaved plugin)."""
    image = None if record.new_image is None else {**record.new_image, "tagged": {"BOOL": True}}
    return dataclasses.replace(record, new_image=image)


def drop_everything(record: ChangeRecord) -> None:
    """Drop every record."""
    del record


def bad_return(record: ChangeRecord) -> Any:
    """Return something that is not a record."""
    return {"keys": record.keys}


def raise_with_value(record: ChangeRecord) -> ChangeRecord:
    """Raise with an item value in the message, as careless user code does."""
    image = record.new_image or {}
    raise ValueError(f"cannot handle {image.get('email')}")


def mutate_in_place(record: ChangeRecord) -> ChangeRecord:
    """Edit the given dicts in place (what a plugin must not be able to leak into record.event)."""
    if record.new_image is not None:
        record.new_image["email"] = {"S": "overwritten"}
        record.new_image.pop("pk", None)
        nested = record.new_image.get("profile")
        if nested is not None:
            nested["M"]["city"] = {"S": "overwritten"}
    record.keys["pk"] = {"S": "overwritten"}
    return record


class Namespace:
    """Holds a plugin reached by a dotted name after the colon."""

    @staticmethod
    def upper_region(record: ChangeRecord) -> ChangeRecord:
        """Replace the new image's region with its upper-case form."""
        image = dict(record.new_image or {})
        if "region" in image:
            image["region"] = {"S": image["region"]["S"].upper()}
        return dataclasses.replace(record, new_image=image)


POISON_ENABLED = True
"""Toggled by tests: while true, ``poison_pill`` raises for items flagged ``poison``."""


def poison_pill(record: ChangeRecord) -> ChangeRecord:
    """Fail on items flagged ``poison`` (plugin ``plugins_for_tests:poison_pill``); no item values in the message."""
    if POISON_ENABLED and "poison" in (record.new_image or {}):
        raise RuntimeError("poison item")
    return record


def drop_updated_at(record: ChangeRecord) -> ChangeRecord:
    """Remove ``updatedAt`` from the new image (a plugin that disables last-writer-wins)."""
    image = None if record.new_image is None else {k: v for k, v in record.new_image.items() if k != "updatedAt"}
    return dataclasses.replace(record, new_image=image)

"""Replication markers on target items, and telling replicated changes from application changes.

An item the replicator writes carries (names configurable, see ``ReplicationConfig``):

- ``_rep_version``: the change's version (see ``version.py``), which the conditional write compares;
- ``_rep_origin``: the region where the change was made;
- ``_rep_ts``: a copy of the application's timestamp attribute as replicated (only with
  ``timestamp_attribute``), so a later local write, which changes the timestamp but not the copy, is
  recognisable as local;
- ``_rep_deleted`` / ``_rep_expires``: on a tombstone, the item a versioned delete leaves behind, with a
  TTL so DynamoDB garbage-collects it.

Applications must never write these attributes; they may leave them in place (UpdateItem does).
"""

from __future__ import annotations

from typing import Literal

from replicator.core.config import ReplicationConfig
from replicator.core.records import ChangeRecord, Item

Origin = Literal["application", "echo", "tombstone_gc", "ttl_delete"]


def classify(record: ChangeRecord, cfg: ReplicationConfig) -> Origin:
    """Say who made this change: an application, a replicator (an echo), or DynamoDB's TTL.

    A tombstone removed by DynamoDB's TTL is the replicator's garbage collection (``tombstone_gc``).

    A replicator's write always changes the version marker (its condition demands a greater one); an
    application never writes it. So a new image whose version differs from the old image's was written
    by a replicator. An UpdateItem by the application leaves the old markers in place: same version in
    both images, hence an application change, replicated onward.
    """
    old_version = _get_s(record.old_image, cfg.version_attribute)
    if record.event_name == "REMOVE":
        if record.is_ttl_delete:
            tombstone = record.old_image is not None and cfg.tombstone_attribute in record.old_image
            return "tombstone_gc" if tombstone else "ttl_delete"
        # Not DynamoDB's TTL, so the application deleted it, a flagged item too: an UpdateItem upsert on
        # a tombstone keeps the flag until the worker clears it, and the application may delete its
        # write before that (tests/unit/model found the case). Replicas already deleted stay deleted.
        return "application"
    new_version = _get_s(record.new_image, cfg.version_attribute)
    if new_version is not None and new_version != old_version:
        return "echo"
    return "application"


def _get_s(image: Item | None, name: str) -> str | None:
    if not image:
        return None
    value = image.get(name)
    if value is None:
        return None
    s = value.get("S")
    return s if isinstance(s, str) else None


def strip_markers(image: Item | None, markers: frozenset[str]) -> Item | None:
    """Return the image without replication markers (a new dict only when something is removed)."""
    if image is None or markers.isdisjoint(image):
        return image
    return {k: v for k, v in image.items() if k not in markers}

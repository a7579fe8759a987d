"""Comparing a source and a target table's items, as the replicator promises them equal.

Marker attributes are excluded, and a tombstone in the target counts as an absent item (it is how a
versioned delete looks). Reports name differing keys only, never other attribute values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from replicator.core.config import ReplicationConfig
from replicator.core.records import Item, key_identity
from replicator.pipeline.origin import strip_markers

KeyId = tuple[tuple[str, str, str], ...]


@dataclasses.dataclass(slots=True)
class CompareReport:
    """The outcome of a comparison."""

    compared: int = 0
    missing_in_target: list[KeyId] = dataclasses.field(default_factory=list)
    extra_in_target: list[KeyId] = dataclasses.field(default_factory=list)
    different: list[KeyId] = dataclasses.field(default_factory=list)

    @property
    def equal(self) -> bool:
        """True when nothing differs."""
        return not (self.missing_in_target or self.extra_in_target or self.different)

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{self.compared} keys compared: {len(self.missing_in_target)} missing in target, "
            f"{len(self.extra_in_target)} only in target, {len(self.different)} different"
        )


def key_of(item: Item, key_names: Sequence[str]) -> KeyId:
    """The key identity of an item given the table's key attribute names."""
    return key_identity({name: item[name] for name in key_names})


def compare_items(
    source: Iterable[Item],
    target: Iterable[Item],
    replication: ReplicationConfig,
    key_names: Sequence[str] = ("pk",),
) -> CompareReport:
    """Compare two tables' items (given as full scans) and report differing keys."""
    markers = replication.marker_attributes
    src = {key_of(i, key_names): strip_markers(i, markers) for i in source}
    tgt = {key_of(i, key_names): strip_markers(i, markers) for i in target if replication.tombstone_attribute not in i}
    report = CompareReport(compared=len(src.keys() | tgt.keys()))
    for key, item in src.items():
        other = tgt.get(key)
        if other is None:
            report.missing_in_target.append(key)
        elif other != item:
            report.different.append(key)
    report.extra_in_target = [k for k in tgt if k not in src]
    return report


class SyncScanner(Protocol):
    """A synchronous DynamoDB client (boto3's), as far as ``scan_items`` uses one."""

    def scan(self, **kwargs: object) -> Mapping[str, Any]:
        """One Scan page."""
        ...


def scan_items(client: SyncScanner, table: str) -> list[Item]:
    """Every item of a table, with consistent reads (a small table: the demo's and the tests')."""
    items: list[Item] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

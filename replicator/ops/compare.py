"""When a source and a target item are equal, as the replicator promises them: one rule for verify and tests.

Two items are equal when their canonical forms are (``canonical``, ``item_digest``):

- replication markers (and any other ignored attributes) are left out;
- numbers compare by value, as DynamoDB compares them (``1.50`` equals ``1.5``);
- sets compare in any order; lists and maps attribute by attribute.

``compare_items`` compares two small tables given as full scans (the demo's and the tests' convergence
check); a tombstone in the target counts as an absent item (it is how a versioned delete looks).
``ops.verify`` uses the same digest for whole tables. Reports name differing keys only, never other
attribute values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from replicator.core.codec import b64_text
from replicator.core.config import ReplicationConfig
from replicator.core.records import AttributeValue, Item, key_identity

KeyId = tuple[tuple[str, str, str], ...]


def canonical(item: Item, ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Return the attributes but ``ignore`` as a JSON-able tree that is equal exactly for equal items."""
    return {name: _canonical(value) for name, value in sorted(item.items()) if name not in ignore}


def item_digest(item: Item, ignore: frozenset[str]) -> bytes:
    """Return a digest of the attributes but ``ignore``, independent of order and number format."""
    tree = canonical(item, ignore)
    return hashlib.blake2b(json.dumps(tree, sort_keys=True, separators=(",", ":")).encode(), digest_size=16).digest()


def _canonical(value: AttributeValue) -> Any:  # noqa: ANN401, PLR0911 - a JSON-able tree; one return per type
    ((type_, inner),) = value.items()
    if type_ == "N":
        return ["N", _number(inner)]
    if type_ == "NS":
        return ["NS", sorted(_number(n) for n in inner)]
    if type_ == "B":
        return ["B", b64_text(inner)]
    if type_ == "BS":
        return ["BS", sorted(b64_text(b) for b in inner)]
    if type_ == "SS":
        return ["SS", sorted(inner)]
    if type_ == "M":
        return ["M", {k: _canonical(v) for k, v in sorted(inner.items())}]
    if type_ == "L":
        return ["L", [_canonical(v) for v in inner]]
    return [type_, inner]


def _number(text: str) -> str:
    # DynamoDB normalises stored numbers, but a transform may produce "1.50": compare by value.
    return str(Decimal(text).normalize())


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
    src = {key_of(i, key_names): item_digest(i, markers) for i in source}
    tgt = {key_of(i, key_names): item_digest(i, markers) for i in target if replication.tombstone_attribute not in i}
    report = CompareReport(compared=len(src.keys() | tgt.keys()))
    for key, digest in src.items():
        other = tgt.get(key)
        if other is None:
            report.missing_in_target.append(key)
        elif other != digest:
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

"""verify.item_digest: the digests of items with binary values are what they always were."""

from __future__ import annotations

from replicator.ops.verify import item_digest


def test_binary_values_digest_as_before() -> None:
    """B and BS values (nested too) digest to the value computed before the shared codec existed."""
    item = {
        "pk": {"S": "a"},
        "b": {"B": b"\x00\xff"},
        "bs": {"BS": [b"z", b"\x01"]},
        "m": {"M": {"x": {"B": b"deep"}, "l": {"L": [{"B": b"q"}, {"N": "1.50"}]}}},
    }
    assert item_digest(item, frozenset()).hex() == "97a296137c51ffcce27e412eeea639f2"

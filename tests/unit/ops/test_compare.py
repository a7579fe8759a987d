"""Item equality as the replicator promises it: one canonical form for verify and compare_items."""

from __future__ import annotations

from replicator.core.config import ReplicationConfig
from replicator.core.records import Item
from replicator.ops.compare import canonical, compare_items, item_digest, key_of

MARKERS = ReplicationConfig().marker_attributes


def test_equal_items_have_equal_canonical_forms_and_digests() -> None:
    """Numbers by value, sets in any order, attribute order and markers ignored, nested values too."""
    a: Item = {
        "pk": {"S": "k"},
        "n": {"N": "1.50"},
        "big": {"N": "100"},
        "ns": {"NS": ["2", "10.0"]},
        "ss": {"SS": ["b", "a"]},
        "bs": {"BS": [b"\x02", b"\x01"]},
        "m": {"M": {"y": {"N": "0.0"}, "x": {"L": [{"N": "3.0"}, {"S": "s"}]}}},
        "_rep_version": {"S": "00000000000000001#us-east-1#0"},
    }
    b: Item = {
        "m": {"M": {"x": {"L": [{"N": "3"}, {"S": "s"}]}, "y": {"N": "0"}}},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["10", "2"]},
        "big": {"N": "1E+2"},
        "n": {"N": "1.5"},
        "pk": {"S": "k"},
    }
    assert canonical(a, MARKERS) == canonical(b, MARKERS)
    assert item_digest(a, MARKERS) == item_digest(b, MARKERS)
    assert "_rep_version" in canonical(a)


def test_different_values_types_and_list_orders_differ() -> None:
    """A changed number, a string for a number, or a reordered list is a difference."""
    base: Item = {"pk": {"S": "k"}, "n": {"N": "1"}, "l": {"L": [{"S": "a"}, {"S": "b"}]}}
    for other in (
        {**base, "n": {"N": "1.01"}},
        {**base, "n": {"S": "1"}},
        {**base, "l": {"L": [{"S": "b"}, {"S": "a"}]}},
        {**base, "extra": {"NULL": True}},
    ):
        assert item_digest(base, MARKERS) != item_digest(other, MARKERS)


def test_compare_items_uses_the_canonical_form_and_skips_target_tombstones() -> None:
    """Equal-by-value items match; missing, extra and different keys are reported; tombstones are absent."""
    source: list[Item] = [
        {"pk": {"S": "same"}, "n": {"N": "1.50"}, "ss": {"SS": ["x", "y"]}},
        {"pk": {"S": "missing"}},
        {"pk": {"S": "changed"}, "v": {"N": "1"}},
        {"pk": {"S": "deleted"}},
    ]
    target: list[Item] = [
        {"pk": {"S": "same"}, "n": {"N": "1.5"}, "ss": {"SS": ["y", "x"]}, "_rep_origin": {"S": "us-east-1"}},
        {"pk": {"S": "changed"}, "v": {"N": "2"}},
        {"pk": {"S": "extra"}},
        {"pk": {"S": "deleted"}, "_rep_deleted": {"BOOL": True}},
    ]
    report = compare_items(source, target, ReplicationConfig())
    key = lambda pk: key_of({"pk": {"S": pk}}, ("pk",))  # noqa: E731 - a local shorthand
    assert report.compared == 5
    assert report.missing_in_target == [key("missing"), key("deleted")]
    assert report.different == [key("changed")]
    assert report.extra_in_target == [key("extra")]
    assert not report.equal
    assert compare_items(source[:1], target[:1], ReplicationConfig()).equal

"""core.codec: B/BS values between bytes and base64 text, at any depth, for items and stream records."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.codec import (
    b64_text,
    decode_event,
    decode_item,
    decode_value,
    encode_event,
    encode_item,
    encode_value,
    json_default,
)

_names = st.text(min_size=1, max_size=5)
_scalars = st.one_of(
    st.builds(lambda b: {"B": b}, st.binary(max_size=8)),
    st.builds(lambda bs: {"BS": bs}, st.lists(st.binary(max_size=8), min_size=1, max_size=3, unique=True)),
    st.builds(lambda s: {"S": s}, st.text(max_size=5)),
    st.builds(lambda n: {"N": str(n)}, st.integers()),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda ss: {"SS": ss}, st.lists(st.text(max_size=3), min_size=1, max_size=3, unique=True)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda m: {"M": m}, st.dictionaries(_names, inner, max_size=3)),
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=3)),
    ),
    max_leaves=12,
)
_items = st.dictionaries(_names, _values, max_size=4)


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes | bytearray):
        return True
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bytes(v) for v in value)
    return False


@given(_items)
def test_items_round_trip_through_json(item: dict[str, Any]) -> None:
    """Any item, B/BS nested in M and L included, survives encode -> JSON -> decode unchanged."""
    encoded = encode_item(item)
    assert not _has_bytes(encoded)
    assert decode_item(json.loads(json.dumps(encoded))) == item


@given(_items)
def test_json_default_writes_what_encode_writes(item: dict[str, Any]) -> None:
    """Serialising bytes with json_default gives the same JSON as encoding the item first."""
    assert json.dumps(item, default=json_default, sort_keys=True) == json.dumps(encode_item(item), sort_keys=True)


def test_binary_values_are_decoded_at_any_depth() -> None:
    """B and BS values, also inside maps and lists, come out as bytes; other types are left alone."""
    enc = base64.b64encode(b"\x00\xff").decode()
    item = {
        "b": {"B": enc},
        "bs": {"BS": [enc]},
        "m": {"M": {"inner": {"B": enc}}},
        "l": {"L": [{"B": enc}, {"S": "s"}]},
        "n": {"N": "1.50"},
    }
    decoded = decode_item(item)
    assert decoded["b"] == {"B": b"\x00\xff"}
    assert decoded["bs"] == {"BS": [b"\x00\xff"]}
    assert decoded["m"]["M"]["inner"] == {"B": b"\x00\xff"}
    assert decoded["l"]["L"] == [{"B": b"\x00\xff"}, {"S": "s"}]
    assert decoded["n"] is item["n"]
    assert item["b"] == {"B": enc}  # the input is not modified


def test_decode_event_turns_base64_text_into_bytes_at_any_depth() -> None:
    """B and BS values (top level, in maps and lists, in keys and images) become bytes; others stay."""
    b64 = base64.b64encode
    raw: dict[str, Any] = {
        "eventName": "INSERT",
        "dynamodb": {
            "ApproximateCreationDateTime": 1700000000.0,
            "Keys": {"pk": {"S": "a"}, "sk": {"B": b64(b"key").decode()}},
            "NewImage": {
                "pk": {"S": "a"},
                "n": {"N": "0"},
                "blob": {"B": b64(b"\x00\xff").decode()},
                "blobs": {"BS": [b64(b"1").decode(), b64(b"2").decode()]},
                "nested": {"M": {"inner": {"L": [{"B": b64(b"deep").decode()}, {"S": "text"}]}}},
            },
            "SequenceNumber": "1",
        },
    }
    original = json.dumps(raw)
    decoded = decode_event(raw)
    image = decoded["dynamodb"]["NewImage"]
    assert image["blob"] == {"B": b"\x00\xff"}
    assert image["blobs"] == {"BS": [b"1", b"2"]}
    assert image["nested"]["M"]["inner"]["L"] == [{"B": b"deep"}, {"S": "text"}]
    assert image["n"] == raw["dynamodb"]["NewImage"]["n"]
    assert decoded["dynamodb"]["Keys"]["sk"] == {"B": b"key"}
    assert json.dumps(raw) == original
    assert encode_event(decoded) == raw
    assert list(encode_event(decoded)["dynamodb"]) == list(raw["dynamodb"])


def test_an_event_without_a_dynamodb_part_is_returned_as_is() -> None:
    """Malformed records pass through untouched: refusing them is the record builder's job."""
    event = {"eventName": "INSERT", "dynamodb": None}
    assert decode_event(event) is event
    assert encode_event({"eventName": "INSERT"}) == {"eventName": "INSERT"}


def test_text_that_is_not_base64_is_refused() -> None:
    """Decoding is strict: a corrupt B value raises (a ValueError) instead of being guessed at."""
    with pytest.raises(binascii.Error):
        decode_value({"B": "not base64!"})
    with pytest.raises(ValueError, match="after padding"):
        decode_value({"BS": ["AA==\n"]})  # lenient decoding would drop the newline


def test_values_that_are_not_attribute_values_pass_through() -> None:
    """Non-dicts, multi-key dicts and already-converted values are returned unchanged."""
    assert decode_value("x") == "x"
    two = {"B": "AA==", "S": "x"}
    assert decode_value(two) is two
    assert decode_value({"B": b"\x00"}) == {"B": b"\x00"}
    assert encode_value({"B": "AA=="}) == {"B": "AA=="}
    assert encode_value({"BS": ["AA==", b"\x00"]}) == {"BS": ["AA==", "AA=="]}


def test_b64_text_and_json_default() -> None:
    """Bytes become base64 text, text is kept; json_default refuses what is not bytes."""
    assert b64_text(b"\x00\xff") == "AP8="
    assert b64_text(bytearray(b"\x00\xff")) == "AP8="
    assert b64_text("AP8=") == "AP8="
    assert json_default(b"\x00\xff") == "AP8="
    with pytest.raises(TypeError, match="cannot serialise set"):
        json_default({1})

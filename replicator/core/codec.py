"""Binary attribute values between their two forms: bytes in memory, base64 text on JSON wires.

botocore hands B and BS values over as bytes, and the writer sends them so; every JSON carrier of a
change (Lambda events, Kinesis payloads, DynamoDB's own JSON protocol, dead letters, backfill progress)
holds them as base64 text. ``encode_value``/``decode_value`` convert one AttributeValue between the
two forms, at any depth inside M and L; everything else is returned as is (the same object: no copy
when there is nothing to convert).

Decoding is strict (``binascii.Error``, a ValueError, on text that is not base64): every producer of
these documents writes canonical base64, so anything else is a corrupt record, not one to guess at.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

_IMAGES = ("Keys", "NewImage", "OldImage")


def b64_text(value: bytes | bytearray | str) -> str:
    """Return bytes as base64 text; text (already base64) as it is."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


def _b64_bytes(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def encode_value(value: Any) -> Any:  # noqa: ANN401 - an AttributeValue, or anything passed through
    """Return the AttributeValue with B/BS bytes (at any depth) as base64 text."""
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((type_, inner),) = value.items()
    if type_ == "B" and isinstance(inner, bytes | bytearray):
        return {"B": b64_text(inner)}
    if type_ == "BS" and isinstance(inner, list):
        return {"BS": [b64_text(b) if isinstance(b, bytes | bytearray) else b for b in inner]}
    if type_ == "M" and isinstance(inner, dict):
        return {"M": encode_item(inner)}
    if type_ == "L" and isinstance(inner, list):
        return {"L": [encode_value(v) for v in inner]}
    return value


def decode_value(value: Any) -> Any:  # noqa: ANN401 - an AttributeValue, or anything passed through
    """Return the AttributeValue with B/BS base64 text (at any depth) as bytes; undoes ``encode_value``."""
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((type_, inner),) = value.items()
    if type_ == "B" and isinstance(inner, str):
        return {"B": _b64_bytes(inner)}
    if type_ == "BS" and isinstance(inner, list):
        return {"BS": [_b64_bytes(b) if isinstance(b, str) else b for b in inner]}
    if type_ == "M" and isinstance(inner, dict):
        return {"M": decode_item(inner)}
    if type_ == "L" and isinstance(inner, list):
        return {"L": [decode_value(v) for v in inner]}
    return value


def encode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of an item (name -> AttributeValue) with its binary values as base64 text."""
    return {name: encode_value(value) for name, value in item.items()}


def decode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of an item (name -> AttributeValue) with its binary values as bytes."""
    return {name: decode_value(value) for name, value in item.items()}


def _map_images(event: dict[str, Any], convert: Callable[[Mapping[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    ddb = event.get("dynamodb")
    if not isinstance(ddb, dict):
        return event
    out = dict(ddb)
    for name in _IMAGES:
        image = ddb.get(name)
        if isinstance(image, dict):
            out[name] = convert(image)
    return {**event, "dynamodb": out}


def encode_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a stream record (Lambda or GetRecords shape) with Keys and images encoded."""
    return _map_images(event, encode_item)


def decode_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a stream record (Lambda or GetRecords shape) with Keys and images decoded."""
    return _map_images(event, decode_item)


def json_default(value: object) -> str:
    """``json.dumps(default=...)`` for AttributeValues holding bytes: base64 text, as on the wire."""
    if isinstance(value, bytes | bytearray):
        return b64_text(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")

"""The evaluator on the ConditionBuilder's expressions, and the conditions added for issue 14."""

from __future__ import annotations

from typing import Any

import pytest
from unit.model.evaluator import ConditionSyntaxError, holds

from replicator.core.config import ReplicationConfig
from replicator.core.records import from_lambda_event
from replicator.pipeline import version as versions
from replicator.sink.writer import ConditionalWriter, Write

CFG = ReplicationConfig(timestamp_attribute="updatedAt")
V1 = versions.encode(1_000, "us-east-1", "1")
V2 = versions.encode(2_000, "us-east-1", "2")


def _writer(*, source: bool) -> ConditionalWriter:
    return ConditionalWriter(
        client=None,  # type: ignore[arg-type] - requests are built, never sent
        table="t",
        cfg=CFG,
        origin_region="us-east-1",
        target_region="us-east-1" if source else "us-west-2",
        clock=lambda: 0.0,
        replace_local_writes=not source,
    )


def _holds(params: dict[str, Any], item: dict[str, Any] | None) -> bool:
    return holds(
        params["ConditionExpression"], params["ExpressionAttributeNames"], params["ExpressionAttributeValues"], item
    )


def test_evaluator_semantics_match_dynamodb() -> None:
    """Missing attributes make comparisons false; numbers compare by value; NOT and parentheses nest."""
    names, values = {"#a": "a"}, {":one": {"N": "1.0"}, ":s": {"S": "x"}}
    assert holds("#a = :one", names, values, {"a": {"N": "1"}})
    assert not holds("#a < :one", names, values, {})
    assert not holds("#a = :s", names, values, {"a": {"N": "1"}})
    assert holds("NOT (#a = :s) AND attribute_not_exists(#a)", names, values, None)
    with pytest.raises(ConditionSyntaxError):
        holds("begins_with(#a, :s)", names, values, None)


def test_source_tombstone_spares_a_local_update_at_or_after_the_delete() -> None:
    """With timestamps, a source tombstone replaces an older replicated or local write, never a later update."""
    event = {"eventName": "REMOVE", "dynamodb": {"Keys": {"pk": {"S": "k"}}, "SequenceNumber": "2"}}
    record = from_lambda_event(event, shard_id="s")
    write = Write(keys={"pk": {"S": "k"}}, item=None, version=V2, app_timestamp_us=2_000, record=record)
    params = _writer(source=True).request(write).params
    ts = {"N": "2"}
    updated_later = {"pk": {"S": "k"}, "updatedAt": ts, "_rep_ts": {"N": "1"}, "_rep_version": {"S": V1}}
    replicated_older = {"pk": {"S": "k"}, "updatedAt": {"N": "1"}, "_rep_ts": {"N": "1"}, "_rep_version": {"S": V1}}
    assert not _holds(params, updated_later)
    assert _holds(params, replicated_older)
    assert _holds(params, None)


def test_revive_clears_the_flags_only_while_the_item_is_the_upsert() -> None:
    """The revive write drops the tombstone flags, takes the change's version, and needs the same timestamp."""
    upsert = {
        "pk": {"S": "k"},
        "a": {"N": "1"},
        "updatedAt": {"N": "5"},
        "_rep_deleted": {"BOOL": True},
        "_rep_expires": {"N": "9"},
        "_rep_version": {"S": V1},
    }
    request = _writer(source=True).revive_request(upsert, V2)
    assert request is not None
    assert request.params["Item"] == {
        "pk": {"S": "k"},
        "a": {"N": "1"},
        "updatedAt": {"N": "5"},
        "_rep_version": {"S": V2},
    }
    assert _holds(request.params, upsert)
    assert not _holds(request.params, {**upsert, "updatedAt": {"N": "6"}})
    assert not _holds(request.params, request.params["Item"])
    # A tombstone replicated over the upsert since, at the same timestamp, won the tie: it stays.
    assert not _holds(request.params, {**upsert, "_rep_version": {"S": versions.encode(5_000, "us-west-2", "3")}})
    assert _writer(source=True).revive_request({"pk": {"S": "k"}, "updatedAt": {"N": "5"}}, V2) is None

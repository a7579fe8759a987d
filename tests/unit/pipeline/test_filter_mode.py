"""filter_mode: Lambda's (NewImage only) or subset (a change whose OldImage matched passes too, as a delete)."""

from __future__ import annotations

from typing import Any

from replicator.core.config import Config
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.pipeline.stages import Pipeline
from replicator.sink.writer import Write

PAID = {"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}


def _pipeline(mode: str, filters: list[dict[str, Any]] | None = None) -> Pipeline:
    cfg = Config(
        source={"region": "us-east-1", "table": "src"},
        target={"region": "eu-west-1", "table": "dst"},
        filters=[PAID] if filters is None else filters,
        filter_mode=mode,
    )
    return Pipeline.from_config(cfg)


def _record(event_name: str, new: str | None, old: str | None) -> ChangeRecord:
    ddb: dict[str, Any] = {
        "Keys": {"pk": {"S": "k"}},
        "SequenceNumber": "4421584500000000017450439091",
        "ApproximateCreationDateTime": 1_699_999_990.0,
    }
    if new is not None:
        ddb["NewImage"] = {"pk": {"S": "k"}, "status": {"S": new}}
    if old is not None:
        ddb["OldImage"] = {"pk": {"S": "k"}, "status": {"S": old}}
    event = {"eventID": "e1", "eventName": event_name, "dynamodb": ddb, "awsRegion": "us-east-1"}
    return from_lambda_event(event, shard_id="shardId-1")


def test_lambda_mode_drops_deletes_and_leaving_modifies() -> None:
    """Lambda-compatible: only the NewImage decides."""
    pipeline = _pipeline("lambda")
    assert pipeline.run(_record("REMOVE", None, "paid")) == "filtered"
    assert pipeline.run(_record("MODIFY", "cancelled", "paid")) == "filtered"
    assert isinstance(pipeline.run(_record("MODIFY", "paid", "new")), Write)


def test_subset_mode_passes_deletes_of_matching_items() -> None:
    """A REMOVE whose OldImage matched reaches the target as a delete."""
    out = _pipeline("subset").run(_record("REMOVE", None, "paid"))
    assert isinstance(out, Write)
    assert out.item is None


def test_subset_mode_turns_a_modify_leaving_the_subset_into_a_delete() -> None:
    """A MODIFY from paid to cancelled removes the item from the replica, versioned by this change."""
    record = _record("MODIFY", "cancelled", "paid")
    out = _pipeline("subset").run(record)
    assert isinstance(out, Write)
    assert out.item is None
    assert out.record.event_name == "REMOVE"
    same_change = _pipeline("lambda", filters=[]).run(record)
    assert isinstance(same_change, Write)
    assert out.version == same_change.version


def test_subset_mode_still_filters_what_never_matched() -> None:
    """Changes outside the subset before and after stay filtered; entering and staying pass unchanged."""
    pipeline = _pipeline("subset")
    assert pipeline.run(_record("REMOVE", None, "new")) == "filtered"
    assert pipeline.run(_record("MODIFY", "cancelled", "new")) == "filtered"
    stay = pipeline.run(_record("MODIFY", "paid", "paid"))
    assert isinstance(stay, Write)
    assert stay.item is not None


def test_start_up_warns_about_new_image_filters_in_lambda_mode() -> None:
    """The warning names the filter and the setting; subset mode, or no NewImage pattern, has none."""
    (warning,) = _pipeline("lambda").filters.warnings
    assert warning.startswith("filters[0]")
    assert "a delete of a replicated item" in warning
    assert "filter_mode: subset" in warning
    assert _pipeline("subset").filters.warnings == []
    assert _pipeline("lambda", filters=[{"eventName": ["INSERT", "MODIFY"]}]).filters.warnings == []

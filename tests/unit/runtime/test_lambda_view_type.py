"""The Lambda handler refuses a batch whose stream view type cannot serve the configuration, as the service does."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.core.config import Config
from replicator.core.errors import StreamConfigError
from replicator.runtime.lambda_function.handler import check_view_types


def _config(**replication: object) -> Config:
    return Config.model_validate(
        {
            "source": {"region": "us-east-1", "table": "src"},
            "target": {"region": "us-west-2", "table": "dst"},
            "replication": replication,
        }
    )


def _records(view_type: str | None) -> list[dict[str, Any]]:
    dynamodb: dict[str, Any] = {"Keys": {"pk": {"S": "a"}}, "SequenceNumber": "1"}
    if view_type is not None:
        dynamodb["StreamViewType"] = view_type
    return [{"eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": dynamodb}]


@pytest.mark.parametrize("view_type", ["KEYS_ONLY", "OLD_IMAGE"])
def test_streams_without_the_new_image_are_refused(view_type: str) -> None:
    """KEYS_ONLY and OLD_IMAGE records raise, naming the view type and what the stream needs."""
    with pytest.raises(StreamConfigError, match=f"{view_type}.*NEW_AND_OLD_IMAGES"):
        check_view_types(_records(view_type), _config())


def test_new_image_is_refused_only_when_echoes_must_be_told_apart() -> None:
    """NEW_IMAGE fails with skip_echoes (active-active) and names the key; one-way replication accepts it."""
    with pytest.raises(StreamConfigError, match=r"replication\.skip_echoes"):
        check_view_types(_records("NEW_IMAGE"), _config(skip_echoes=True))
    check_view_types(_records("NEW_IMAGE"), _config(skip_echoes=False))


@pytest.mark.parametrize("view_type", ["NEW_AND_OLD_IMAGES", None])
def test_full_images_and_records_without_a_view_type_pass(view_type: str | None) -> None:
    """NEW_AND_OLD_IMAGES passes; a record that does not say its view type (a test event) is not refused."""
    check_view_types(_records(view_type), _config())

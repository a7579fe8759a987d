"""stream_watch.check: the stream read is still the table's, was disabled, or was replaced by a new one."""

from __future__ import annotations

import pytest

from replicator.core.config import Config
from replicator.core.errors import StreamConfigError
from replicator.runtime import stream_watch
from replicator.source.api import StreamInfo

OLD, NEW = "arn:old", "arn:new"


class _Api:
    """resolve() as StreamsSource answers it: by ARN the stream's status, by table its latest enabled stream."""

    def __init__(self, old_status: str, latest: str | None) -> None:
        self.old_status = old_status
        self.latest = latest

    async def resolve(self, *, table: str | None, stream_arn: str | None) -> StreamInfo:
        if stream_arn is not None:
            return StreamInfo(stream_arn, "NEW_AND_OLD_IMAGES", self.old_status if stream_arn == OLD else "ENABLED")
        assert table == "Orders"
        if self.latest is None:
            raise StreamConfigError("source table Orders has no enabled stream")
        return StreamInfo(self.latest, "NEW_AND_OLD_IMAGES", "ENABLED")


def _config(**source: object) -> Config:
    return Config.model_validate(
        {
            "source": {"region": "us-east-1", "table": "Orders", **source},
            "target": {"region": "eu-west-1", "table": "Replica"},
        }
    )


@pytest.mark.parametrize(
    ("status", "latest", "kind"),
    [
        ("ENABLED", OLD, None),
        ("DISABLED", None, "disabled"),
        ("DISABLING", None, "disabled"),
        ("DISABLED", NEW, "replaced"),
    ],
)
async def test_the_stream_is_current_disabled_or_replaced(status: str, latest: str | None, kind: str | None) -> None:
    """The stream's status and the table's LatestStreamArn decide; a replacement names the new stream."""
    change = await stream_watch.check(_Api(status, latest), _config(), OLD)  # type: ignore[arg-type]
    assert (change.kind if change else None) == kind
    if kind == "replaced":
        assert change is not None
        assert change.latest is not None
        assert change.latest.arn == NEW


async def test_a_pinned_stream_arn_is_only_checked_for_its_status() -> None:
    """With source.stream_arn there is no latest stream to follow: a disabled one is reported as disabled."""
    change = await stream_watch.check(_Api("DISABLED", NEW), _config(stream_arn=OLD), OLD)  # type: ignore[arg-type]
    assert change is not None
    assert change.kind == "disabled"

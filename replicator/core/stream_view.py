"""Which stream view types can keep the configuration's promise: one rule for the service and Lambda.

The service checks the stream it resolves (DescribeStream's ``StreamViewType``) before reading; the
Lambda handler checks each event record's ``dynamodb.StreamViewType`` before processing any of them.
Either way a stream that cannot serve the configuration is refused as a whole, never record by record
(on a KEYS_ONLY stream every INSERT would otherwise be dead-lettered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.core.errors import StreamConfigError

if TYPE_CHECKING:
    from replicator.core.config import Config


def check_view_type(view_type: str, cfg: Config) -> None:
    """Refuse streams that cannot serve the configured replication, saying what to set."""
    if view_type == "KEYS_ONLY":
        raise StreamConfigError("the source stream is KEYS_ONLY: replication needs NEW_AND_OLD_IMAGES")
    if view_type == "OLD_IMAGE":
        raise StreamConfigError("the source stream is OLD_IMAGE: replication needs NEW_AND_OLD_IMAGES")
    if view_type == "NEW_IMAGE" and cfg.replication.skip_echoes:
        raise StreamConfigError(
            "the source stream is NEW_IMAGE: telling replicated changes from application changes "
            "(replication.skip_echoes, needed for active-active) requires NEW_AND_OLD_IMAGES; "
            "for one-way replication only, set replication.skip_echoes: false"
        )

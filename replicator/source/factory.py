"""Open the change source the configuration names (``source.kind``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.source.kinesis import KinesisSource
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    import contextlib

    from replicator.aws.clients import Clients
    from replicator.core.config import Config
    from replicator.observe.metrics import Metrics
    from replicator.source.api import ChangeSource


async def open_source(
    stack: contextlib.AsyncExitStack,
    cfg: Config,
    clients: Clients,
    *,
    metrics: Metrics | None = None,
) -> ChangeSource:
    """Return the change source ``source.kind`` names; a Kinesis client is opened in ``stack``."""
    if cfg.source.kind != "kinesis":
        return StreamsSource(clients.streams, clients.source)
    from aiobotocore.session import get_session  # noqa: PLC0415 - only for Kinesis sources

    from replicator.aws.clients import client_config  # noqa: PLC0415 - same

    kinesis = await stack.enter_async_context(
        get_session().create_client(
            "kinesis",
            region_name=cfg.source.region,
            endpoint_url=cfg.source.endpoint_url,
            config=client_config(),
        )
    )
    return KinesisSource(
        kinesis, clients.source, stream_name=cfg.source.kinesis_stream_name, table=cfg.source.table, metrics=metrics
    )

"""AWS clients: created once per service (or Lambda execution environment), closed by its exit stack.

botocore's own retries are off: every call goes through ``retry.py``, so retries and throttles are
counted in one place and an outage is retried without limit instead of failing after three tries.

With ``target.lean_writes`` and ``reader.lean_get_records`` the hot-path calls go through ``lean.py``
instead, where the client allows it; the lean transport opened here travels with its client
(``TargetClient``, ``LeanStreams``) to whatever sends the calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from replicator.aws.lean import LeanDynamoDB, LeanStreams, lean_capable
from replicator.core.config import Config
from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient


POOL_CONNECTIONS = 10
"""Connections in botocore's pool per client, unless ``client_config`` is given another number."""


def client_config(max_pool_connections: int = POOL_CONNECTIONS) -> AioConfig:
    """Timeouts short enough to notice a hung endpoint, retries left to ``retry.py``.

    Parameter validation is off: every request is built by this code from records DynamoDB itself
    produced, and the service validates anyway (a bad one still comes back as ValidationException);
    it cost ~10% of the CPU per write.
    """
    return AioConfig(
        connect_timeout=3,
        read_timeout=10,
        retries={"total_max_attempts": 1},
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
        parameter_validation=False,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class TargetClient:
    """The target table's client and the lean write path shadowing it (``target.lean_writes``), if any."""

    client: DynamoDBClient
    lean: LeanDynamoDB | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Clients:
    """The clients a worker (or an operations command) uses, opened by ``open_clients``."""

    source: DynamoDBClient
    streams: DynamoDBStreamsClient | LeanStreams
    target: TargetClient
    checkpoint: DynamoDBClient | None = None
    """The checkpoint table's client: only with ``checkpoint.backend: dynamodb``."""

    def checkpoint_table(self) -> DynamoDBClient:
        """The checkpoint table's client; ConfigError when ``checkpoint.backend`` is not dynamodb."""
        if self.checkpoint is None:
            raise ConfigError("no checkpoint table client: checkpoint.backend is not dynamodb")
        return self.checkpoint


def _open_lean_writes(
    stack: contextlib.AsyncExitStack, client: DynamoDBClient, max_connections: int
) -> LeanDynamoDB | None:
    if not lean_capable(client):
        return None
    lean = LeanDynamoDB(client, max_connections=max_connections)
    stack.push_async_callback(lean.close)
    return lean


def _open_lean_streams(
    stack: contextlib.AsyncExitStack, client: DynamoDBStreamsClient, max_connections: int
) -> DynamoDBStreamsClient | LeanStreams:
    if not lean_capable(client):
        return client
    lean = LeanDynamoDB(client, max_connections=max_connections, target_prefix="DynamoDBStreams_20120810")
    stack.push_async_callback(lean.close)
    return LeanStreams(client, lean)


async def _assumed_role_session(stack: contextlib.AsyncExitStack, role_arn: str, region: str) -> AioSession:
    """A session whose credentials come from assuming ``role_arn`` (cross-account target), refreshed."""
    from aiobotocore.credentials import AioRefreshableCredentials  # noqa: PLC0415 - only for cross-account

    sts = await stack.enter_async_context(
        get_session().create_client("sts", region_name=region, config=client_config())
    )

    async def refresh() -> dict[str, str]:
        creds = (await sts.assume_role(RoleArn=role_arn, RoleSessionName="replicator"))["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    session = get_session()
    # No public setter for refreshable credentials (so the stubs do not declare the attribute either).
    session._credentials = AioRefreshableCredentials.create_from_metadata(  # type: ignore[attr-defined]  # noqa: SLF001
        metadata=await refresh(), refresh_using=refresh, method="sts-assume-role"
    )
    return session


async def open_clients(stack: contextlib.AsyncExitStack, cfg: Config) -> Clients:
    """Create the source, streams, target and checkpoint clients inside ``stack``."""
    session = get_session()
    conf = client_config()
    src = cfg.source
    source = await stack.enter_async_context(
        session.create_client("dynamodb", region_name=src.region, endpoint_url=src.endpoint_url, config=conf)
    )
    streams_client = await stack.enter_async_context(
        session.create_client("dynamodbstreams", region_name=src.region, endpoint_url=src.endpoint_url, config=conf)
    )
    streams: DynamoDBStreamsClient | LeanStreams = streams_client
    if cfg.reader.lean_get_records:
        # As many connections as botocore's pool (``conf``): every shard polls about 4 times a second.
        streams = _open_lean_streams(stack, streams_client, POOL_CONNECTIONS)
    tgt = cfg.target
    target = await open_target_client(stack, cfg, session=session)
    cp = cfg.checkpoint
    checkpoint = None
    if cp.backend == "dynamodb":
        checkpoint = await stack.enter_async_context(
            session.create_client(
                "dynamodb",
                region_name=cp.region or tgt.region,
                endpoint_url=cp.endpoint_url if cp.region or cp.endpoint_url else tgt.endpoint_url,
                config=conf,
            )
        )
    return Clients(source=source, streams=streams, target=target, checkpoint=checkpoint)


async def open_target_client(
    stack: contextlib.AsyncExitStack, cfg: Config, *, session: AioSession | None = None
) -> TargetClient:
    """Create only the target table's client (assuming ``target.role_arn`` when set) inside ``stack``.

    The Lambda handler needs nothing else: its event source mapping reads the stream and keeps the positions.
    """
    tgt = cfg.target
    target_session = session or get_session()
    if tgt.role_arn:
        target_session = await _assumed_role_session(stack, tgt.role_arn, tgt.region)
    client = await stack.enter_async_context(
        target_session.create_client(
            "dynamodb",
            region_name=tgt.region,
            endpoint_url=tgt.endpoint_url,
            config=client_config(max_pool_connections=tgt.max_concurrent_writes),
        )
    )
    lean = None
    if tgt.lean_writes:
        lean = _open_lean_writes(stack, client, tgt.max_concurrent_writes)
    return TargetClient(client, lean)

"""AWS clients: created once per service (or Lambda execution environment), closed by its exit stack.

botocore's own retries are off: every call goes through ``retry.py``, so retries and throttles are
counted in one place and an outage is retried without limit instead of failing after three tries.

With ``target.lean_writes``, ``reader.lean_get_records`` and ``checkpoint.lean_requests`` the hot-path calls go
through ``lean.py`` instead, where the client allows it; the lean transport opened here travels with its
client (``TargetClient``, ``LeanStreams``, ``LeanTable``) to whatever sends the calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.credentials import CredentialProvider

from replicator import __version__
from replicator.aws.lean import LeanDynamoDB, LeanStreams, SessionCredentials, lean_blocker
from replicator.aws.lean_table import LeanTable
from replicator.core.config import Config
from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiobotocore.credentials import AioRefreshableCredentials
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient
    from types_aiobotocore_sts.type_defs import AssumeRoleRequestTypeDef


log = structlog.get_logger(__name__)

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
        # Requests name replicator and its version in the User-Agent, as the lean path's do.
        user_agent_extra=f"lib/replicator#{__version__}",
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
    """The first target's client (``cfg.target``)."""
    checkpoint: DynamoDBClient | None = None
    """The checkpoint table's client: only with ``checkpoint.backend: dynamodb``."""
    targets: Mapping[str, TargetClient] = dataclasses.field(default_factory=dict)
    """Every target's client by target id (fan-out); empty when ``target`` is the only one."""

    def target_clients(self, cfg: Config) -> dict[str, TargetClient]:
        """Every target's client by ``TargetConfig.target_id``."""
        return dict(self.targets) if self.targets else {cfg.target.target_id: self.target}

    def checkpoint_table(self) -> DynamoDBClient:
        """The checkpoint table's client; ConfigError when ``checkpoint.backend`` is not dynamodb."""
        if self.checkpoint is None:
            raise ConfigError("no checkpoint table client: checkpoint.backend is not dynamodb")
        return self.checkpoint


def _path_chosen(name: str, operations: str, *, enabled: bool, blocker: str | None) -> bool:
    """Log (once, at start-up) which path ``name``'s hot-path calls take and why; True for the lean one."""
    if not enabled:
        log.info("aws_client_path", client=name, operations=operations, path="botocore", reason="disabled in config")
        return False
    if blocker is not None:
        log.info("aws_client_path", client=name, operations=operations, path="botocore", reason=blocker)
        return False
    log.info("aws_client_path", client=name, operations=operations, path="lean", reason="enabled in config")
    return True


async def _open_lean_writes(
    stack: contextlib.AsyncExitStack,
    client: DynamoDBClient,
    credentials: SessionCredentials | None,
    *,
    enabled: bool,
    max_connections: int,
) -> LeanDynamoDB | None:
    if not _path_chosen("target", "PutItem,DeleteItem", enabled=enabled, blocker=lean_blocker(client, credentials)):
        return None
    lean = LeanDynamoDB(client, credentials=credentials, max_connections=max_connections)
    stack.push_async_callback(lean.close)
    return lean


def _open_lean_streams(
    stack: contextlib.AsyncExitStack,
    client: DynamoDBStreamsClient,
    credentials: SessionCredentials | None,
    *,
    enabled: bool,
    max_connections: int,
) -> DynamoDBStreamsClient | LeanStreams:
    if not _path_chosen("streams", "GetRecords", enabled=enabled, blocker=lean_blocker(client, credentials)):
        return client
    lean = LeanDynamoDB(
        client, credentials=credentials, max_connections=max_connections, target_prefix="DynamoDBStreams_20120810"
    )
    stack.push_async_callback(lean.close)
    return LeanStreams(client, lean)


class _AssumeRoleProvider(CredentialProvider):
    """Credentials from assuming the target account's role, refreshed before they expire.

    Put first in the session's provider chain through the public ``credential_provider`` component.
    """

    METHOD = "replicator-assume-role"
    CANONICAL_NAME = "replicator-assume-role"

    def __init__(self, load: Callable[[], Awaitable[AioRefreshableCredentials]]) -> None:
        super().__init__()
        self._load = load

    async def load(self) -> AioRefreshableCredentials:
        """The role's credentials (awaited by aiobotocore's resolver)."""
        return await self._load()


async def _assumed_role_session(
    stack: contextlib.AsyncExitStack, role_arn: str, region: str, external_id: str | None = None
) -> AioSession:
    """A session whose credentials come from assuming ``role_arn`` (cross-account target), refreshed."""
    from aiobotocore.credentials import AioRefreshableCredentials  # noqa: PLC0415 - only for cross-account

    sts = await stack.enter_async_context(
        get_session().create_client("sts", region_name=region, config=client_config())
    )

    async def refresh() -> dict[str, str]:
        request: AssumeRoleRequestTypeDef = {"RoleArn": role_arn, "RoleSessionName": "replicator"}
        if external_id is not None:
            request["ExternalId"] = external_id
        creds = (await sts.assume_role(**request))["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    async def load() -> AioRefreshableCredentials:
        return AioRefreshableCredentials.create_from_metadata(
            metadata=await refresh(), refresh_using=refresh, method="sts-assume-role"
        )

    session = get_session()
    session.get_component("credential_provider").insert_before("env", _AssumeRoleProvider(load))
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
    # As many connections as botocore's pool (``conf``): every shard polls about 4 times a second.
    streams = _open_lean_streams(
        stack,
        streams_client,
        await session.get_credentials(),
        enabled=cfg.reader.lean_get_records,
        max_connections=POOL_CONNECTIONS,
    )
    tgt = cfg.target
    targets = {t.target_id: await open_target_client(stack, cfg.for_target(t), session=session) for t in cfg.targets}
    target = targets[tgt.target_id]
    checkpoint = (
        await open_checkpoint_client(stack, cfg, session=session) if cfg.checkpoint.backend == "dynamodb" else None
    )
    return Clients(source=source, streams=streams, target=target, checkpoint=checkpoint, targets=targets)


async def open_checkpoint_client(
    stack: contextlib.AsyncExitStack, cfg: Config, *, session: AioSession | None = None
) -> DynamoDBClient:
    """The checkpoint (lease) table's client, its hot calls lean (``checkpoint.lean_requests``) where it allows."""
    cp, tgt = cfg.checkpoint, cfg.target
    session = session or get_session()
    client = await stack.enter_async_context(
        session.create_client(
            "dynamodb",
            region_name=cp.region or tgt.region,
            endpoint_url=cp.endpoint_url if cp.region or cp.endpoint_url else tgt.endpoint_url,
            config=client_config(),
        )
    )
    credentials = await session.get_credentials()
    operations = "PutItem,UpdateItem,DeleteItem,Query"
    if not _path_chosen("checkpoint", operations, enabled=cp.lean_requests, blocker=lean_blocker(client, credentials)):
        return client
    # As many connections as botocore's pool: renewals and takes run RENEW_CONCURRENCY (32) at a time
    # and wait for a connection beyond that, as they did on botocore's pool.
    lean = LeanDynamoDB(client, credentials=credentials, max_connections=POOL_CONNECTIONS)
    stack.push_async_callback(lean.close)
    # Duck-typed: those four calls go by the lean path, every other call is the client's own.
    return cast("DynamoDBClient", LeanTable(client, lean))


async def open_target_client(
    stack: contextlib.AsyncExitStack, cfg: Config, *, session: AioSession | None = None
) -> TargetClient:
    """Create only the target table's client (assuming ``target.role_arn`` when set) inside ``stack``.

    The Lambda handler needs nothing else: its event source mapping reads the stream and keeps the positions.
    """
    tgt = cfg.target
    target_session = session or get_session()
    if tgt.role_arn:
        target_session = await _assumed_role_session(stack, tgt.role_arn, tgt.region, tgt.external_id)
    client = await stack.enter_async_context(
        target_session.create_client(
            "dynamodb",
            region_name=tgt.region,
            endpoint_url=tgt.endpoint_url,
            config=client_config(max_pool_connections=tgt.max_concurrent_writes),
        )
    )
    lean = await _open_lean_writes(
        stack,
        client,
        await target_session.get_credentials(),
        enabled=tgt.lean_writes,
        max_connections=tgt.max_concurrent_writes,
    )
    return TargetClient(client, lean)

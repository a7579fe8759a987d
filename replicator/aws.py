"""AWS clients: created once per service (or Lambda execution environment), closed by its exit stack.

botocore's own retries are off: every call goes through ``retry.py``, so retries and throttles are
counted in one place and an outage is retried without limit instead of failing after three tries.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from replicator.config import Config


def client_config(max_pool_connections: int = 10) -> AioConfig:
    """Timeouts short enough to notice a hung endpoint, retries left to ``retry.py``."""
    return AioConfig(
        connect_timeout=3,
        read_timeout=10,
        retries={"total_max_attempts": 1},
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
    )


async def _assumed_role_session(stack: contextlib.AsyncExitStack, role_arn: str, region: str) -> AioSession:
    """A session whose credentials come from assuming ``role_arn`` (cross-account target), refreshed."""
    from aiobotocore.credentials import AioRefreshableCredentials  # noqa: PLC0415 - only for cross-account

    sts = await stack.enter_async_context(get_session().create_client("sts", region_name=region, config=client_config()))

    async def refresh() -> dict[str, str]:
        creds = (await sts.assume_role(RoleArn=role_arn, RoleSessionName="replicator"))["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    session = get_session()
    session._credentials = AioRefreshableCredentials.create_from_metadata(  # noqa: SLF001 - no public setter
        metadata=await refresh(), refresh_using=refresh, method="sts-assume-role"
    )
    return session


async def open_clients(stack: contextlib.AsyncExitStack, cfg: Config) -> dict[str, Any]:
    """Create the source, streams, target and checkpoint clients inside ``stack``."""
    session = get_session()
    conf = client_config()
    src = cfg.source
    clients: dict[str, Any] = {}
    clients["source"] = await stack.enter_async_context(
        session.create_client("dynamodb", region_name=src.region, endpoint_url=src.endpoint_url, config=conf)
    )
    clients["streams"] = await stack.enter_async_context(
        session.create_client("dynamodbstreams", region_name=src.region, endpoint_url=src.endpoint_url, config=conf)
    )
    tgt = cfg.target
    clients["target"] = await open_target_client(stack, cfg, session=session)
    cp = cfg.checkpoint
    if cp.backend == "dynamodb":
        clients["checkpoint"] = await stack.enter_async_context(
            session.create_client(
                "dynamodb",
                region_name=cp.region or tgt.region,
                endpoint_url=cp.endpoint_url if cp.region or cp.endpoint_url else tgt.endpoint_url,
                config=conf,
            )
        )
    return clients


async def open_target_client(
    stack: contextlib.AsyncExitStack, cfg: Config, *, session: AioSession | None = None
) -> Any:  # noqa: ANN401 - aiobotocore clients are dynamically typed
    """Create only the target table's client (assuming ``target.role_arn`` when set) inside ``stack``.

    The Lambda handler needs nothing else: its event source mapping reads the stream and keeps the positions.
    """
    tgt = cfg.target
    target_session = session or get_session()
    if tgt.role_arn:
        target_session = await _assumed_role_session(stack, tgt.role_arn, tgt.region)
    return await stack.enter_async_context(
        target_session.create_client(
            "dynamodb",
            region_name=tgt.region,
            endpoint_url=tgt.endpoint_url,
            config=client_config(max_pool_connections=tgt.max_concurrent_writes),
        )
    )

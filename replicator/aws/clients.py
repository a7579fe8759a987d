"""AWS clients: created once per service (or Lambda execution environment), closed by its exit stack.

botocore's own retries are off: every call goes through ``retry.py``, so retries and throttles are
counted in one place and an outage is retried without limit instead of failing after three tries.

Target writes (the hot path: one call per replicated record) can bypass botocore's per-call machinery
(``LeanDynamoDB``, ``target.lean_writes``): measured with py-spy in ``bench/``, a PutItem through
aiobotocore costs about 1 ms of CPU, most of it user-agent building, event hooks, parameter
validation, serialisation and signing, none of which a fixed-shape PutItem needs per call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import ssl
import weakref
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.client import AioBaseClient
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError, HTTPClientError
from botocore.httpsession import get_cert_path

from replicator.core.codec import decode_item, json_default
from replicator.core.config import Config


def client_config(max_pool_connections: int = 10) -> AioConfig:
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


class LeanDynamoDB:
    """DynamoDB (or DynamoDB Streams) calls as signed JSON POSTs on one aiohttp session: the hot paths.

    Same wire protocol as botocore (``application/x-amz-json-1.0``, SigV4), same endpoint, region and
    credentials (taken from the aiobotocore client it shadows, so refreshed assumed-role credentials
    apply), same errors: a non-2xx answer raises botocore's ``ClientError`` with ``Error.Code`` and
    ``ResponseMetadata.HTTPStatusCode``, so ``errors.py`` and the writer treat it exactly alike.
    """

    def __init__(
        self,
        client: Any,  # noqa: ANN401 - aiobotocore client
        *,
        max_connections: int,
        connect_timeout_s: float = 3,
        read_timeout_s: float = 10,
        target_prefix: str = "DynamoDB_20120810",
    ) -> None:
        """Shadow ``client``; the HTTP session is opened on first use (inside the event loop)."""
        self._client = client
        self._target_prefix = target_prefix
        self._url = str(client.meta.endpoint_url)
        self._region = str(client.meta.region_name)
        self._host = urlsplit(self._url).netloc
        # An endpoint_url with a path (a gateway) is signed with that path, as botocore does.
        self._path = urlsplit(self._url).path or "/"
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._signing_key: tuple[tuple[str, str], bytes] | None = None
        self._has_binary = False

    async def put_item(self, **params: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON request
        """PutItem."""
        return await self._call("PutItem", params)

    async def delete_item(self, **params: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON request
        """DeleteItem."""
        return await self._call("DeleteItem", params)

    async def get_records(self, **params: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON request
        """DynamoDB Streams GetRecords, in botocore's shapes (B/BS as bytes; the time as epoch seconds)."""
        result = await self._call("GetRecords", params)
        if self._has_binary:
            for record in result.get("Records", ()):
                ddb = record.get("dynamodb", {})
                for part in ("Keys", "NewImage", "OldImage"):
                    if part in ddb:
                        ddb[part] = decode_item(ddb[part])
        return result

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _key(self, secret: str, date: str) -> bytes:
        cached = self._signing_key
        if cached is not None and cached[0] == (secret, date):
            return cached[1]
        key = ("AWS4" + secret).encode()
        for part in (date, self._region, "dynamodb", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._signing_key = ((secret, date), key)
        return key

    def _headers(
        self,
        operation: str,
        body: bytes,
        creds: Any,  # noqa: ANN401 - botocore ReadOnlyCredentials
        now: dt.datetime | None = None,
    ) -> dict[str, str]:
        # SigV4 (docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html) for a POST to "/".
        now = now or dt.datetime.now(tz=dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        headers = {
            "content-type": "application/x-amz-json-1.0",
            "host": self._host,
            "x-amz-date": amz_date,
            "x-amz-target": f"{self._target_prefix}.{operation}",
        }
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        names = sorted(headers)
        signed = ";".join(names)
        payload_hash = hashlib.sha256(body).hexdigest()
        lines = ["POST", self._path, "", *(f"{n}:{headers[n]}" for n in names), "", signed, payload_hash]
        canonical = "\n".join(lines)
        scope = f"{date}/{self._region}/dynamodb/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(creds.secret_key, date), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
        return headers

    async def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            # Trust what botocore trusts: AWS_CA_BUNDLE when set, else botocore's default bundle (certifi).
            tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(verify=True))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30, ssl=tls),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),
            )
        signer = self._client._request_signer  # noqa: SLF001 - the client's own credentials, refreshed by it
        creds = await signer._credentials.get_frozen_credentials()  # noqa: SLF001
        body = json.dumps(params, separators=(",", ":"), default=json_default).encode()
        headers = self._headers(operation, body, creds)
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
            if status < 300:  # noqa: PLR2004 - HTTP 2xx
                # Only a body naming a B or BS value needs the walk that turns base64 into bytes.
                self._has_binary = b'"B' in payload
                result: dict[str, Any] = json.loads(payload) if payload else {}
                return result
        except (aiohttp.ClientError, ValueError) as exc:
            if isinstance(exc, OSError):
                raise  # connection refused/reset, TLS: already transient for errors.is_transient
            # Broken responses and transport errors that are not OSErrors: botocore's own wrapper, which
            # the retry loop treats as transient, exactly as if botocore had sent the request.
            raise HTTPClientError(error=exc) from exc
        try:
            error = json.loads(payload)
            code = str(error.get("__type", "")).rpartition("#")[2] or f"HTTP{status}"
            message = str(error.get("message") or error.get("Message") or "")
        except ValueError:
            code, message = f"HTTP{status}", ""
        meta = {"HTTPStatusCode": status}
        raise ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": meta}, operation)


def _intercepted(client: Any, operation: str) -> bool:  # noqa: ANN401 - aiobotocore client
    """Whether a ``before-send`` handler (moto's mock_aws, a stub, fault injection) intercepts ``operation``.

    The lean path sends without botocore's events, so such a client keeps botocore for that operation.
    """
    model = client.meta.service_model
    # botocore emits under the hyphenated service id (``dynamodb-streams``), not the endpoint prefix.
    names = {model.endpoint_prefix, model.service_id.hyphenize()}
    try:
        handlers = client.meta.events._emitter._handlers  # noqa: SLF001 - no public way to list handlers
        return any(True for name in names for _ in handlers.prefix_search(f"before-send.{name}.{operation}"))
    except AttributeError:
        return True


class _LeanStreams:
    """The ``dynamodbstreams`` client with GetRecords (the read hot path) sent by ``LeanDynamoDB``."""

    def __init__(self, client: Any, lean: LeanDynamoDB) -> None:  # noqa: ANN401 - aiobotocore client
        self._client = client
        self._lean = lean

    async def get_records(self, **params: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON request
        """GetRecords through the lean path, unless a before-send handler was registered since."""
        if _intercepted(self._client, "GetRecords"):
            result: dict[str, Any] = await self._client.get_records(**params)
            return result
        return await self._lean.get_records(**params)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - every other call goes to botocore
        return getattr(self._client, name)


_lean: weakref.WeakKeyDictionary[Any, LeanDynamoDB] = weakref.WeakKeyDictionary()


def lean_transport(client: Any) -> LeanDynamoDB | None:  # noqa: ANN401 - aiobotocore client or a test double
    """Return the lean write path registered for ``client`` by ``open_target_client``, if any.

    None as well when a ``before-send`` handler intercepts PutItem or DeleteItem (decided now, when the
    writer is built: a handler registered later is not seen).
    """
    try:
        lean = _lean.get(client)
    except TypeError:  # not weak-referenceable: a test double
        return None
    if lean is None or _intercepted(client, "PutItem") or _intercepted(client, "DeleteItem"):
        return None
    return lean


def _lean_capable(client: Any) -> bool:  # noqa: ANN401 - aiobotocore client
    """Whether the lean path can stand in for botocore: signed by credentials, no proxy to go through."""
    signer = getattr(client, "_request_signer", None)
    if not isinstance(client, AioBaseClient) or getattr(signer, "_credentials", None) is None:
        return False
    config = client.meta.config
    proxy_env = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
    if config.proxies or any(os.environ.get(name) for name in proxy_env):
        return False
    # Dual-stack and FIPS hosts come from botocore's endpoint rules, which the lean path does not apply;
    # a client certificate is botocore's TLS set-up: keep botocore for all of these.
    flags = ("AWS_USE_DUALSTACK_ENDPOINT", "AWS_USE_FIPS_ENDPOINT")
    if (
        config.use_dualstack_endpoint
        or config.use_fips_endpoint
        or any(os.environ.get(name, "").lower() == "true" for name in flags)
    ):
        return False
    return not config.client_cert


async def _add_lean(stack: contextlib.AsyncExitStack, client: Any, max_connections: int) -> None:  # noqa: ANN401
    if not _lean_capable(client):
        return
    lean = LeanDynamoDB(client, max_connections=max_connections)
    _lean[client] = lean
    stack.push_async_callback(lean.close)


def _lean_streams(stack: contextlib.AsyncExitStack, client: Any) -> Any:  # noqa: ANN401 - aiobotocore client
    if not _lean_capable(client):
        return client
    # As many connections as botocore's pool (client_config): every shard polls about 4 times a second.
    lean = LeanDynamoDB(
        client, max_connections=client.meta.config.max_pool_connections, target_prefix="DynamoDBStreams_20120810"
    )
    stack.push_async_callback(lean.close)
    return _LeanStreams(client, lean)


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
    if cfg.reader.lean_get_records:
        clients["streams"] = _lean_streams(stack, clients["streams"])
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
    client = await stack.enter_async_context(
        target_session.create_client(
            "dynamodb",
            region_name=tgt.region,
            endpoint_url=tgt.endpoint_url,
            config=client_config(max_pool_connections=tgt.max_concurrent_writes),
        )
    )
    if tgt.lean_writes:
        await _add_lean(stack, client, tgt.max_concurrent_writes)
    return client

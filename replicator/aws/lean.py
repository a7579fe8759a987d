"""The lean DynamoDB transport: hot-path calls as signed JSON POSTs instead of through botocore.

Target writes (one call per replicated record, ``target.lean_writes``), GetRecords (every shard polls
about 4 times a second, ``reader.lean_get_records``) and the lease table's writes and live-lease
queries (a renewal of every lease every few seconds, ``checkpoint.lean_requests``) can bypass botocore's
per-call machinery: measured with py-spy in ``bench/``, a PutItem through aiobotocore costs about 1 ms
of CPU, most of it user-agent building, event hooks, parameter validation, serialisation and signing,
none of which a fixed-shape call needs per call.

A client the lean path cannot stand in for (a proxy, dual-stack or FIPS endpoints, a client
certificate: ``lean_blocker``) or whose calls a ``before-send`` handler intercepts (moto's mock_aws, a
stub, fault injection: ``intercepted``) keeps botocore.

Parity with botocore where operators notice: the endpoint is the one botocore's endpoint rules choose
(so the account-ID endpoint ``https://<account>.ddb.<region>.amazonaws.com`` when the credentials carry an
account ID and ``account_id_endpoint_mode`` allows it), the User-Agent names replicator and its version
in botocore's format, and errors carry the AWS request id (``x-amzn-RequestId``) where botocore puts it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import platform
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, Unpack, cast
from urllib.parse import urlsplit

import aiohttp
import botocore
import structlog
from aiobotocore.client import AioBaseClient
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.httpsession import get_cert_path

from replicator import __version__
from replicator.core.codec import decode_item, json_default

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        DeleteItemInputTypeDef,
        PutItemInputTypeDef,
        QueryInputTypeDef,
        UpdateItemInputTypeDef,
    )
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient
    from types_aiobotocore_dynamodbstreams.type_defs import (
        DescribeStreamInputTypeDef,
        DescribeStreamOutputTypeDef,
        GetRecordsInputTypeDef,
        GetShardIteratorInputTypeDef,
        GetShardIteratorOutputTypeDef,
        ListStreamsInputTypeDef,
        ListStreamsOutputTypeDef,
    )

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "x-amzn-requestid"
"""Where DynamoDB and DynamoDB Streams put the request id that AWS Support asks for."""


def user_agent() -> str:
    """The lean path's User-Agent: replicator's name and version, then botocore's fields (``ua/2.1`` format)."""
    return (
        f"replicator/{__version__} Botocore/{botocore.__version__} ua/2.1 "
        f"os/{platform.system().lower()}#{platform.release()} lang/python#{platform.python_version()} "
        f"md/pyimpl#{platform.python_implementation()} lib/replicator#{__version__} md/transport#lean"
    )


def _response_metadata(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    # botocore's shape: lower-cased header names, the request id under RequestId (when AWS sent one).
    lowered = {name.lower(): value for name, value in headers.items()}
    meta: dict[str, Any] = {"HTTPStatusCode": status, "HTTPHeaders": lowered, "RetryAttempts": 0}
    if REQUEST_ID_HEADER in lowered:
        meta["RequestId"] = lowered[REQUEST_ID_HEADER]
    return meta


def _client_error(operation: str, status: int, headers: Mapping[str, str], payload: bytes) -> ClientError:
    """The ClientError botocore raises for a non-2xx answer, whatever its body (JSON error, HTML page, nothing)."""
    try:
        error = json.loads(payload)
    except ValueError:  # HTML 5xx from a load balancer, a proxy's 403 page, an empty or cut body
        error = None
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("__type") or error.get("code") or "").rpartition("#")[2] or f"HTTP{status}"
    message = str(error.get("message") or error.get("Message") or "")
    # The stubs require every ResponseMetadata key; botocore's readers (and errors.py) need only these.
    error_response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": _response_metadata(status, headers),
    }
    return ClientError(error_response, operation)  # type: ignore[arg-type]


def _json_object(operation: str, payload: bytes) -> dict[str, Any]:
    """A 2xx body as a JSON object; ValueError for a cut body or JSON that is not an object (a proxy's)."""
    result = json.loads(payload) if payload else {}
    if not isinstance(result, dict):
        # ValueError, not TypeError: the caller treats it as a broken response, like a cut body.
        raise ValueError(f"{operation} answered with a JSON {type(result).__name__}, not an object")  # noqa: TRY004
    return result


class SessionCredentials(Protocol):
    """What the lean path needs of a session's credentials (aiobotocore's static or refreshable ones)."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        """The current key, secret and token, refreshed first when they are about to expire."""
        ...


class LeanDynamoDB:
    """DynamoDB (or DynamoDB Streams) calls as signed JSON POSTs on one aiohttp session: the hot paths.

    Same wire protocol as botocore (``application/x-amz-json-1.0``, SigV4), same endpoint, region and
    credentials (taken from the aiobotocore client it shadows, so refreshed assumed-role credentials
    apply), same errors: a non-2xx answer raises botocore's ``ClientError`` with ``Error.Code`` and
    ``ResponseMetadata.HTTPStatusCode``, so ``errors.py`` and the writer treat it exactly alike.
    """

    def __init__(
        self,
        client: AioBaseClient,
        *,
        credentials: SessionCredentials | None = None,
        max_connections: int,
        connect_timeout_s: float = 3,
        read_timeout_s: float = 10,
        target_prefix: str = "DynamoDB_20120810",
    ) -> None:
        """Shadow ``client``, signing with ``credentials`` (the session's, which the client signs with too).

        The HTTP session is opened on first use (inside the event loop).
        """
        self._client = client
        self._credentials = credentials
        self._target_prefix = target_prefix
        self._region = str(client.meta.region_name)
        self._use_url(str(client.meta.endpoint_url))
        self._resolved: dict[tuple[str, object], str] = {}
        self._user_agent = user_agent()
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._signing_key: tuple[tuple[str, str], bytes] | None = None
        self._has_binary = False

    async def put_item(self, **params: Unpack[PutItemInputTypeDef]) -> dict[str, Any]:
        """PutItem."""
        return await self._call("PutItem", params)

    async def delete_item(self, **params: Unpack[DeleteItemInputTypeDef]) -> dict[str, Any]:
        """DeleteItem."""
        return await self._call("DeleteItem", params)

    async def update_item(self, **params: Unpack[UpdateItemInputTypeDef]) -> dict[str, Any]:
        """UpdateItem (the lease table's renewals and checkpoints)."""
        return await self._call("UpdateItem", params)

    async def query(self, **params: Unpack[QueryInputTypeDef]) -> dict[str, Any]:
        """Query (the lease table's live leases, every rebalance), B/BS as bytes as botocore gives them."""
        result = await self._call("Query", params)
        if self._has_binary:
            result["Items"] = [decode_item(item) for item in result.get("Items", ())]
            if "LastEvaluatedKey" in result:
                result["LastEvaluatedKey"] = decode_item(result["LastEvaluatedKey"])
        return result

    async def get_records(self, **params: Unpack[GetRecordsInputTypeDef]) -> dict[str, Any]:
        """DynamoDB Streams GetRecords, in botocore's shapes (B/BS as bytes; the time as epoch seconds)."""
        result = await self._call("GetRecords", params)
        if self._has_binary:
            for record in result.get("Records", ()):
                ddb = record.get("dynamodb", {})
                for part in ("Keys", "NewImage", "OldImage"):
                    if part in ddb:
                        ddb[part] = decode_item(ddb[part])
        return result

    def _use_url(self, url: str) -> None:
        self._url = url
        self._host = urlsplit(url).netloc
        # An endpoint_url with a path (a gateway) is signed with that path, as botocore does.
        self._path = urlsplit(url).path or "/"

    async def _endpoint(self, operation: str, params: Mapping[str, object]) -> None:
        """Send to the URL botocore's endpoint rules give this operation (an account-ID endpoint, say).

        Resolved once per operation and table: the inputs (region, configured endpoint, the credentials'
        account, ``account_id_endpoint_mode``) do not change for a client's life.
        """
        key = (operation, params.get("TableName"))
        url = self._resolved.get(key)
        if url is None:
            model = self._client.meta.service_model.operation_model(operation)
            # botocore's own resolver (private: there is no public one); test_lean checks it against the
            # URL botocore sends to, so a botocore change fails a test instead of sending elsewhere.
            resolve = self._client._resolve_endpoint_ruleset  # type: ignore[attr-defined]  # noqa: SLF001 - see above
            url = str((await resolve(model, dict(params), {"client_config": self._client.meta.config}))[0])
            self._resolved[key] = url
        if url != self._url:
            self._use_url(url)

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
        creds: ReadOnlyCredentials,
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
        # botocore's signer takes the secret unchecked too: a None one fails the same way (TypeError).
        key = self._key(creds.secret_key, date)  # type: ignore[arg-type]
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
        # Unsigned, as botocore leaves it: proxies rewrite User-Agent, which would break a signature.
        headers["user-agent"] = self._user_agent
        return headers

    async def _call(self, operation: str, params: Mapping[str, object]) -> dict[str, Any]:
        if self._session is None:
            # Trust what botocore trusts: AWS_CA_BUNDLE when set, else botocore's default bundle (certifi).
            tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(verify=True))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30, ssl=tls),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),
            )
        if self._credentials is None:
            raise NoCredentialsError
        # The session's credentials object, refreshed by botocore (assumed roles, instance profiles).
        creds = await self._credentials.get_frozen_credentials()
        await self._endpoint(operation, params)
        body = json.dumps(params, separators=(",", ":"), default=json_default).encode()
        headers = self._headers(operation, body, creds)
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
                response_headers: Mapping[str, str] = resp.headers
            if status < 300:  # noqa: PLR2004 - HTTP 2xx
                # Only a body naming a B or BS value needs the walk that turns base64 into bytes.
                self._has_binary = b'"B' in payload
                result = _json_object(operation, payload)
                result["ResponseMetadata"] = _response_metadata(status, response_headers)
                return result
        except (aiohttp.ClientError, ValueError) as exc:
            if isinstance(exc, OSError):
                raise  # connection refused/reset, TLS: already transient for errors.is_transient
            # Broken responses and transport errors that are not OSErrors: botocore's own wrapper, which
            # the retry loop treats as transient, exactly as if botocore had sent the request.
            raise HTTPClientError(error=exc) from exc
        raise _client_error(operation, status, response_headers, payload)


def intercepted(client: AioBaseClient, operation: str) -> bool:
    """Whether a ``before-send`` handler (moto's mock_aws, a stub, fault injection) intercepts ``operation``.

    The lean path sends without botocore's events, so such a client keeps botocore for that operation.
    """
    model = client.meta.service_model
    # botocore emits under the hyphenated service id (``dynamodb-streams``), not the endpoint prefix.
    names = {model.endpoint_prefix, model.service_id.hyphenize()}
    try:
        # No public way to list handlers (so the stubs do not declare the emitter's internals either).
        handlers = client.meta.events._emitter._handlers  # type: ignore[attr-defined]  # noqa: SLF001 - see above
        return any(True for name in names for _ in handlers.prefix_search(f"before-send.{name}.{operation}"))
    except AttributeError:
        return True


def write_transport(client: DynamoDBClient, lean: LeanDynamoDB | None) -> DynamoDBClient | LeanDynamoDB:
    """What sends PutItem and DeleteItem: ``lean`` when given, else ``client`` (botocore).

    ``client`` as well when a ``before-send`` handler intercepts PutItem or DeleteItem (decided now, when
    the writer is built: a handler registered later is not seen).
    """
    if lean is None:
        return client
    if intercepted(client, "PutItem") or intercepted(client, "DeleteItem"):
        log.info(
            "aws_client_path",
            client="target",
            operations="PutItem,DeleteItem",
            path="botocore",
            reason="a before-send handler intercepts the calls",
        )
        return client
    return lean


class LeanStreams:
    """The ``dynamodbstreams`` client with GetRecords (the read hot path) sent by ``LeanDynamoDB``."""

    def __init__(self, client: DynamoDBStreamsClient, lean: LeanDynamoDB) -> None:
        """Wrap ``client``; ``lean`` shadows it (same endpoint and credentials)."""
        self._client = client
        self._lean = lean

    async def get_records(self, **params: Unpack[GetRecordsInputTypeDef]) -> Mapping[str, Any]:
        """GetRecords through the lean path, unless a before-send handler was registered since."""
        if intercepted(self._client, "GetRecords"):
            return await self._client.get_records(**params)
        return await self._lean.get_records(**params)

    async def describe_stream(self, **params: Unpack[DescribeStreamInputTypeDef]) -> DescribeStreamOutputTypeDef:
        """DescribeStream, through botocore."""
        return await self._client.describe_stream(**params)

    async def get_shard_iterator(self, **params: Unpack[GetShardIteratorInputTypeDef]) -> GetShardIteratorOutputTypeDef:
        """GetShardIterator, through botocore."""
        return await self._client.get_shard_iterator(**params)

    async def list_streams(self, **params: Unpack[ListStreamsInputTypeDef]) -> ListStreamsOutputTypeDef:
        """ListStreams, through botocore."""
        return await self._client.list_streams(**params)

    def __getattr__(self, name: str) -> object:
        """Every other attribute is the botocore client's."""
        return getattr(self._client, name)


class _ConfigOptions(Protocol):
    """The options of botocore's ``Config`` that ``lean_capable`` reads."""

    proxies: Mapping[str, str] | None
    use_dualstack_endpoint: bool | None
    use_fips_endpoint: bool | None
    client_cert: str | tuple[str, str] | None


def lean_blocker(client: object, credentials: SessionCredentials | None) -> str | None:  # noqa: PLR0911 - one reason each
    """Why the lean path cannot stand in for botocore on ``client`` (None: it can).

    ``credentials`` are the session's (what the client signs with); the answer is logged at start-up.
    """
    if not isinstance(client, AioBaseClient):
        return "not an aiobotocore client"
    if credentials is None:
        return "no credentials (unsigned requests)"
    # The stubs declare Config's options as constructor arguments only, not as the attributes they are.
    config = cast("_ConfigOptions", client.meta.config)
    proxy_env = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
    if config.proxies or any(os.environ.get(name) for name in proxy_env):
        return "a proxy is configured"
    # Dual-stack and FIPS hosts come from botocore's endpoint rules, which the lean path does not apply;
    # a client certificate is botocore's TLS set-up: keep botocore for all of these.
    if config.use_dualstack_endpoint or os.environ.get("AWS_USE_DUALSTACK_ENDPOINT", "").lower() == "true":
        return "dual-stack endpoint"
    if config.use_fips_endpoint or os.environ.get("AWS_USE_FIPS_ENDPOINT", "").lower() == "true":
        return "FIPS endpoint"
    if config.client_cert:
        return "a client certificate is configured"
    return None


def lean_capable(client: object, credentials: SessionCredentials | None) -> bool:
    """Whether the lean path can stand in for botocore: signed by credentials, no proxy to go through."""
    return lean_blocker(client, credentials) is None

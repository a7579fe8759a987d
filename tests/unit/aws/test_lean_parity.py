"""aws.lean parity with botocore: User-Agent, request ids, botocore's endpoint, the error-parsing branches."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ClientError, HTTPClientError

from replicator import __version__
from replicator.aws.lean import LeanDynamoDB, lean_blocker
from replicator.core.errors import error_code, is_transient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@contextlib.asynccontextmanager
async def _server(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _lean(url: str) -> AsyncIterator[LeanDynamoDB]:
    session = get_session()
    async with session.create_client("dynamodb", region_name="us-east-1", endpoint_url=url) as client:
        lean = LeanDynamoDB(client, credentials=await session.get_credentials(), max_connections=2)
        try:
            yield lean
        finally:
            await lean.close()


async def _answer(status: int, body: bytes, content_type: str = "application/x-amz-json-1.0") -> Any:
    """Send one PutItem through the lean path to a server answering ``status`` with ``body``."""
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.Response(
            status=status, body=body, headers={"x-amzn-RequestId": "REQ123", "Content-Type": content_type}
        )

    async with _server(handler) as url, _lean(url) as lean:
        try:
            return await lean.put_item(TableName="t", Item={"pk": {"S": "a"}}), seen
        except (ClientError, HTTPClientError) as exc:
            return exc, seen


async def test_user_agent_names_replicator_and_botocore() -> None:
    """Every lean request carries a User-Agent naming replicator and its version, in botocore's format."""
    _, headers = await _answer(200, b"{}")
    agent = headers["User-Agent"]
    assert agent.startswith(f"replicator/{__version__} Botocore/")
    assert "ua/2.1" in agent
    assert "md/transport#lean" in agent


async def test_a_success_carries_the_request_id() -> None:
    """A 2xx answer's ResponseMetadata holds the request id and status, as botocore's does."""
    result, _ = await _answer(200, b'{"Attributes":{}}')
    assert result["ResponseMetadata"]["RequestId"] == "REQ123"
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert result["Attributes"] == {}


async def test_a_json_error_keeps_code_message_and_request_id() -> None:
    """A JSON error body gives its code (after the '#'), message and the x-amzn-RequestId."""
    body = b'{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"failed"}'
    exc, _ = await _answer(400, body)
    assert isinstance(exc, ClientError)
    assert error_code(exc) == "ConditionalCheckFailedException"
    assert exc.response["Error"]["Message"] == "failed"
    assert exc.response["ResponseMetadata"]["RequestId"] == "REQ123"
    assert not is_transient(exc)


async def test_a_non_json_error_body_is_an_http_status_code() -> None:
    """A plain-text error body gives the code HTTP<status> and keeps the request id."""
    exc, _ = await _answer(400, b"Bad request, not JSON", "text/plain")
    assert isinstance(exc, ClientError)
    assert error_code(exc) == "HTTP400"
    assert exc.response["ResponseMetadata"]["RequestId"] == "REQ123"


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"42"])
async def test_a_non_object_json_error_body_is_an_http_status_code(body: bytes) -> None:
    """An error body that is JSON but not an object (a list, a string, null) is still a ClientError HTTP<status>."""
    exc, _ = await _answer(400, body)
    assert isinstance(exc, ClientError)
    assert error_code(exc) == "HTTP400"


async def test_an_html_5xx_page_is_transient() -> None:
    """A load balancer's HTML 503 page is ClientError HTTP503, which the retry loop retries."""
    exc, _ = await _answer(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
    assert isinstance(exc, ClientError)
    assert error_code(exc) == "HTTP503"
    assert is_transient(exc)


async def test_a_403_page_is_permanent() -> None:
    """A proxy's HTML 403 page is ClientError HTTP403, not retried."""
    exc, _ = await _answer(403, b"<html>Forbidden</html>", "text/html")
    assert isinstance(exc, ClientError)
    assert error_code(exc) == "HTTP403"
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert not is_transient(exc)


async def test_a_truncated_200_is_a_transient_transport_error() -> None:
    """A 200 whose JSON body is cut off is botocore's HTTPClientError, which the retry loop retries."""
    exc, _ = await _answer(200, b'{"Attributes": {"pk": {"S"')
    assert isinstance(exc, HTTPClientError)
    assert is_transient(exc)


@pytest.mark.parametrize("body", [b"[]", b'"ok"', b"null"])
async def test_a_200_with_non_object_json_is_a_transient_transport_error(body: bytes) -> None:
    """A 200 whose body is JSON but not an object is as broken as a cut one: HTTPClientError, retried."""
    exc, _ = await _answer(200, body)
    assert isinstance(exc, HTTPClientError)
    assert is_transient(exc)


async def _botocore_url(client: Any, operation: str, params: dict[str, Any]) -> str:
    """The URL botocore itself sends ``operation`` to (captured by a before-send hook that stops the call)."""
    sent: list[str] = []

    class Stop(Exception):  # noqa: N818 - a control-flow signal, not an error
        pass

    def capture(request: Any, **_: Any) -> None:
        sent.append(request.url)
        raise Stop

    client.meta.events.register_first(f"before-send.dynamodb.{operation}", capture)
    with pytest.raises(Stop):
        await client.put_item(**params)
    client.meta.events.unregister(f"before-send.dynamodb.{operation}", capture)
    return sent[0]


@pytest.mark.parametrize("mode", [None, "preferred", "disabled"])
async def test_the_endpoint_is_the_one_botocore_sends_to(monkeypatch, mode: str | None) -> None:
    """With credentials carrying an account ID the lean path sends where botocore does (the account-ID endpoint)."""
    from aiobotocore.config import AioConfig  # noqa: PLC0415

    monkeypatch.setenv("AWS_ACCOUNT_ID", "123456789012")
    session = get_session()
    config = AioConfig(account_id_endpoint_mode=mode) if mode else None
    async with session.create_client("dynamodb", region_name="eu-west-1", config=config) as client:
        params = {"TableName": "t", "Item": {"pk": {"S": "a"}}}
        expected = await _botocore_url(client, "PutItem", params)
        lean = LeanDynamoDB(client, credentials=await session.get_credentials(), max_connections=1)
        await lean._endpoint("PutItem", params)
        assert lean._url.rstrip("/") == expected.rstrip("/")
        assert lean._host == expected.split("/")[2]
    if mode == "disabled":
        assert lean._host == "dynamodb.eu-west-1.amazonaws.com"
    else:
        assert lean._host == "123456789012.ddb.eu-west-1.amazonaws.com"


async def test_lean_blocker_names_the_reason(monkeypatch) -> None:
    """Each reason to keep botocore is named (it goes into the start-up line)."""
    from aiobotocore.config import AioConfig  # noqa: PLC0415

    session = get_session()
    creds = await session.get_credentials()
    async with session.create_client("dynamodb", region_name="us-east-1") as plain:
        assert lean_blocker(plain, creds) is None
        assert lean_blocker(plain, None) == "no credentials (unsigned requests)"
        assert lean_blocker(object(), creds) == "not an aiobotocore client"
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
        assert lean_blocker(plain, creds) == "a proxy is configured"
    monkeypatch.delenv("HTTPS_PROXY")
    async with session.create_client(
        "dynamodb", region_name="us-east-1", config=AioConfig(use_fips_endpoint=True)
    ) as fips:
        assert lean_blocker(fips, creds) == "FIPS endpoint"

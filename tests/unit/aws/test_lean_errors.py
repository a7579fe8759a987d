"""The lean path's answers that are not DynamoDB's: each becomes an error the classifier can scope."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError
from faults import FaultProxy

from replicator.aws.lean import LeanDynamoDB
from replicator.core.errors import error_code, error_scope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
def proxy() -> FaultProxy:
    """A local server answering every PutItem with the fault set on it (nothing behind it)."""
    server = FaultProxy("http://127.0.0.1:9").start()
    yield server
    server.close()


@contextlib.asynccontextmanager
async def _lean(url: str) -> AsyncIterator[LeanDynamoDB]:
    session = get_session()
    async with session.create_client("dynamodb", region_name="us-west-2", endpoint_url=url) as client:
        lean = LeanDynamoDB(client, credentials=await session.get_credentials(), max_connections=1)
        try:
            yield lean
        finally:
            await lean.close()


@pytest.mark.parametrize(
    ("fault", "code", "scope"),
    [
        ("403_html", "HTTP403", "target"),
        ("access_denied", "AccessDeniedException", "target"),
        ("expired_token", "ExpiredTokenException", "target"),
        ("non_object_json", "HTTP400", "target"),
    ],
)
async def test_refusals_are_client_errors_with_a_code(proxy: FaultProxy, fault: str, code: str, scope: str) -> None:
    """A 403 page, AWS JSON errors and a non-object JSON body raise ClientError naming a code of target scope."""
    proxy.fault = fault
    async with _lean(proxy.url) as lean:
        with pytest.raises(ClientError) as caught:
            await lean.put_item(TableName="t", Item={"pk": {"S": "a"}})
    assert error_code(caught.value) == code
    assert error_scope(caught.value) == scope
    assert "secret-value-4711" not in str(caught.value.response["ResponseMetadata"])


async def test_a_200_cut_short_is_a_transient_error(proxy: FaultProxy) -> None:
    """A 200 whose body is not a whole JSON object is a broken answer: retried, like botocore's."""
    proxy.fault = "truncated_200"
    async with _lean(proxy.url) as lean:
        with pytest.raises(HTTPClientError) as caught:
            await lean.put_item(TableName="t", Item={"pk": {"S": "a"}})
    assert error_scope(caught.value) == "transient"

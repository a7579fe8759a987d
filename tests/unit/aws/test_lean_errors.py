"""The lean path's answers that are not DynamoDB's: each becomes an error the classifier can scope."""

from __future__ import annotations

import types

import pytest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError, HTTPClientError
from faults import FaultProxy

from replicator.aws.lean import LeanDynamoDB
from replicator.core.errors import error_code, error_scope


class _Credentials:
    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return ReadOnlyCredentials("x", "y", None)


@pytest.fixture
def proxy() -> FaultProxy:
    """A local server answering every PutItem with the fault set on it (nothing behind it)."""
    server = FaultProxy("http://127.0.0.1:9").start()
    yield server
    server.close()


def _lean(url: str) -> LeanDynamoDB:
    client = types.SimpleNamespace(
        meta=types.SimpleNamespace(endpoint_url=url, region_name="us-west-2"),
        _request_signer=types.SimpleNamespace(_credentials=_Credentials()),
    )
    return LeanDynamoDB(client, max_connections=1)  # type: ignore[arg-type]


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
    lean = _lean(proxy.url)
    try:
        with pytest.raises(ClientError) as caught:
            await lean.put_item(TableName="t", Item={"pk": {"S": "a"}})
    finally:
        await lean.close()
    assert error_code(caught.value) == code
    assert error_scope(caught.value) == scope
    assert "secret-value-4711" not in str(caught.value.response["ResponseMetadata"])


async def test_a_200_cut_short_is_a_transient_error(proxy: FaultProxy) -> None:
    """A 200 whose body is not a whole JSON object is a broken answer: retried, like botocore's."""
    proxy.fault = "truncated_200"
    lean = _lean(proxy.url)
    try:
        with pytest.raises(HTTPClientError) as caught:
            await lean.put_item(TableName="t", Item={"pk": {"S": "a"}})
    finally:
        await lean.close()
    assert error_scope(caught.value) == "transient"

"""aws.LeanDynamoDB: the signed-HTTP hot path must sign and decode exactly as botocore does."""

from __future__ import annotations

import base64
import datetime as dt
import types
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from replicator.aws.lean import LeanDynamoDB


def _lean(url: str = "https://dynamodb.eu-west-1.amazonaws.com", region: str = "eu-west-1") -> LeanDynamoDB:
    meta = types.SimpleNamespace(endpoint_url=url, region_name=region)
    return LeanDynamoDB(types.SimpleNamespace(meta=meta), max_connections=1)


def _botocore_signature(headers: dict[str, str], body: bytes, creds: ReadOnlyCredentials, url: str, region: str) -> str:
    unsigned = {k: v for k, v in headers.items() if k != "authorization"}
    request = AWSRequest(method="POST", url=url, data=body, headers=unsigned)
    request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(creds, "dynamodb", region)
    return str(auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request))


def test_signature_matches_botocore_with_session_token() -> None:
    """The Authorization header carries the signature botocore's SigV4Auth computes for the same request."""
    lean = _lean()
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
    body = b'{"TableName":"T","Item":{"pk":{"S":"a"}}}'
    now = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    headers = lean._headers("PutItem", body, creds, now=now)
    expected = _botocore_signature(headers, body, creds, "https://dynamodb.eu-west-1.amazonaws.com", "eu-west-1")
    assert headers["authorization"].endswith(f"Signature={expected}")
    assert "x-amz-security-token" in headers["authorization"]
    assert headers["x-amz-target"] == "DynamoDB_20120810.PutItem"


def test_signature_matches_botocore_on_a_local_port() -> None:
    """A non-default port is part of the signed host, as botocore signs it."""
    lean = _lean("http://127.0.0.1:8123", "us-east-1")
    creds = ReadOnlyCredentials("x", "y", None)
    body = b"{}"
    headers = lean._headers("DeleteItem", body, creds, now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert headers["host"] == "127.0.0.1:8123"
    assert headers["authorization"].endswith(
        f"Signature={_botocore_signature(headers, body, creds, 'http://127.0.0.1:8123', 'us-east-1')}"
    )


async def test_binary_values_are_decoded_at_any_depth() -> None:
    """B and BS values, also inside maps and lists, come out as bytes like botocore's parser gives them."""
    enc = base64.b64encode(b"\x00\xff").decode()
    item = {
        "b": {"B": enc},
        "bs": {"BS": [enc]},
        "m": {"M": {"inner": {"B": enc}}},
        "l": {"L": [{"B": enc}, {"S": "s"}]},
        "n": {"N": "1.50"},
    }
    lean = _lean()

    async def call(_operation: str, _params: dict[str, Any]) -> dict[str, Any]:
        lean._has_binary = True
        return {"Records": [{"dynamodb": {"Keys": {"n": {"N": "1"}}, "NewImage": item}}]}

    lean._call = call  # type: ignore[method-assign]
    result = await lean.get_records(ShardIterator="it")
    item = result["Records"][0]["dynamodb"]["NewImage"]
    assert item["b"] == {"B": b"\x00\xff"}
    assert item["bs"] == {"BS": [b"\x00\xff"]}
    assert item["m"]["M"]["inner"] == {"B": b"\x00\xff"}
    assert item["l"]["L"] == [{"B": b"\x00\xff"}, {"S": "s"}]
    assert item["n"] == {"N": "1.50"}


def test_signature_matches_botocore_for_an_endpoint_with_a_path() -> None:
    """A gateway endpoint_url with a path is signed with that path, as botocore signs it."""
    url = "https://gw.example.com/ddb"
    lean = _lean(url, "us-east-1")
    creds = ReadOnlyCredentials("x", "y", None)
    body = b"{}"
    headers = lean._headers("PutItem", body, creds, now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert headers["authorization"].endswith(f"Signature={_botocore_signature(headers, body, creds, url, 'us-east-1')}")


async def test_streams_hooks_are_detected_under_botocores_event_name() -> None:
    """A before-send hook on GetRecords (registered as botocore names it) sends GetRecords through botocore."""
    from aiobotocore.session import get_session  # noqa: PLC0415

    from replicator.aws.lean import intercepted  # noqa: PLC0415

    async with get_session().create_client(
        "dynamodbstreams",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",  # noqa: S106 - a fake key for a client that never sends
    ) as client:
        assert not intercepted(client, "GetRecords")
        client.meta.events.register("before-send.dynamodb-streams.GetRecords", lambda **_: None)
        assert intercepted(client, "GetRecords")


async def test_dualstack_and_fips_keep_botocore(monkeypatch) -> None:
    """Endpoint rules (dual-stack, FIPS) that the lean path does not apply keep the client on botocore."""
    from aiobotocore.config import AioConfig  # noqa: PLC0415
    from aiobotocore.session import get_session  # noqa: PLC0415

    from replicator.aws.lean import lean_capable  # noqa: PLC0415

    def client(**config: object) -> object:
        return get_session().create_client(
            "dynamodb",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",  # noqa: S106 - a fake key for a client that never sends,
            config=AioConfig(**config),  # type: ignore[arg-type]
        )

    creds = await get_session().get_credentials()
    async with client() as plain:
        assert lean_capable(plain, creds)
        monkeypatch.setenv("AWS_USE_DUALSTACK_ENDPOINT", "true")
        assert not lean_capable(plain, creds)
    async with client(use_fips_endpoint=True) as fips:
        monkeypatch.delenv("AWS_USE_DUALSTACK_ENDPOINT")
        assert not lean_capable(fips, creds)

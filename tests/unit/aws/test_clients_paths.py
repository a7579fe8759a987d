"""aws.clients: the start-up line naming each client's path, and AssumeRole with an ExternalId."""

from __future__ import annotations

import contextlib
import datetime as dt
import types
from typing import Any

import pytest
from aiobotocore.session import AioSession
from structlog.testing import capture_logs

from replicator.aws import clients as clients_module
from replicator.aws.clients import open_clients, open_target_client
from replicator.core.config import Config

ENDPOINT = "http://127.0.0.1:9"


def _cfg(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": "src", "endpoint_url": ENDPOINT},
        "target": {"region": "us-west-2", "table": "dst", "endpoint_url": ENDPOINT},
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return Config(**data)


def _paths(logs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {e["client"]: (e["path"], e["reason"]) for e in logs if e["event"] == "aws_client_path"}


async def test_start_up_names_each_clients_path_and_why(monkeypatch) -> None:
    """One line per hot-path client says lean or botocore, and the reason."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with capture_logs() as logs:
        async with contextlib.AsyncExitStack() as stack:
            await open_clients(stack, _cfg())
    assert _paths(logs) == {"target": ("lean", "enabled in config"), "streams": ("lean", "enabled in config")}

    with capture_logs() as logs:
        async with contextlib.AsyncExitStack() as stack:
            await open_clients(stack, _cfg(target={"lean_writes": False}))
    assert _paths(logs)["target"] == ("botocore", "disabled in config")

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with capture_logs() as logs:
        async with contextlib.AsyncExitStack() as stack:
            await open_clients(stack, _cfg())
    assert _paths(logs) == {
        "target": ("botocore", "a proxy is configured"),
        "streams": ("botocore", "a proxy is configured"),
    }


@pytest.mark.parametrize("external_id", [None, "ext-123"])
async def test_assume_role_sends_the_external_id(monkeypatch, external_id: str | None) -> None:
    """target.external_id goes into AssumeRole as ExternalId; without it none is sent."""
    sent: list[dict[str, Any]] = []

    def answer(params: dict[str, Any], **_: Any) -> tuple[object, dict[str, Any]]:
        sent.append(dict(params["body"]))
        expiry = dt.datetime.now(tz=dt.UTC) + dt.timedelta(hours=1)
        creds = {"AccessKeyId": "AK", "SecretAccessKey": "SK", "SessionToken": "T", "Expiration": expiry}
        return types.SimpleNamespace(status_code=200), {"Credentials": creds, "ResponseMetadata": {}}

    def session() -> AioSession:
        made = AioSession()
        made.register("before-call.sts.AssumeRole", answer)
        return made

    monkeypatch.setattr(clients_module, "get_session", session)
    target: dict[str, Any] = {"role_arn": "arn:aws:iam::123456789012:role/writer"}
    if external_id:
        target["external_id"] = external_id
    async with contextlib.AsyncExitStack() as stack:
        opened = await open_target_client(stack, _cfg(target=target))
        assert opened.lean is not None
        frozen = await opened.lean._credentials.get_frozen_credentials()  # type: ignore[union-attr]
    assert frozen.access_key == "AK"
    assert sent[0]["RoleArn"] == "arn:aws:iam::123456789012:role/writer"
    assert sent[0].get("ExternalId") == external_id


def test_external_id_needs_a_role() -> None:
    """target.external_id without target.role_arn is a config error naming both keys."""
    with pytest.raises(ValueError, match=r"target\.external_id needs target\.role_arn"):
        _cfg(target={"external_id": "ext-123"})

"""Shared fixtures: isolation from real AWS, DynamoDB Local regions, moto, unique names.

Starting DynamoDB Local costs 1.5-2 s, so ``region_a``/``region_b`` are session-scoped and shared by
every test that asks for them; tests on shared regions must use ``unique_name`` for their tables and
must never pause, kill or restart them. A test that disrupts a process starts its own with
``ddb_local_factory``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.moto_server import MotoServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_INTEGRATION_DIR = Path(__file__).parent / "integration"

# Set before any fixture runs so session-scoped fixtures (created outside a test's monkeypatch)
# cannot see real credentials either; the autouse fixture below re-applies it per test.
_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/replicator-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/replicator-tests/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_REAL_AWS_VARS = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
)
os.environ.update(_FAKE_AWS_ENV)
for _name in _REAL_AWS_VARS:
    os.environ.pop(_name, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ as ``integration`` (select with ``-m``)."""
    for item in items:
        if _INTEGRATION_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Each test starts from structlog's defaults: one that configures logging cannot leak its stream."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _isolate_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every test fake credentials and no way to reach a real AWS config or metadata service."""
    for name, value in _FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in _REAL_AWS_VARS:
        monkeypatch.delenv(name, raising=False)


_names = itertools.count()
_run_id = uuid.uuid4().hex[:6]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Return ``make(prefix) -> name`` giving table/queue names unique within the session.

    Names stay within DynamoDB's 3-255 characters of ``[A-Za-z0-9_.-]``.
    """
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-") or "test"

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{_run_id}-{next(_names)}"

    return make


@pytest.fixture
def ddb_local_factory(tmp_path: Path) -> Iterator[Callable[..., DynamoDBLocal]]:
    """Return ``start(**kwargs) -> DynamoDBLocal`` (started); every process is stopped at teardown.

    Keyword arguments go to ``DynamoDBLocal``; ``db_path=True`` means a fresh directory under tmp_path.
    """
    started: list[DynamoDBLocal] = []

    def start(**kwargs: Any) -> DynamoDBLocal:
        if kwargs.get("db_path") is True:
            kwargs["db_path"] = tmp_path / f"ddb-{len(started)}"
        ddb = DynamoDBLocal(**kwargs)
        started.append(ddb)
        return ddb.start()

    yield start
    for ddb in started:
        ddb.close()


def _session_region(name: str) -> Iterator[DynamoDBLocal]:
    ddb = DynamoDBLocal(region_name=name)
    with ddb:
        yield ddb


@pytest.fixture(scope="session")
def region_a() -> Iterator[DynamoDBLocal]:
    """Shared DynamoDB Local standing for us-east-1 (source side). Never pause or kill it."""
    yield from _session_region("us-east-1")


@pytest.fixture(scope="session")
def region_b() -> Iterator[DynamoDBLocal]:
    """Shared DynamoDB Local standing for us-west-2 (target side). Never pause or kill it."""
    yield from _session_region("us-west-2")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """Shared moto server (SQS, Kinesis); use ``unique_name`` for queues and streams."""
    with MotoServer() as server:
        yield server

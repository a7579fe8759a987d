"""structlog set-up: JSON off a terminal, console on one, levels, context, no item contents by default."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from botocore.exceptions import ClientError
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.core.records import ChangeRecord
from replicator.observe import logs
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "s3cr3t-4711@example.org"  # noqa: S105 - a marker value to find in logs, not a credential


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Claim to be a terminal."""
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put structlog, the root logger and the item-contents flag back as they were."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logs._settings["log_item_contents"] = False
    logs._handler = None


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def _record(**kw: Any) -> ChangeRecord:
    data: dict[str, Any] = {
        "event_name": "MODIFY",
        "keys": {"pk": {"S": SECRET}},
        "new_image": {"pk": {"S": SECRET}, "email": {"S": SECRET}},
        "old_image": None,
        "sequence_number": "000000000000000000042",
        "approximate_creation_time_us": 1_000_000,
        "shard_id": "shardId-1",
        "event": {},
    }
    data.update(kw)
    return ChangeRecord(**data)


def test_json_when_not_a_terminal() -> None:
    """Off a terminal each line is one JSON object with level, timestamp and the bound context."""
    out = io.StringIO()
    logs.configure("INFO", "auto", stream=out)
    with structlog.contextvars.bound_contextvars(source_table="Orders"):
        structlog.get_logger("t").bind(shard_id="shardId-1").info("checkpoint", sequence_number="42")
    (line,) = _lines(out)
    assert line["event"] == "checkpoint"
    assert line["level"] == "info"
    assert line["shard_id"] == "shardId-1"
    assert line["sequence_number"] == "42"
    assert line["source_table"] == "Orders"
    assert line["timestamp"].endswith("Z")


def test_console_on_a_terminal() -> None:
    """On a terminal the output is the human console format, not JSON."""
    out = Terminal()
    logs.configure("INFO", "auto", stream=out)
    structlog.get_logger("t").info("started", worker_id="w1")
    text = out.getvalue()
    assert "started" in text
    assert "worker_id" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_explicit_json_overrides_a_terminal() -> None:
    """Format json is JSON even on a terminal."""
    out = Terminal()
    logs.configure("INFO", "json", stream=out)
    structlog.get_logger("t").info("started")
    assert _lines(out)[0]["event"] == "started"


def test_level_filters_lower_levels() -> None:
    """At WARNING, info and debug lines are dropped and warnings kept."""
    out = io.StringIO()
    logs.configure("WARNING", "json", stream=out)
    log = structlog.get_logger("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    assert [line["event"] for line in _lines(out)] == ["w"]


def test_standard_library_records_are_json_too() -> None:
    """A library's warning through logging comes out as a JSON line with the logger's name."""
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out)
    logging.getLogger("botocore.test").warning("slow endpoint %s", "x")
    logging.getLogger("botocore.test").info("chatter")
    (line,) = _lines(out)
    assert line["event"] == "slow endpoint x"
    assert line["logger"] == "botocore.test"
    assert line["level"] == "warning"


def test_record_fields_leave_out_contents_by_default() -> None:
    """record_fields names shard and sequence number; keys and images only when enabled."""
    logs.configure("INFO", "json", stream=io.StringIO())
    fields = logs.record_fields(_record())
    assert fields == {
        "shard_id": "shardId-1",
        "sequence_number": "000000000000000000042",
        "event_name": "MODIFY",
    }
    logs.configure("INFO", "json", stream=io.StringIO(), log_item_contents=True)
    fields = logs.record_fields(_record())
    assert fields["keys"] == {"pk": {"S": SECRET}}
    assert fields["new_image"]["email"] == {"S": SECRET}


def test_item_fields_of_any_log_call_are_redacted_unless_enabled() -> None:
    """A careless log call passing an image is redacted by default and kept when enabled."""
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out)
    structlog.get_logger("t").error("oops", new_image={"email": {"S": SECRET}}, keys={"pk": {"S": SECRET}})
    assert SECRET not in out.getvalue()
    assert _lines(out)[0]["new_image"] == logs.REDACTED
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out, log_item_contents=True)
    structlog.get_logger("t").error("oops", new_image={"email": {"S": SECRET}})
    assert SECRET in out.getvalue()


class _DeadLetters:
    def __init__(self) -> None:
        """Set up the fake."""
        self.sent = 0

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Keep the dead letter."""
        del record, error, attempts
        self.sent += 1


class _RejectingTarget(RecordingTarget):
    """Rejects items whose email is the secret with an error message quoting it, as a careless API might."""

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Fail or block as scripted, else record the write."""
        if params["Item"].get("email") == {"S": SECRET}:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": f"bad {SECRET}"}}, "PutItem")
        return await super().put_item(**params)


def _replication_run(
    tmp_path: Path, *, log_item_contents: bool, dead_letters: bool = True, plugin: bool = False
) -> str:
    """Replicate a shard holding the secret and return everything logged, at DEBUG.

    Two records: one replicated (the secret is its key), one the target rejects with an error message
    quoting the secret (dead-lettered, or stopping the shard without a destination). With ``plugin``, a
    transform plugin refuses both, raising with the secret in its message.
    """
    out = io.StringIO()
    logs.configure("DEBUG", "json", stream=out, log_item_contents=log_item_contents)
    cfg = Config(
        source={"region": "us-east-1", "table": "Orders"},
        target={"region": "eu-west-1", "table": "Orders"},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
        reader={
            "poll_interval_s": 0.01,
            "max_idle_poll_interval_s": 0.02,
            "shard_discovery_interval_s": 0.05,
        },
        transforms=[{"type": "plugin", "function": "plugins_for_tests:raise_with_value"}] if plugin else [],
        logging={"log_item_contents": log_item_contents},
    )
    stream = ScriptedStream()
    stream.add_shard("shardId-1")
    stream.put("shardId-1", SECRET, 1)
    stream.put("shardId-1", "rejected", 2)
    stream.shards["shardId-1"].records[-1]["dynamodb"]["NewImage"]["email"] = {"S": SECRET}
    stream.close("shardId-1")
    dead = _DeadLetters() if dead_letters else None
    replicator = Replicator(
        cfg,
        metrics=Metrics(),
        dead_letters=dead,
        clients=Clients(source=stream, streams=stream, target=TargetClient(_RejectingTarget())),
    )

    async def run() -> None:
        task = asyncio.create_task(replicator.run())
        try:
            async with asyncio.timeout(5):
                while replicator.state.shard("shardId-1").state not in ("closed", "stopped"):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
        finally:
            replicator.stop()
            await task

    asyncio.run(run())
    return out.getvalue()


@pytest.mark.parametrize("plugin", [False, True], ids=["target-rejects", "plugin-raises"])
@pytest.mark.parametrize("dead_letters", [True, False], ids=["dead-letters", "no-destination"])
def test_full_run_logs_no_item_value_by_default(tmp_path: Path, *, plugin: bool, dead_letters: bool) -> None:
    """Failures quoting the secret (target message, plugin error) log neither keys nor values by default."""
    text = _replication_run(tmp_path, log_item_contents=False, dead_letters=dead_letters, plugin=plugin)
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert ("dead_lettered" if dead_letters else "shard_stopped") in events
    assert "shardId-1" in text
    assert SECRET not in text


def test_full_run_logs_contents_when_enabled(tmp_path: Path) -> None:
    """With logging.log_item_contents the dead-letter line carries the record's keys and images."""
    text = _replication_run(tmp_path, log_item_contents=True)
    (line,) = [json.loads(raw) for raw in text.splitlines() if json.loads(raw)["event"] == "dead_lettered"]
    assert line["keys"] == {"pk": {"S": "rejected"}}
    assert line["new_image"]["email"] == {"S": SECRET}
    assert line["source_table"] == "Orders"
    assert line["target_table"] == "Orders"


def _wrapped_client_error() -> RuntimeError:
    cause = ClientError({"Error": {"Code": "ValidationException", "Message": f"cannot parse {SECRET}"}}, "PutItem")
    wrapped = RuntimeError(f"rejected at sequence 42: ValidationException: cannot parse {SECRET}")
    wrapped.__cause__ = cause
    return wrapped


def test_error_text_withholds_aws_messages_in_the_chain() -> None:
    """An AWS message quoted by a wrapping error is withheld by default and kept when contents are allowed."""
    wrapped = _wrapped_client_error()
    logs.configure("INFO", "json", stream=io.StringIO())
    text = logs.error_text(wrapped)
    assert SECRET not in text
    assert "sequence 42: ValidationException" in text
    logs.configure("INFO", "json", stream=io.StringIO(), log_item_contents=True)
    assert SECRET in logs.error_text(wrapped)


def test_error_text_withholds_a_short_message_without_garbling_other_words() -> None:
    """A one-letter AWS message is withheld where it is quoted, and words containing that letter stay whole."""
    cause = ClientError({"Error": {"Code": "AccessDenied", "Message": "m"}}, "PutItem")
    wrapped = RuntimeError(f"lambda target from shard 7 failed ({type(cause).__name__}: {cause})")
    wrapped.__cause__ = cause
    logs.configure("INFO", "json", stream=io.StringIO())
    text = logs.error_text(wrapped)
    assert text.startswith("lambda target from shard 7 failed (ClientError: An error occurred (AccessDenied)")
    assert text.endswith(f"operation: {logs.WITHHELD})")


def test_filter_that_can_never_match_is_logged_at_start_up(capsys) -> None:
    """A numeric pattern on an N value is reported when the processor is built (service, Lambda, redrive)."""
    from replicator.core.config import Config  # noqa: PLC0415
    from replicator.observe.metrics import Metrics  # noqa: PLC0415
    from replicator.runtime.wiring import build_processor  # noqa: PLC0415

    logs.configure("INFO", "json")
    cfg = Config(
        source={"region": "us-east-1", "table": "Orders"},  # type: ignore[arg-type]
        target={"region": "eu-west-1", "table": "Orders"},  # type: ignore[arg-type]
        filters=[{"dynamodb": {"NewImage": {"total": {"N": [{"numeric": [">", 10]}]}}}}],
    )
    build_processor(cfg, target_client=TargetClient(object()), metrics=Metrics(), dead_letters=None)
    err = capsys.readouterr().err
    assert "filter_never_matches" in err
    assert "filters[0]" in err

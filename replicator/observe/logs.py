"""structlog set-up: JSON when not on a terminal (containers, Lambda), readable console output on one.

Context (table, shard id, sequence number) is bound where it is known: the service binds the tables
with ``structlog.contextvars``, each shard reader binds its shard id, and record-level lines carry the
sequence number (``record_fields``). Item contents (keys and images) may be personal data: they appear
only when ``logging.log_item_contents`` is true, through ``record_fields``; a processor also redacts the
item fields of any other log call while the option is off.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

import structlog

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

    from replicator.core.records import ChangeRecord

ITEM_FIELDS = frozenset({"keys", "new_image", "old_image", "image", "item", "items"})
"""Log fields that hold item contents: redacted unless ``logging.log_item_contents`` is true."""

REDACTED = "<redacted: logging.log_item_contents is false>"

_settings = {"log_item_contents": False}
_handler: logging.Handler | None = None


def item_contents_enabled() -> bool:
    """Whether log lines may carry item keys and images."""
    return _settings["log_item_contents"]


def record_fields(record: ChangeRecord) -> dict[str, Any]:
    """Fields naming a record in a log line: where it is, and its contents only when enabled."""
    fields: dict[str, Any] = {
        "shard_id": record.shard_id,
        "sequence_number": record.sequence_number,
        "event_name": record.event_name,
    }
    if _settings["log_item_contents"]:
        fields["keys"] = record.keys
        fields["new_image"] = record.new_image
        fields["old_image"] = record.old_image
    return fields


WITHHELD = "<AWS error message withheld: may quote item values; see logging.log_item_contents>"


def error_text(exc: BaseException) -> str:
    """``str(exc)`` for a log line, with AWS error messages in its chain withheld unless contents are allowed.

    AWS messages can quote the values of the request (e.g. a number DynamoDB cannot parse); our own
    messages name shards, sequence numbers and error codes only.
    """
    text = str(exc)
    if _settings["log_item_contents"]:
        return text
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            message = (response.get("Error") or {}).get("Message")
            if message:
                # Only where the message is quoted (after "...operation: " or a wrapper's "Code: "), so a
                # short message such as "m" does not garble other words of the line.
                text = WITHHELD if text == str(message) else text.replace(f": {message}", f": {WITHHELD}")
        current = current.__cause__ or current.__context__
    return text


def redact_item_contents(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace item-content fields by a marker unless ``logging.log_item_contents`` is true."""
    if not _settings["log_item_contents"]:
        for name in ITEM_FIELDS.intersection(event_dict):
            event_dict[name] = REDACTED
    return event_dict


def configure(
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    log_item_contents: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's logging once, at start-up.

    ``auto`` writes JSON unless the stream is a terminal. The standard library's records (botocore,
    aiohttp) go through the same renderer at WARNING and above, so a container's log stays JSON lines.
    """
    global _handler  # noqa: PLW0603 - logging configuration is process-wide by nature
    out = stream if stream is not None else sys.stderr
    _settings["log_item_contents"] = log_item_contents
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_item_contents,
    ]
    processors: list[structlog.typing.Processor] = [
        *shared,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(out)
    _handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    # Libraries' INFO/DEBUG chatter (botocore logs every request at DEBUG) stays out of the log.
    _handler.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    root.addHandler(_handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)

"""One root error with a ``retriable`` flag that the retry loops read (aiokafka's model)."""

from __future__ import annotations

from typing import Any, Literal


class ReplicatorError(Exception):
    """Root of every error the replicator raises on purpose.

    ``retriable`` tells a retry loop whether trying the same call again can succeed.
    """

    retriable: bool = False


class ConfigError(ReplicatorError):
    """The configuration is invalid; the message names the key and what is wrong."""


class FilterError(ConfigError):
    """A filter pattern is invalid; names the filter (by index) and the path inside it."""

    def __init__(self, filter_index: int, path: str, message: str) -> None:
        """Name the filter and the path inside it."""
        self.filter_index = filter_index
        self.path = path
        super().__init__(f"filters[{filter_index}] at {path or '<root>'}: {message}")


class TransformError(ReplicatorError):
    """A transform raised while processing a record: the record is poison for this pipeline."""


class StreamConfigError(ReplicatorError):
    """The source stream cannot serve this replication (disabled, KEYS_ONLY, lacks old images)."""


class TransientError(ReplicatorError):
    """A call failed in a way that may succeed if retried (throttling, 5xx, connection, timeout)."""

    retriable = True


class ExpiredIteratorError(ReplicatorError):
    """The shard iterator expired (they live 15 minutes): get a new one from the checkpoint.

    Not ``retriable``: repeating the same call fails the same way; the reader recovers by asking for a
    new iterator instead.
    """


class TrimmedDataError(ReplicatorError):
    """Records past the checkpoint were trimmed from the stream (older than 24 h) before being read."""


class ShardGoneError(ReplicatorError):
    """The shard no longer exists in the stream (ResourceNotFound on its iterator)."""


class RecordRejectedError(ReplicatorError):
    """The target rejected this one record for good (validation, size, key type): a poison record."""


class TargetUnavailableError(ReplicatorError):
    """The whole target refuses writes (credentials, permissions, table gone, wrong key schema, KMS).

    Not about any one record: the writer holds every write and checkpoint and retries until it is fixed.
    ``code`` is the AWS error code (never the message: it may quote item data).
    """

    def __init__(self, code: str) -> None:
        """Name the code only."""
        self.code = code
        super().__init__(f"the target refuses writes: {code}")


class TargetDetachedError(ReplicatorError):
    """A shard ended while this target was detached; its rest of the shard is dead-lettered, not written.

    With ``fanout.on_shard_end_while_detached: dead_letter``: the other targets go on to the shard's
    children instead of waiting; ``redrive --target`` replays these letters to this target later.
    """

    def __init__(self, target_id: str, shard_id: str) -> None:
        """Name the target and the shard."""
        self.target_id = target_id
        super().__init__(
            f"shard {shard_id} ended while target {target_id} was detached: dead-lettered so the other targets "
            f"go on (fanout.on_shard_end_while_detached); replay with redrive --target {target_id}"
        )


class LeaseLostError(ReplicatorError):
    """The shard's lease is held by another worker now; this one must stop processing the shard."""


_THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "Throttling",
        "TooManyRequestsException",
    }
)
_TRANSIENT_CODES = _THROTTLE_CODES | frozenset(
    {
        "InternalServerError",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestTimeout",
        "TransactionInProgressException",
        "TransactionConflictException",
        # A gateway or proxy in front of the endpoint timing out or rate limiting (no JSON code).
        "HTTP408",
        "HTTP429",
    }
)

Scope = Literal["transient", "record", "shard", "target", "ambiguous"]
"""How far a failure reaches (DESIGN.md, "Failure handling"):

- ``transient``: retry the same call (throttling, 5xx, connection, timeout).
- ``record``: this record cannot be written; the others can (too large, an attribute the target refuses,
  a transform error). It is dead-lettered; the shard moves on.
- ``shard``: this shard's position is unusable (trimmed data, a gone shard, an expired iterator).
- ``target``: nothing can be written until someone fixes the target (credentials, permissions, a
  deleted table, KMS, a wrong key schema, a 403 page). Every write and checkpoint is held; nothing is
  dead-lettered; retried with capped backoff until it works.
- ``ambiguous``: an error that may be either record or target (ValidationException, an unknown code, an
  unexpected exception): a breaker decides (``pipeline/target_health.py``).
"""

_TARGET_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "RequestExpired",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "ResourceNotFoundException",
        "ResourceInUseException",
        "TableNotFoundException",
        "UnknownOperationException",
        "InaccessibleEncryptionCredentials",
    }
)
_RECORD_CODES = frozenset({"ItemCollectionSizeLimitExceededException"})
# Phrases of ValidationException messages that only a target whose key schema differs from the source's
# produces (every replicated item carries the source's key attributes, with the source's types).
_KEY_SCHEMA_PHRASES = (
    "Missing the key",
    "Type mismatch for key",
    "key element does not match the schema",
    "One of the required keys was not given a value",  # DynamoDB Local's wording of "Missing the key"
)


def error_code(exc: BaseException) -> str | None:
    """Return the AWS error code of a botocore ClientError, else None."""
    response: Any = getattr(exc, "response", None)
    if response is None and isinstance(exc, ReplicatorError) and exc.__cause__ is not None:
        return error_code(exc.__cause__)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def request_id(exc: BaseException) -> str | None:
    """The AWS request id of a failed call (``x-amzn-RequestId``; AWS Support asks for it), else None."""
    response: Any = getattr(exc, "response", None)
    if response is None and isinstance(exc, ReplicatorError) and exc.__cause__ is not None:
        return request_id(exc.__cause__)
    if isinstance(response, dict):
        found = response.get("ResponseMetadata", {}).get("RequestId")
        return str(found) if found else None
    return None


def error_message(exc: BaseException) -> str:
    """The AWS error message (for classification only: never log it, it may quote item data)."""
    response: Any = getattr(exc, "response", None)
    if response is None and isinstance(exc, ReplicatorError) and exc.__cause__ is not None:
        return error_message(exc.__cause__)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message") or "")
    return ""


def failure_code(exc: BaseException) -> str:
    """What names a failure in logs, metric labels and dead letters: the AWS code, else the type name."""
    if isinstance(exc, TargetUnavailableError):
        return exc.code
    return error_code(exc) or type(exc).__name__


def error_scope(exc: BaseException) -> Scope:  # noqa: PLR0911 - one return per rule reads as the table it is
    """Classify a failure of a target write by how far it reaches (see ``Scope``): one place, read by all."""
    if is_transient(exc):
        return "transient"
    if isinstance(exc, TrimmedDataError | ShardGoneError | ExpiredIteratorError | LeaseLostError):
        return "shard"
    if isinstance(exc, TargetUnavailableError):
        return "target"
    if isinstance(exc, TransformError):
        return "record"
    code = error_code(exc)
    if code is None:
        # A RecordRejectedError without an AWS cause is the pipeline's own verdict on the record.
        return "record" if isinstance(exc, RecordRejectedError) else "ambiguous"
    if code in _TARGET_CODES or code.startswith("KMS") or _status_only_4xx(code):
        return "target"
    if code in _RECORD_CODES:
        return "record"
    if code == "ValidationException" and any(p in error_message(exc) for p in _KEY_SCHEMA_PHRASES):
        return "target"
    return "ambiguous"


def _status_only_4xx(code: str) -> bool:
    """Whether ``code`` is ``HTTP4xx`` (lean path): a 4xx answer without DynamoDB's JSON error.

    It comes from whatever stands between the worker and the target (proxy, gateway, firewall), which
    refuses every request alike.
    """
    return code.startswith("HTTP4") and code[4:].isdigit()


def is_throttle(exc: BaseException) -> bool:
    """True when the error is AWS throttling."""
    return error_code(exc) in _THROTTLE_CODES or error_code(exc) == "HTTP429"


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: throttling, 5xx, connection failures and timeouts."""
    if isinstance(exc, ReplicatorError):
        return exc.retriable
    code = error_code(exc)
    if code is not None:
        if code in _TRANSIENT_CODES:
            return True
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(status and int(status) >= 500)  # noqa: PLR2004 - HTTP 5xx
    # botocore's connection errors and aiohttp/asyncio timeouts carry no response.
    name = type(exc).__name__
    return isinstance(exc, OSError | TimeoutError) or name in {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectorError",
        "ClientPayloadError",
        "HTTPClientError",
        "ProxyConnectionError",
    }

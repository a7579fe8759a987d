"""Configuration: validated once, at the edge, from a YAML file and ``REPLICATOR_*`` variables.

Every key can be overridden by ``REPLICATOR_<SECTION>__<KEY>`` (e.g. ``REPLICATOR_TARGET__TABLE``);
the environment wins over the file. Nothing past this module reads the environment or checks types.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from replicator.core.errors import ConfigError

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(BaseModel):
    """Where changes are read from."""

    model_config = _STRICT

    kind: Literal["dynamodb", "kinesis"] = "dynamodb"
    region: str = Field(min_length=1, description="The source table's region: the origin region of its changes.")
    table: str | None = Field(default=None, min_length=3, max_length=255)
    stream_arn: str | None = Field(default=None, description="Explicit stream ARN; default: the table's latest.")
    kinesis_stream_name: str | None = Field(
        default=None, min_length=1, description="kind kinesis: the Kinesis data stream by name."
    )
    endpoint_url: str | None = None

    @model_validator(mode="after")
    def _table_or_stream(self) -> SourceConfig:
        if self.table is None and self.stream_arn is None and self.kinesis_stream_name is None:
            raise ValueError("give source.table or source.stream_arn (or, kind kinesis, kinesis_stream_name)")
        if self.kinesis_stream_name is not None and self.kind != "kinesis":
            raise ValueError("source.kinesis_stream_name needs source.kind: kinesis")
        return self


class TargetConfig(BaseModel):
    """Where changes are written to."""

    model_config = _STRICT

    region: str = Field(min_length=1)
    table: str = Field(min_length=3, max_length=255)
    endpoint_url: str | None = None
    max_concurrent_writes: int = Field(default=64, ge=1, le=1024)
    lean_writes: bool = Field(
        default=True,
        description="Send target PutItem/DeleteItem as signed HTTP requests of our own (aws.LeanDynamoDB) "
        "instead of through botocore's per-call machinery: a third of the CPU per record; false: botocore.",
    )
    role_arn: str | None = Field(default=None, description="Assume this role for target writes (cross-account).")


class CheckpointConfig(BaseModel):
    """Where per-shard checkpoints (and, with DynamoDB, leases) are kept."""

    model_config = _STRICT

    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    path: Path = Path("./state/checkpoints.db")
    table: str | None = Field(default=None, min_length=3, max_length=255)
    region: str | None = Field(default=None, description="Default: the target's region.")
    endpoint_url: str | None = Field(default=None, description="Default: the target's endpoint_url.")

    @model_validator(mode="after")
    def _backend_needs(self) -> CheckpointConfig:
        if self.backend == "dynamodb" and self.table is None:
            raise ValueError("checkpoint.table is required when checkpoint.backend is dynamodb")
        return self


class MetricsConfig(BaseModel):
    """The HTTP endpoint for /metrics, /healthz and /readyz."""

    model_config = _STRICT

    host: str = "0.0.0.0"  # noqa: S104 - a container must be scraped from outside
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks any free port (logged).")
    enabled: bool = True
    readiness_timeout_s: float = Field(default=120.0, gt=0)


class LoggingConfig(BaseModel):
    """structlog output."""

    model_config = _STRICT

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
    log_item_contents: bool = False


class ReaderConfig(BaseModel):
    """How shards are polled (DynamoDB Streams: GetRecords returns at most 1000 records)."""

    model_config = _STRICT

    poll_interval_s: float = Field(default=0.25, ge=0, le=60, description="Lambda polls 4 times/s.")
    max_idle_poll_interval_s: float = Field(default=1.0, ge=0, le=60)
    get_records_limit: int = Field(default=1000, ge=1, le=1000)
    lean_get_records: bool = Field(
        default=True,
        description="Send GetRecords as a signed HTTP request of our own (aws.LeanDynamoDB) instead of "
        "through botocore, whose response parsing cost ~10% of the CPU per record; false: botocore.",
    )
    shard_discovery_interval_s: float = Field(default=10.0, gt=0)
    on_trimmed_data: Literal["fail", "skip_to_trim_horizon"] = "fail"


class ReplicationConfig(BaseModel):
    """Versions, markers and conflict resolution (last writer wins)."""

    model_config = _STRICT

    version_attribute: str = "_rep_version"
    origin_attribute: str = "_rep_origin"
    tombstone_attribute: str = "_rep_deleted"
    expires_attribute: str = Field(
        default="_rep_expires", description="Epoch-seconds TTL attribute set on tombstones for GC."
    )
    timestamp_attribute: str | None = Field(
        default=None,
        description="Item attribute holding the application's write time (N: epoch time in timestamp_unit).",
    )
    timestamp_unit: Literal["s", "ms", "us"] = "ms"
    timestamp_marker_attribute: str = Field(
        default="_rep_ts", description="Copy of timestamp_attribute as last replicated: tells local writes apart."
    )
    deletes: Literal["tombstone", "delete"] = "tombstone"
    tombstone_ttl_s: int = Field(
        default=15 * 24 * 3600,
        ge=0,
        description="How long a tombstone outlives its delete; must exceed replay_window_s (deletes: tombstone).",
    )
    replay_window_s: int = Field(
        default=14 * 24 * 3600,
        ge=0,
        description="The longest a change may be replayed after it was made: dead-letter retention (SQS keeps "
        "messages up to 14 days, the default), a Kinesis source's retention (24 h to 365 days).",
    )
    ttl_deletes: Literal["replicate", "skip"] = "replicate"
    skip_echoes: bool = True
    source_tombstones: bool = Field(
        default=False,
        description="Active-active: also leave a tombstone in the source table after a delete there, so an "
        "older write replicated from the other region cannot bring the item back (needs PutItem on the source).",
    )

    @model_validator(mode="after")
    def _distinct_markers(self) -> ReplicationConfig:
        names = [
            self.version_attribute,
            self.origin_attribute,
            self.tombstone_attribute,
            self.expires_attribute,
            self.timestamp_marker_attribute,
        ]
        if self.timestamp_attribute in names:
            raise ValueError("timestamp_attribute must not be one of the marker attributes")
        if len(set(names)) != len(names):
            raise ValueError("marker attribute names must be distinct")
        return self

    @model_validator(mode="after")
    def _tombstones_outlive_replays(self) -> ReplicationConfig:
        # A tombstone that expires before a replay of an older write lets that write bring the item back
        # in the target only (tests/unit/model: the checker's ttl<replay configurations).
        if self.deletes == "tombstone" and self.tombstone_ttl_s <= self.replay_window_s:
            raise ValueError(
                f"tombstone_ttl_s ({self.tombstone_ttl_s}) must exceed replay_window_s ({self.replay_window_s}): "
                "a tombstone that expires before a replayed or redriven older write arrives lets that write "
                "bring the deleted item back; raise replication.tombstone_ttl_s (or, if no record can be replayed "
                "that late, lower replication.replay_window_s)"
            )
        return self

    @property
    def marker_attributes(self) -> frozenset[str]:
        """The attributes owned by the replicator; transforms and comparisons leave them alone."""
        return frozenset(
            {
                self.version_attribute,
                self.origin_attribute,
                self.tombstone_attribute,
                self.expires_attribute,
                self.timestamp_marker_attribute,
            }
        )


class OnFailureConfig(BaseModel):
    """The dead-letter destination: an SQS queue URL or a local JSONL file."""

    model_config = _STRICT

    destination: str | None = Field(
        default=None, description="https://sqs.../queue, or a file path / file:// URL for JSONL."
    )
    endpoint_url: str | None = None
    region: str | None = None


class FailurePolicyConfig(BaseModel):
    """Batching, retries and failure isolation, named as in Lambda's event source mapping."""

    model_config = _STRICT

    batch_size: int = Field(default=1000, ge=1, le=10000)
    maximum_batching_window_seconds: float = Field(default=0, ge=0, le=300)
    maximum_retry_attempts: int = Field(default=-1, ge=-1, le=10000, description="-1: retry without limit.")
    maximum_record_age_seconds: int = Field(default=-1, ge=-1, le=604800, description="-1: no limit.")
    bisect_batch_on_function_error: bool = True
    parallelization_factor: int = Field(default=1, ge=1, le=10)
    on_failure: OnFailureConfig = OnFailureConfig()


class LeaseConfig(BaseModel):
    """Several workers sharing one stream's shards through leases in the DynamoDB checkpoint table."""

    model_config = _STRICT

    enabled: bool = False
    failover_time_s: float = Field(default=10.0, gt=0, description="A lease not renewed this long is taken.")
    renew_interval_s: float | None = Field(default=None, gt=0, description="Default: failover_time_s / 3.")
    max_leases_per_worker: int | None = Field(default=None, ge=1)
    history_path: Path | None = Field(default=None, description="Append lease events here as JSON lines.")

    @model_validator(mode="after")
    def _renew_inside_failover(self) -> LeaseConfig:
        if self.renew_interval_s is not None and self.renew_interval_s >= self.failover_time_s / 2:
            raise ValueError("leases.renew_interval_s must be well inside failover_time_s (at most half)")
        return self


class Config(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="REPLICATOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    source: SourceConfig
    target: TargetConfig
    checkpoint: CheckpointConfig = CheckpointConfig()
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    reader: ReaderConfig = ReaderConfig()
    replication: ReplicationConfig = ReplicationConfig()
    failure: FailurePolicyConfig = FailurePolicyConfig()
    filters: list[dict[str, Any]] = Field(default_factory=list, max_length=5)
    transforms: list[dict[str, Any]] = Field(default_factory=list)
    worker_id: str | None = Field(default=None, description="Lease owner name; default host:pid.")
    leases: LeaseConfig = LeaseConfig()

    @model_validator(mode="after")
    def _leases_need_dynamodb(self) -> Config:
        if self.leases.enabled and self.checkpoint.backend != "dynamodb":
            raise ValueError("leases.enabled needs checkpoint.backend: dynamodb (the lease table)")
        return self

    @model_validator(mode="after")
    def _timestamp_survives_transforms(self) -> Config:
        # Last-writer-wins compares the target's copy of timestamp_attribute; a transform that removes
        # it lets any older write (a replay, a redrive, a duplicate) overwrite a newer one.
        ts = self.replication.timestamp_attribute
        if ts is None:
            return self
        for index, spec in enumerate(self.transforms):
            kind, attributes = spec.get("type"), spec.get("attributes")
            dropped = (
                (kind == "include" and isinstance(attributes, list) and ts not in attributes)
                or (kind == "exclude" and isinstance(attributes, list) and ts in attributes)
                or (kind in ("rename", "map_keys") and isinstance(attributes, dict) and ts in attributes)
            )
            if dropped:
                raise ValueError(
                    f"transforms[{index}] ({kind}) removes replication.timestamp_attribute {ts!r} from the "
                    f"target items, which disables last-writer-wins (an older replayed write would win): keep "
                    f"{ts!r} in the target (list it in include, leave it out of exclude and rename), or unset "
                    "replication.timestamp_attribute"
                )
        return self

    @field_validator("filters", mode="before")
    @classmethod
    def _filters_may_be_json(cls, value: object) -> object:
        # Lambda's FilterCriteria holds each pattern as a JSON string; accept that form too.
        if isinstance(value, list):
            return [yaml.safe_load(v) if isinstance(v, str) else v for v in value]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: config is explicit
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - same
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override the YAML file (passed as init kwargs)."""
        del settings_cls
        return (env_settings, init_settings)


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_config(path: Path | str | None, environ: dict[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError naming the key and what is wrong.

    ``path`` may be None to configure from the environment alone (the Lambda handler does this).
    """
    data: Any = {}
    origin = "the environment"
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    env = os.environ if environ is None else environ
    saved = None
    if environ is not None:
        # pydantic-settings reads os.environ; swap in the given mapping for this call only.
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None
    finally:
        if saved is not None:
            os.environ.clear()
            os.environ.update(saved)

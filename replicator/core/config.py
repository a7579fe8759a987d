"""Configuration: validated once, at the edge, from a YAML file and ``REPLICATOR_*`` variables.

Every key can be overridden by ``REPLICATOR_<SECTION>__<KEY>`` (e.g. ``REPLICATOR_TARGET__TABLE``);
the environment wins over the file. Nothing past this module reads the environment or checks types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from replicator.core.target_config import (
    STRICT,
    TargetConfig,
    distinct_targets,
    filters_may_be_json,
    one_of_target_or_targets,
)

_STRICT = STRICT


class SourceConfig(BaseModel):
    """Where changes are read from."""

    model_config = _STRICT

    kind: Literal["dynamodb", "kinesis"] = Field(
        default="dynamodb",
        description="dynamodb: the table's DynamoDB stream; kinesis: its Kinesis Data Streams destination.",
    )
    region: str = Field(min_length=1, description="The source table's region: the origin region of its changes.")
    table: str | None = Field(
        default=None, min_length=3, max_length=255, description="The source table; its latest stream is read."
    )
    stream_arn: str | None = Field(default=None, description="Explicit stream ARN; default: the table's latest.")
    kinesis_stream_name: str | None = Field(
        default=None, min_length=1, description="kind kinesis: the Kinesis data stream by name."
    )
    endpoint_url: str | None = Field(default=None, description="Another endpoint (DynamoDB Local, a VPC endpoint).")

    @model_validator(mode="after")
    def _table_or_stream(self) -> SourceConfig:
        if self.table is None and self.stream_arn is None and self.kinesis_stream_name is None:
            raise ValueError("give source.table or source.stream_arn (or, kind kinesis, kinesis_stream_name)")
        if self.kinesis_stream_name is not None and self.kind != "kinesis":
            raise ValueError("source.kinesis_stream_name needs source.kind: kinesis")
        return self


class CheckpointConfig(BaseModel):
    """Where per-shard checkpoints (and, with DynamoDB, leases) are kept."""

    model_config = _STRICT

    backend: Literal["sqlite", "dynamodb"] = Field(
        default="sqlite", description="sqlite: a local file (one worker); dynamodb: a table (needed for leases)."
    )
    path: Path = Field(default=Path("./state/checkpoints.db"), description="backend sqlite: the database file.")
    table: str | None = Field(
        default=None,
        min_length=3,
        max_length=255,
        description="backend dynamodb: the checkpoint and lease table (created if missing).",
    )
    region: str | None = Field(default=None, description="Default: the target's region.")
    endpoint_url: str | None = Field(default=None, description="Default: the target's endpoint_url.")
    lean_requests: bool = Field(
        default=True,
        description="backend dynamodb: send the table's PutItem, UpdateItem, DeleteItem and Query (lease "
        "renewals, takes, checkpoints, the live-lease read) as signed HTTP requests of our own "
        "(aws.LeanDynamoDB) instead of through botocore, whose per-call work was a third of a leased "
        "worker's CPU at 1,000 shards; false: botocore.",
    )

    @model_validator(mode="after")
    def _backend_needs(self) -> CheckpointConfig:
        if self.backend == "dynamodb" and self.table is None:
            raise ValueError("checkpoint.table is required when checkpoint.backend is dynamodb")
        return self


class MetricsConfig(BaseModel):
    """The HTTP endpoint for /metrics, /healthz and /readyz."""

    model_config = _STRICT

    host: str = Field(default="0.0.0.0", description="Address the HTTP endpoint listens on.")  # noqa: S104 - a container must be scraped from outside
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks any free port (logged).")
    enabled: bool = Field(default=True, description="Serve /metrics, /healthz and /readyz.")
    readiness_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="/readyz answers 503 while an owned shard has neither progressed nor caught up this long.",
    )
    created_series: bool = Field(
        default=False,
        description="Also export prometheus_client's <counter>_created timestamp series (one more per label set).",
    )


class LoggingConfig(BaseModel):
    """structlog output."""

    model_config = _STRICT

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="The lowest level logged.")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise."
    )
    log_item_contents: bool = Field(
        default=False, description="Put item contents in log lines (they may be personal data): debugging only."
    )


class ReaderConfig(BaseModel):
    """How shards are polled (DynamoDB Streams: GetRecords returns at most 1000 records)."""

    model_config = _STRICT

    poll_interval_s: float = Field(default=0.25, ge=0, le=60, description="Lambda polls 4 times/s.")
    max_idle_poll_interval_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="An idle shard's wait doubles on each empty read up to this; bench/idle_poll.py measures the "
        "trade-off (GetRecords per idle shard-day against the delay to a waking shard's first record).",
    )
    get_records_limit: int = Field(default=1000, ge=1, le=1000, description="Records asked for per GetRecords call.")
    lean_get_records: bool = Field(
        default=True,
        description="Send GetRecords as a signed HTTP request of our own (aws.LeanDynamoDB) instead of "
        "through botocore, whose response parsing cost ~10% of the CPU per record; false: botocore.",
    )
    shard_discovery_interval_s: float = Field(default=10.0, gt=0, description="How often new shards are looked for.")
    on_trimmed_data: Literal["fail", "skip_to_trim_horizon"] = Field(
        default="fail",
        description="Unread records were trimmed from the stream: fail stops the shard; skip_to_trim_horizon "
        "continues from the oldest record left (logged and counted as lost).",
    )


class ReplicationConfig(BaseModel):
    """Versions, markers and conflict resolution (last writer wins)."""

    model_config = _STRICT

    version_attribute: str = Field(
        default="_rep_version", description="Marker: the version of the change last written."
    )
    origin_attribute: str = Field(default="_rep_origin", description="Marker: the region the change came from.")
    tombstone_attribute: str = Field(
        default="_rep_deleted", description="Marker: true on a tombstone (a deleted item)."
    )
    expires_attribute: str = Field(
        default="_rep_expires", description="Epoch-seconds TTL attribute set on tombstones for GC."
    )
    timestamp_attribute: str | None = Field(
        default=None,
        description="Item attribute holding the application's write time (N: epoch time in timestamp_unit).",
    )
    timestamp_unit: Literal["s", "ms", "us"] = Field(default="ms", description="The unit of timestamp_attribute.")
    timestamp_marker_attribute: str = Field(
        default="_rep_ts", description="Copy of timestamp_attribute as last replicated: tells local writes apart."
    )
    deletes: Literal["tombstone", "delete"] = Field(
        default="tombstone",
        description="tombstone: a delete leaves a versioned tombstone, so older writes lose to it; delete: a "
        "conditional DeleteItem (not for active-active).",
    )
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
    ttl_deletes: Literal["replicate", "skip"] = Field(
        default="replicate", description="Deletes made by DynamoDB's TTL: replicate them, or leave the target item."
    )
    skip_echoes: bool = Field(
        default=True, description="Skip changes this replicator's peer wrote (active-active loop prevention)."
    )
    source_tombstones: bool = Field(
        default=False,
        description="Active-active: also leave a tombstone in the source table after a delete there, so an "
        "older write replicated from the other region cannot bring the item back (needs PutItem on the source, "
        "and timestamp_attribute: refused without it).",
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

    @model_validator(mode="after")
    def _active_active_needs_timestamps(self) -> ReplicationConfig:
        # source_tombstones is how a worker knows it is one of an active-active pair. Without an
        # application timestamp a whole-item PutItem drops the markers, so the next change's record
        # carries no trace of the replicated version and its version can fall below the PutItem's:
        # the regions end different (tests/unit/model, test_convergence.py finds the history).
        if self.source_tombstones and self.timestamp_attribute is None:
            raise ValueError(
                "replication.source_tombstones (active-active) needs replication.timestamp_attribute: without an "
                "application timestamp a change made in the same second as a whole-item PutItem can be ordered "
                "before it and the regions end different; set replication.timestamp_attribute to an attribute the "
                "application writes on every write (or, one-way, remove replication.source_tombstones)"
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
    endpoint_url: str | None = Field(default=None, description="SQS endpoint (moto, a VPC endpoint).")
    region: str | None = Field(default=None, description="The queue's region; default: from its URL.")


class FailurePolicyConfig(BaseModel):
    """Batching, retries and failure isolation, named as in Lambda's event source mapping."""

    model_config = _STRICT

    batch_size: int = Field(default=1000, ge=1, le=10000, description="Records processed as one batch per shard.")
    maximum_batching_window_seconds: float = Field(
        default=0, ge=0, le=300, description="Wait up to this long to fill a batch (as the event source mapping)."
    )
    maximum_retry_attempts: int = Field(default=-1, ge=-1, le=10000, description="-1: retry without limit.")
    maximum_record_age_seconds: int = Field(default=-1, ge=-1, le=604800, description="-1: no limit.")
    bisect_batch_on_function_error: bool = Field(
        default=True, description="Isolate a failing record and dead-letter it alone instead of stopping the shard."
    )
    parallelization_factor: int = Field(
        default=1, ge=1, le=10, description="Batches of one shard processed at once, keys kept in order."
    )
    on_failure: OnFailureConfig = OnFailureConfig()
    stream_retention_seconds: int = Field(
        default=86400,
        ge=3600,
        le=31536000,
        description="How long the source stream keeps a record: 86400 for DynamoDB Streams; a Kinesis"
        " stream's retention period.",
    )
    dead_letter_before_retention_seconds: int = Field(
        default=3600,
        ge=-1,
        description="While the target is unavailable (target scope), a held record goes to"
        " on_failure.destination this long before it would leave the stream. -1: never (hold until trimmed).",
    )

    target_unavailable_max_backoff_seconds: float = Field(
        default=30.0,
        ge=0.1,
        le=300,
        description="While the whole target refuses writes, one write probes it after a jittered backoff"
        " growing to this; the longest a fixed target waits before replication resumes.",
    )

    @model_validator(mode="after")
    def _margin_inside_retention(self) -> FailurePolicyConfig:
        if self.dead_letter_before_retention_seconds >= self.stream_retention_seconds:
            raise ValueError(
                "failure.dead_letter_before_retention_seconds must be less than failure.stream_retention_seconds"
            )
        return self


class LeaseConfig(BaseModel):
    """Several workers sharing one stream's shards through leases in the DynamoDB checkpoint table."""

    model_config = _STRICT

    enabled: bool = Field(default=False, description="Share shards among workers through leases.")
    failover_time_s: float = Field(default=10.0, gt=0, description="A lease not renewed this long is taken.")
    renew_interval_s: float | None = Field(default=None, gt=0, description="Default: failover_time_s / 3.")
    max_leases_per_worker: int | None = Field(
        default=None, ge=1, description="At most this many shards per worker; default: no cap."
    )
    history_path: Path | None = Field(default=None, description="Append lease events here as JSON lines.")
    finished_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description=(
            "A finished shard's checkpoint (its lease item with leases, its row or item without) is deleted "
            "only this long after its shard ended, once the stream no longer lists it and every child "
            "started: the stream's retention (24 h for DynamoDB Streams; set a Kinesis stream's own). "
            "Applies with or without leases."
        ),
    )
    cleanup_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="How often a worker looks for finished checkpoints to delete (with or without leases).",
    )

    @model_validator(mode="after")
    def _renew_inside_failover(self) -> LeaseConfig:
        if self.renew_interval_s is not None and self.renew_interval_s >= self.failover_time_s / 2:
            raise ValueError("leases.renew_interval_s must be well inside failover_time_s (at most half)")
        return self


class FanOutConfig(BaseModel):
    """With several ``targets``: how far one target may fall behind the others before it reads on its own."""

    model_config = _STRICT

    max_buffered_batches: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Batches read but not yet written that one target may have waiting, per shard; the shard's "
        "reader waits for room while that target is merely slower.",
    )
    detach_after_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A target whose queue stays full this long (or at once, while the target is unavailable) is "
        "detached: the reader goes on for the others, and the target catches up from its own checkpoint with a "
        "second reader of the shard (one per shard at a time), rejoining when it reaches the first.",
    )
    on_shard_end_while_detached: Literal["wait", "dead_letter"] = Field(
        default="wait",
        description="A shard ends while a target is still detached. wait: its children wait until that target "
        "caught up (the other targets stall until then). dead_letter: the detached target's rest of the shard "
        "goes to failure.on_failure.destination (naming the target; redrive --target replays it) and the "
        "children start for every target. Needs a destination.",
    )


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
    target: TargetConfig = Field(description="The table to write to; or give targets (a list) instead.")
    targets: list[TargetConfig] = Field(
        default_factory=list,
        max_length=16,
        description="Several tables fed from one read of the stream (fan-out: one reader per shard, one write "
        "pipeline, checkpoint and set of metrics per target); each entry has target's keys. Give target or targets.",
    )
    checkpoint: CheckpointConfig = CheckpointConfig()
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = Field(
        default="TRIM_HORIZON",
        description="Where a shard with no checkpoint starts: the oldest record kept, or only new ones.",
    )
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    reader: ReaderConfig = ReaderConfig()
    replication: ReplicationConfig = ReplicationConfig()
    failure: FailurePolicyConfig = FailurePolicyConfig()
    filters: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=10,
        description="Lambda FilterCriteria patterns, OR-ed; see docs/filters-and-transforms.md.",
    )
    filter_mode: Literal["lambda", "subset"] = Field(
        default="lambda",
        description="lambda: a change passes when it matches (as in Lambda; a delete, or a MODIFY leaving the"
        " filtered subset, is dropped and the replica keeps the item). subset: a change whose OldImage matched"
        " passes too, and one leaving the subset deletes the target item, so the replica holds the subset.",
    )
    filters_per_event_source_mapping: int = Field(
        default=5,
        ge=1,
        le=10,
        description="Lambda's quota 'Filters per event source mapping': 5 by default, up to 10 once raised.",
    )
    transforms: list[dict[str, Any]] = Field(
        default_factory=list, description="Transform steps applied in order; see docs/filters-and-transforms.md."
    )
    worker_id: str | None = Field(default=None, description="Lease owner name; default host:pid.")
    leases: LeaseConfig = LeaseConfig()
    fanout: FanOutConfig = FanOutConfig()

    @model_validator(mode="before")
    @classmethod
    def _target_or_targets(cls, data: object) -> object:
        return one_of_target_or_targets(data)

    @model_validator(mode="after")
    def _targets_distinct(self) -> Config:
        distinct_targets(self.targets)
        for index, target in enumerate(self.targets):
            same = (target.region, target.table, target.endpoint_url)
            if same == (self.source.region, self.source.table, self.source.endpoint_url):
                raise ValueError(f"targets[{index}] is the source table itself: every change would loop")
        if self.fanout.on_shard_end_while_detached == "dead_letter" and self.failure.on_failure.destination is None:
            raise ValueError(
                "fanout.on_shard_end_while_detached: dead_letter needs failure.on_failure.destination (where the "
                "detached target's records go): set one, or use wait"
            )
        if self.fan_out and self.failure.parallelization_factor > 1:
            # The fan-out reader hands out one batch at a time and each target writes one at a time
            # (runtime/shard_fanout.py): the setting would be silently ignored.
            raise ValueError(
                "failure.parallelization_factor above 1 is not supported with several targets (each target "
                "writes a shard's batches one at a time): set it to 1, or run one worker per target"
            )
        return self

    @model_validator(mode="after")
    def _filters_within_quota(self) -> Config:
        for where, filters in self._each_target("filters"):
            if len(filters) > self.filters_per_event_source_mapping:
                raise ValueError(
                    f"{where}: {len(filters)} filters, above filters_per_event_source_mapping"
                    f" ({self.filters_per_event_source_mapping}, Lambda's quota); after raising the quota"
                    " (up to 10), set filters_per_event_source_mapping"
                )
        return self

    def _each_target(self, key: Literal["filters", "transforms"]) -> list[tuple[str, list[dict[str, Any]]]]:
        """Each target's effective ``filters``/``transforms``, with where they were given (for messages)."""
        out: list[tuple[str, list[dict[str, Any]]]] = [(key, getattr(self, key))]
        for index, target in enumerate(self.targets):
            own = getattr(target, key)
            if own is not None:
                out.append((f"targets[{index}].{key}", own))
        return out

    def for_target(self, target: TargetConfig) -> Config:
        """Return the configuration as if ``target`` were its only target: what its write pipeline reads.

        The target's own ``filters``/``transforms`` replace the top-level ones. Not validated again: every
        target's effective settings were validated with the whole configuration.
        """
        update: dict[str, Any] = {"target": target, "targets": [target]}
        if target.filters is not None:
            update["filters"] = target.filters
        if target.transforms is not None:
            update["transforms"] = target.transforms
        return self.model_copy(update=update)

    @property
    def fan_out(self) -> bool:
        """Whether one read feeds several targets."""
        return len(self.targets) > 1

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
        for where, transforms in self._each_target("transforms"):
            _keeps_timestamp(where, transforms, ts)
        return self

    @field_validator("filters", mode="before")
    @classmethod
    def _filters_may_be_json(cls, value: object) -> object:
        return filters_may_be_json(value)

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


def _keeps_timestamp(where: str, transforms: list[dict[str, Any]], ts: str) -> None:
    """Refuse a transform that removes ``timestamp_attribute`` from target items (see the caller)."""
    for index, spec in enumerate(transforms):
        kind, attributes = spec.get("type"), spec.get("attributes")
        dropped = (
            (kind == "include" and isinstance(attributes, list) and ts not in attributes)
            or (kind == "exclude" and isinstance(attributes, list) and ts in attributes)
            or (kind in ("rename", "map_keys") and isinstance(attributes, dict) and ts in attributes)
        )
        if dropped:
            raise ValueError(
                f"{where}[{index}] ({kind}) removes replication.timestamp_attribute {ts!r} from the "
                f"target items, which disables last-writer-wins (an older replayed write would win): keep "
                f"{ts!r} in the target (list it in include, leave it out of exclude and rename), or unset "
                "replication.timestamp_attribute"
            )


def load_config(path: Path | str | None, environ: dict[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError naming the key, its source and what is wrong.

    ``path`` may be None to configure from the environment alone (the Lambda handler does this);
    ``environ`` replaces ``os.environ`` (tests). See ``replicator.core.config_load``.
    """
    from replicator.core.config_load import load  # noqa: PLC0415 - that module imports this one

    return load(path, environ)

"""A target table's configuration: one under ``target:``, or several under ``targets:`` (fan-out).

Kept apart from ``config.py`` because a target is also the unit of fan-out: its ``name`` keys its
checkpoints, metrics and dead letters, and its own ``filters``/``transforms`` replace the top-level ones.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STRICT = ConfigDict(extra="forbid", frozen=True)

TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def filters_may_be_json(value: object) -> object:
    """Accept Lambda's FilterCriteria form too: each pattern a JSON string."""
    if isinstance(value, list):
        return [yaml.safe_load(v) if isinstance(v, str) else v for v in value]
    return value


class TargetConfig(BaseModel):
    """Where changes are written to."""

    model_config = STRICT

    name: str | None = Field(
        default=None,
        pattern=TARGET_NAME_PATTERN,
        description="This target's name in checkpoints, metrics, status and dead letters; default: its region. "
        "Renaming a target of a running worker starts its checkpoints afresh.",
    )
    region: str = Field(min_length=1, description="The target table's region.")
    table: str = Field(min_length=3, max_length=255, description="The target table: same key schema (or map_keys).")
    endpoint_url: str | None = Field(default=None, description="Another endpoint (DynamoDB Local, a VPC endpoint).")
    max_concurrent_writes: int = Field(
        default=64, ge=1, le=1024, description="Conditional writes in flight at once, over all shards of a worker."
    )
    adaptive_concurrency: bool = Field(
        default=True,
        description="Cut the writes in flight by 0.7 on a throttle and grow them back by one per window of "
        "successes (AIMD, shared by the worker's shards); false: always max_concurrent_writes.",
    )
    max_writes_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Cap target write attempts (retries included) at this rate per worker; default: no cap.",
    )
    lean_writes: bool = Field(
        default=True,
        description="Send target PutItem/DeleteItem as signed HTTP requests of our own (aws.LeanDynamoDB) "
        "instead of through botocore's per-call machinery: a third of the CPU per record; false: botocore.",
    )
    role_arn: str | None = Field(default=None, description="Assume this role for target writes (cross-account).")
    external_id: str | None = Field(
        default=None,
        min_length=2,
        max_length=1224,
        pattern=r"^[\w+=,.@:/-]+$",
        description="The ExternalId the target account's role requires (its trust policy's sts:ExternalId "
        "condition), sent with AssumeRole; needs target.role_arn.",
    )
    filters: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=10,
        description="This target's own FilterCriteria patterns, instead of the top-level filters (unset: those).",
    )
    transforms: list[dict[str, Any]] | None = Field(
        default=None,
        description="This target's own transform steps, instead of the top-level transforms (unset: those).",
    )

    @property
    def target_id(self) -> str:
        """The name that keys this target's checkpoints, metrics and dead letters: ``name``, else the region."""
        return self.name or self.region

    @field_validator("filters", mode="before")
    @classmethod
    def _filters_may_be_json(cls, value: object) -> object:
        return filters_may_be_json(value)

    @model_validator(mode="after")
    def _external_id_needs_role(self) -> TargetConfig:
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("target.external_id needs target.role_arn (the role whose trust policy asks for it)")
        return self


def one_of_target_or_targets(data: object) -> object:
    """Normalise the input: ``targets`` always lists every target, ``target`` is the first.

    ``target:`` (one) is the common case and stays valid; ``targets:`` (a list) fans one read out to each.
    Code that writes must go through ``Config.for_target`` for each of ``Config.targets``.
    """
    if not isinstance(data, dict):
        return data
    has_target, targets = "target" in data, data.get("targets")
    if has_target and targets is not None:
        return _both_given(data, targets)
    if has_target:
        return {**data, "targets": [data["target"]]}
    if isinstance(targets, list) and targets:
        return {**data, "target": targets[0]}
    if targets is not None and not targets:
        raise ValueError("targets is empty: list at least one target table (or give target)")
    # Neither: pydantic reports target as a required key.
    return data


def _both_given(data: dict[str, Any], targets: object) -> dict[str, Any]:
    """``target`` beside ``targets``: a dump of a validated Config, or one target edited (see below)."""
    # A dump of a validated Config (model_dump) holds both: targets[0] is target. With one target, an
    # edited target (a dump updated, an environment variable) is what is meant.
    if isinstance(targets, list) and len(targets) == 1:
        only, edit = targets[0], data["target"]
        if isinstance(only, dict) and isinstance(edit, dict):
            # A partial target (one environment variable) edits the one entry, key by key.
            merged = {**only, **edit}
            return {**data, "target": merged, "targets": [merged]}
        return {**data, "targets": [edit]}
    if isinstance(targets, list) and targets and _same(targets[0], data["target"]):
        return data
    raise ValueError("give target (one table) or targets (a list of tables), not both")


def _same(a: object, b: object) -> bool:
    """Whether two target entries (dicts or TargetConfig) are the same target."""
    as_dict = [x.model_dump() if isinstance(x, TargetConfig) else x for x in (a, b)]
    return as_dict[0] == as_dict[1]


def distinct_targets(targets: list[TargetConfig]) -> None:
    """Refuse two targets with one name, or one table twice (its writes would race each other's checkpoints)."""
    seen_ids: set[str] = set()
    seen_tables: set[tuple[str, str, str | None]] = set()
    for index, target in enumerate(targets):
        if target.target_id in seen_ids:
            raise ValueError(
                f"targets[{index}]: the name {target.target_id!r} is taken by an earlier target (the default name "
                "is the region): give each target a distinct name"
            )
        table = (target.region, target.table, target.endpoint_url)
        if table in seen_tables:
            raise ValueError(f"targets[{index}]: table {target.table!r} in {target.region} is listed twice")
        seen_ids.add(target.target_id)
        seen_tables.add(table)

"""The per-record pipeline: classify, filter, strip markers, transform, then version for the writer.

Pure and synchronous (no I/O), so the service, the Lambda handler, ``redrive`` and ``backfill`` all run
the very same decisions. Each record comes out as a ``Write`` for the conditional writer or as the
outcome that ends it (``echo_skipped``, ``ttl_skipped``, ``filtered``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Literal

from replicator.core.config import Config, ReplicationConfig
from replicator.core.errors import RecordRejectedError
from replicator.core.records import ChangeRecord
from replicator.pipeline import version as versions
from replicator.pipeline.filters import CompiledFilters, compile_filters
from replicator.pipeline.origin import classify, strip_markers
from replicator.pipeline.transform_specs import build_transforms
from replicator.pipeline.transforms import Stage, apply_transforms
from replicator.sink.writer import Write

SkipOutcome = Literal["echo_skipped", "ttl_skipped", "filtered"]


class Pipeline:
    """Decides, record by record, what reaches the target and in what shape."""

    def __init__(
        self,
        *,
        replication: ReplicationConfig,
        origin_region: str,
        filters: CompiledFilters,
        transforms: Sequence[Stage],
        filter_mode: Literal["lambda", "subset"] = "lambda",
    ) -> None:
        """Assemble compiled stages; no I/O."""
        self.replication = replication
        self.origin_region = origin_region
        self.filters = filters
        self.filter_mode = filter_mode
        self.transforms = list(transforms)
        self._markers = replication.marker_attributes

    @classmethod
    def from_config(cls, cfg: Config, *, clock: Callable[[], float] = time.time) -> Pipeline:
        """Compile filters and transforms once; raises ConfigError/FilterError naming the bad entry."""
        filters = compile_filters(cfg.filters, max_filters=cfg.filters_per_event_source_mapping)
        if cfg.filter_mode == "lambda":
            filters.warnings.extend(
                f"filters[{index}] matches on NewImage: a delete of a replicated item, or a MODIFY that leaves"
                " the filtered subset, does not match and is dropped (as in Lambda), so the replica keeps items"
                " the source deleted or moved out; set filter_mode: subset to remove them from the replica too"
                for index in filters.new_image_patterns()
            )
        return cls(
            replication=cfg.replication,
            origin_region=cfg.source.region,
            filters=filters,
            filter_mode=cfg.filter_mode,
            transforms=build_transforms(
                cfg.transforms,
                marker_attributes=cfg.replication.marker_attributes,
                source_region=cfg.source.region,
                clock=clock,
            ),
        )

    def run(self, record: ChangeRecord) -> Write | SkipOutcome:
        """Return the write this record asks for, or the outcome that ends it here.

        Raises TransformError when a transform fails (the failure policy decides what follows).
        """
        cfg = self.replication
        origin = classify(record, cfg)
        if origin in ("echo", "tombstone_gc"):
            if cfg.skip_echoes:
                return "echo_skipped"
        elif origin == "ttl_delete" and cfg.ttl_deletes == "skip":
            return "ttl_skipped"
        leaves_subset = False
        if self.filters and not self.filters.matches(record.event):
            if self.filter_mode != "subset" or not self.filters.old_image_matches(record.event):
                return "filtered"
            # The item was in the replicated subset and is not now: the replica must lose it too.
            leaves_subset = record.event_name != "REMOVE"
        # The version is computed from the record as the source wrote it, before transforms may
        # rename or drop the timestamp attribute, and with the old markers still in the images.
        version, app_ts = versions.change_version(
            record,
            origin=self.origin_region,
            version_attribute=cfg.version_attribute,
            timestamp_attribute=cfg.timestamp_attribute,
            timestamp_unit=cfg.timestamp_unit,
            timestamp_marker_attribute=cfg.timestamp_marker_attribute,
        )
        clean = dataclasses.replace(
            record,
            new_image=strip_markers(record.new_image, self._markers),
            old_image=strip_markers(record.old_image, self._markers),
        )
        if leaves_subset:
            # Versioned by this change (above), so a later change bringing the item back wins over it.
            clean = dataclasses.replace(clean, event_name="REMOVE", new_image=None)
        out = apply_transforms(self.transforms, clean) if self.transforms else clean
        if out is None:
            return "filtered"
        item = out.new_image if out.event_name != "REMOVE" else None
        if item is None and out.event_name != "REMOVE":
            raise RecordRejectedError(
                f"{out.event_name} record at shard {out.shard_id} sequence {out.sequence_number} has no NewImage"
            )
        ts = cfg.timestamp_attribute
        if ts is not None and item is not None and ts in (record.new_image or {}) and ts not in item:
            # Config validation refuses the built-in transforms that do this; a plugin is checked here.
            # Without it in the target, last-writer-wins lets any older write replace this one.
            raise RecordRejectedError(
                f"record at shard {out.shard_id} sequence {out.sequence_number}: the transforms removed "
                "replication.timestamp_attribute from the item; keep it in the plugin's output"
            )
        return Write(keys=out.keys, item=item, version=version, app_timestamp_us=app_ts, record=out)

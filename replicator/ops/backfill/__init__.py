"""Backfill: copy a source table's current items into the target through the replication pipeline.

- ``scan.py``: the engine (``Backfill``), a parallel Scan whose items run through the pipeline and the
  conditional writer as synthetic INSERT records, versioned so a stale copy never beats a streamed change;
- ``progress.py``: where segment progress is saved between runs (a JSON file, or the checkpoint table);
- ``ratelimit.py``: the token bucket behind ``--rate``;
- ``run.py``: ``run_backfill``, the wiring from a configuration (clients, stores, processor, progress bar);
  ``run_backfill_targets``, the same for each target of ``targets:``.
"""

from replicator.ops.backfill.progress import (
    BackfillError,
    DynamoDBProgressStore,
    JsonProgressStore,
    ProgressStore,
    SegmentProgress,
    default_progress_path,
)
from replicator.ops.backfill.ratelimit import TokenBucket
from replicator.ops.backfill.run import run_backfill, run_backfill_targets, table_key_names
from replicator.ops.backfill.scan import (
    DEFAULT_SAFETY_MARGIN_S,
    MAX_PAGE_ITEMS,
    Backfill,
    BackfillSettings,
    BackfillSummary,
)

__all__ = [
    "DEFAULT_SAFETY_MARGIN_S",
    "MAX_PAGE_ITEMS",
    "Backfill",
    "BackfillError",
    "BackfillSettings",
    "BackfillSummary",
    "DynamoDBProgressStore",
    "JsonProgressStore",
    "ProgressStore",
    "SegmentProgress",
    "TokenBucket",
    "default_progress_path",
    "run_backfill",
    "run_backfill_targets",
    "table_key_names",
]

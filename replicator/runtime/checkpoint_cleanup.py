"""Finished shards' checkpoints are deleted once nothing can need them again, with or without leases.

Every ``leases.cleanup_interval_s`` the coordinator hands its listing of the stream to the checkpoint
store's ``delete_finished``, which applies the lease cleanup's rule (``checkpoint.retention``): ended at
least ``leases.finished_retention_s`` ago, no longer listed, every child started, its parents' gone.
Stored checkpoints then follow the open shards, not the stream's history. With leases the lease cleanup
deletes the items (``LeaseManager.cleanup_if_due``) and the leased store's ``delete_finished`` does nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from replicator.core.errors import error_code

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator.checkpoint import CheckpointStore
    from replicator.core.config import LeaseConfig
    from replicator.source.shards import ShardTree

log = structlog.get_logger(__name__)


class CheckpointCleanup:
    """Calls the store's ``delete_finished`` every cleanup interval."""

    def __init__(
        self,
        cfg: LeaseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Read the interval and retention; the first sweep is one interval after start. No I/O."""
        self.interval_s = cfg.cleanup_interval_s
        self.retention_s = cfg.finished_retention_s
        self._clock = clock
        self._wall = wall
        self._next_s = clock() + self.interval_s

    async def run_if_due(self, store: CheckpointStore, stream_arn: str, tree: ShardTree) -> list[str]:
        """Delete what may go when the interval passed; return the deleted shard ids.

        A failure is logged and left to the next interval: cleanup is housekeeping.
        """
        if self._clock() < self._next_s:
            return []
        self._next_s = self._clock() + self.interval_s
        listed = {
            sid: tuple(p for p in (shard.parent_shard_id, shard.adjacent_parent_shard_id) if p is not None)
            for sid, shard in tree.shards.items()
        }
        try:
            deleted = await store.delete_finished(
                stream_arn, listed=listed, now_s=self._wall(), retention_s=self.retention_s
            )
        except Exception as exc:  # noqa: BLE001 - cleanup is housekeeping: the next interval tries again
            log.warning("checkpoint_cleanup_failed", error=type(exc).__name__, error_code=error_code(exc))
            return []
        if deleted:
            log.info("checkpoint_cleanup", deleted=len(deleted))
        return deleted

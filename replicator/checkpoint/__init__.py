"""Per-shard checkpoints: the contract every backend keeps.

A checkpoint is the sequence number of the last record of a shard that, with every record before it in
that shard, has reached its outcome (written to the target, superseded, filtered, skipped or
dead-lettered). Reading resumes AFTER_SEQUENCE_NUMBER of it, so delivery is at-least-once: records after
the last saved checkpoint are read again after a crash, and last-writer-wins makes the replay harmless.

Fan-out (several ``targets:``): the checkpoint also holds each target's own position (``targets``: target
id to the last record done for that target), saved in the same write as the shard's sequence number,
which stays the reader's position: the slowest target's. With one target ``targets`` is empty and nothing
new is stored. A target missing from ``targets`` (added later, or none done yet) is at ``sequence_number``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """The stored progress of one shard."""

    shard_id: str
    sequence_number: str | None
    """Last record done; None when the shard was opened but nothing is done yet."""
    shard_end: bool
    """The shard is closed and every record in it is done: its children may start."""
    updated_at_s: float
    parent_shard_id: str | None = None
    owner: str | None = None
    lease_counter: int = 0
    targets: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    """Fan-out: each target's last record done (target id to sequence number); empty with one target."""

    def target_position(self, target_id: str) -> str | None:
        """Where ``target_id`` resumes: its own position, else the shard's (the slowest target's).

        Never before the shard's: a position behind it is left from an earlier run (a run with this target
        alone moved the shard's checkpoint on without the map), and records before the shard's position
        are not read again.
        """
        own = self.targets.get(target_id)
        seq = self.sequence_number
        if own is None or (seq is not None and int(own) < int(seq)):
            return seq
        return own


def for_one_target(checkpoint: Checkpoint | None, target_id: str) -> Checkpoint | None:
    """The checkpoint a single-target reader resumes from: its own fan-out position when it has one.

    After a run with several targets the shard's ``sequence_number`` is the slowest target's; the one
    target left resumes from its own (``Checkpoint.target_position``), not re-writing what it wrote.
    """
    if checkpoint is None or not checkpoint.targets:
        return checkpoint
    return dataclasses.replace(checkpoint, sequence_number=checkpoint.target_position(target_id))


class CheckpointStore(Protocol):
    """Where checkpoints live. One store serves one stream ARN (the ARN is part of the key).

    Contract:
    - ``start`` creates what the store needs (table, file) if missing; idempotent; call once.
    - ``save`` is idempotent: saving the same checkpoint twice is harmless. For one shard, calls come
      from one task, in order; a backend need not reorder out-of-order calls. A sequence number is
      saved only after its records reached their outcome: saving early would lose changes on a crash.
    - ``save`` raising means the checkpoint was not stored; the caller may retry, or stop the shard
      and let the records be read again. ``LeaseLostError`` means another worker owns the shard now:
      the caller must stop processing it without retrying.
    - ``targets`` (fan-out), when given, replaces the stored per-target positions in the same write as
      the sequence number (a lease's fencing covers both); None leaves them as they are.
    - ``load_all`` returns every stored checkpoint of the stream, by shard id.
    - ``delete_finished`` deletes the checkpoints of finished shards nothing can need again, by the rule
      lease cleanup applies (``retention.deletable``: ended ``retention_s`` before ``now_s``, not in
      ``listed``, every child started, its own parents' checkpoints gone), and returns those deleted.
      ``listed`` is the worker's last listing: every listed shard's parents, by shard id. Each delete
      holds only while the stored checkpoint still says shard end. Idempotent: a checkpoint already
      gone is no error, and calling again deletes nothing more until time or the listing moves on.
      Raising means some deletes may not have happened (each one done is safe alone); the caller
      tries again at its next interval. A store whose checkpoints are lease items deletes nothing
      here: the lease cleanup (``LeaseManager.cleanup_if_due``) does, so no sweep runs twice.
    - ``close`` releases connections; no call may follow it.
    """

    async def start(self) -> None:
        """Create tables/files if missing."""
        ...

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint stored for the stream."""
        ...

    async def save(
        self,
        stream_arn: str,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool = False,
        parent_shard_id: str | None = None,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        """Store a shard's progress durably."""
        ...

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        """Delete finished shards' checkpoints nothing can need again; return their shard ids."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...

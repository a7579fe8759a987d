"""Shard lineage: which shards exist, which are closed, and which may start (parent before child).

Pure data, no I/O: the coordinator feeds it DescribeStream pages and checkpoints (anything with a
``shard_end`` flag: this package sits below the checkpoint store), and asks which shards are ready. A
child starts only after its parent is fully read (checkpointed at shard end), so changes to one key,
which move to a child shard on a split or rollover, are applied in source order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Protocol


class ShardProgress(Protocol):
    """How far a shard has been read, as far as lineage cares (a ``Checkpoint`` is one)."""

    @property
    def shard_end(self) -> bool:
        """True once the shard has been read to its end and checkpointed there."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Shard:
    """One shard as DescribeStream (or ListShards) describes it."""

    shard_id: str
    parent_shard_id: str | None
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None
    adjacent_parent_shard_id: str | None = None
    """Kinesis only: the other parent of a shard made by merging two shards."""

    @property
    def closed(self) -> bool:
        """A closed shard has an ending sequence number: it gets no new records."""
        return self.ending_sequence_number is not None

    @classmethod
    def from_api(cls, raw: Mapping[str, object]) -> Shard:
        """Build from a DescribeStream/ListShards shard description."""
        rng = raw.get("SequenceNumberRange") or {}
        assert isinstance(rng, Mapping)  # noqa: S101 - botocore's shape
        parent = raw.get("ParentShardId")
        adjacent = raw.get("AdjacentParentShardId")
        return cls(
            shard_id=str(raw["ShardId"]),
            parent_shard_id=str(parent) if parent else None,
            starting_sequence_number=rng.get("StartingSequenceNumber"),
            ending_sequence_number=rng.get("EndingSequenceNumber"),
            adjacent_parent_shard_id=str(adjacent) if adjacent else None,
        )


class ShardTree:
    """The known shards of a stream and their lineage."""

    def __init__(self) -> None:
        """Start empty."""
        self.shards: dict[str, Shard] = {}

    def update(self, shards: Iterable[Shard]) -> list[Shard]:
        """Merge a discovery; return the shards not seen before (a shard may also become closed)."""
        new = []
        for shard in shards:
            if shard.shard_id not in self.shards:
                new.append(shard)
            self.shards[shard.shard_id] = shard
        return new

    def prune(self, listed: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
        """Forget shards the stream no longer lists (trimmed), except ``keep``; return those forgotten.

        Memory then follows the listed shards, not the stream's history. A forgotten parent counts as
        done for its children, as a parent never seen does (``ready``).
        """
        still = set(listed) | set(keep)
        gone = [sid for sid in self.shards if sid not in still]
        for sid in gone:
            del self.shards[sid]
        return gone

    def ready(
        self, checkpoints: Mapping[str, ShardProgress], active: Iterable[str], *, unordered: Iterable[str] = ()
    ) -> list[Shard]:
        """Shards that may start now: not finished, not running, and whose parent is done.

        A parent is done when its checkpoint says shard end, or when it is no longer in the stream
        (trimmed after 24 h: nothing of it is left to read, so waiting would block the child forever).
        Shards in ``unordered`` wait for no parent (read from LATEST: their parents' records are not wanted).
        """
        running = set(active)
        free = set(unordered)
        out = []
        for shard in self.shards.values():
            if shard.shard_id in running:
                continue
            cp = checkpoints.get(shard.shard_id)
            if cp is not None and cp.shard_end:
                continue
            if shard.shard_id not in free and self.parent_pending(shard, checkpoints):
                continue
            out.append(shard)
        # Oldest first: parents are listed before children by the API, keep that order stable.
        return sorted(out, key=lambda s: (s.starting_sequence_number or "").rjust(128, "0"))

    def parents_ending_above(self, shard: Shard) -> list[Shard]:
        """The listed parents whose sequence number range ends at or above where ``shard``'s starts.

        Versions break a timestamp tie with the sequence number. DynamoDB Streams and Kinesis document a
        shard's SequenceNumberRange as the range of its possible sequence numbers, and nothing across
        shards. A child whose range starts above each parent's end has every record above every record
        of its parents, so ties across the rollover order as the changes were made; one listed here not.
        """
        out: list[Shard] = []
        for parent_id in (shard.parent_shard_id, shard.adjacent_parent_shard_id):
            parent = self.shards.get(parent_id) if parent_id is not None else None
            if parent is None:
                continue  # not listed (trimmed, or never seen): nothing to check against
            start, end = shard.starting_sequence_number, parent.ending_sequence_number
            if not (start and end and start.isdigit() and end.isdigit()):
                continue  # an open parent, or numbers the API would never give
            if int(start) <= int(end):
                out.append(parent)
        return out

    def parent_pending(self, shard: Shard, checkpoints: Mapping[str, ShardProgress]) -> bool:
        """Say whether a parent of the shard (either, after a merge) is known and not yet fully read."""
        for parent in (shard.parent_shard_id, shard.adjacent_parent_shard_id):
            if parent is None or parent not in self.shards:
                continue
            cp = checkpoints.get(parent)
            if not (cp is not None and cp.shard_end):
                return True
        return False

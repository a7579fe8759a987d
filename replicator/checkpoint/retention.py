"""When a finished shard's checkpoint may be deleted: one rule for lease items and plain checkpoints.

A finished shard's checkpoint goes once nothing can need it again:

- **retention**: the shard ended at least ``retention_s`` ago (the stream's retention). Until then the
  shard may still be listed, and a reader that lags behind must find its checkpoint, not read it again;
- **listing**: the shard is no longer in the worker's listing of the stream, for the same reason;
- **children**: every child has started (a child starts only after its parents ended, so from then on
  the children answer "did the parent finish?": the coordinator's trimmed-parent check skips them);
- **parents**: its own parents' checkpoints are gone (oldest first), so a lineage is never left with a
  hole a restart could read as a lost parent.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from replicator.checkpoint import Checkpoint


class ShardRecord(Protocol):
    """What the rule reads of a stored shard (a lease item, or a checkpoint)."""

    @property
    def shard_id(self) -> str:
        """The shard."""
        ...

    @property
    def shard_end(self) -> bool:
        """Read to its end."""
        ...

    @property
    def updated_at_s(self) -> float:
        """Wall-clock time of the last save: for a finished shard, when it ended."""
        ...

    @property
    def parents(self) -> tuple[str, ...]:
        """The shard's parents."""
        ...

    @property
    def started(self) -> bool:
        """Reading of the shard began (its parents ended)."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Record:
    shard_id: str
    shard_end: bool
    updated_at_s: float
    parents: tuple[str, ...]
    started: bool


def deletable(
    items: Iterable[ShardRecord],
    *,
    listed_children: Mapping[str, Iterable[str]],
    now_s: float,
    retention_s: float,
) -> list[str]:
    """The finished shards whose record may be deleted now, parents before children.

    ``listed_children``: the children of each listed shard as the stream lists them (a listed child
    without record has not started). ``now_s`` is wall-clock time, as ``updated_at_s`` is.
    """
    by_id = {item.shard_id: item for item in items}
    children: dict[str, list[str]] = defaultdict(list)
    for item in by_id.values():
        for parent in item.parents:
            children[parent].append(item.shard_id)
    out: list[str] = []
    # Ended earliest first: a parent ends before its children, so it is deleted first in one sweep.
    for item in sorted(by_id.values(), key=lambda i: (i.updated_at_s, i.shard_id)):
        sid = item.shard_id
        if not item.shard_end or sid in listed_children or now_s - item.updated_at_s < retention_s:
            continue
        if any(parent in by_id for parent in item.parents):
            continue
        kids = set(children.get(sid, ())) | set(listed_children.get(sid, ()))
        if all(kid in by_id and by_id[kid].started for kid in kids):
            out.append(sid)
            del by_id[sid]
    return out


def finished_checkpoints_to_delete(
    checkpoints: Mapping[str, Checkpoint],
    *,
    listed: Mapping[str, Sequence[str]],
    now_s: float,
    retention_s: float,
) -> list[str]:
    """``deletable`` for plain checkpoints; ``listed``: every listed shard's parents, by shard id.

    A checkpoint without a position and short of shard end is no progress: its shard has not started.
    A listed shard without checkpoint is a child not started yet, even when its parent is no longer listed.
    """
    records: dict[str, _Record] = {
        sid: _Record(sid, shard_end=False, updated_at_s=0.0, parents=tuple(parents), started=False)
        for sid, parents in listed.items()
    }
    for sid, cp in checkpoints.items():
        own: tuple[str, ...] = (cp.parent_shard_id,) if cp.parent_shard_id is not None else ()
        lineage = tuple(listed[sid]) if sid in listed else own
        started = cp.sequence_number is not None or cp.shard_end
        records[sid] = _Record(sid, cp.shard_end, cp.updated_at_s, lineage, started)
    children: dict[str, list[str]] = {sid: [] for sid in listed}
    for sid, parents in listed.items():
        for parent in parents:
            if parent in children:
                children[parent].append(sid)
    return deletable(records.values(), listed_children=children, now_s=now_s, retention_s=retention_s)

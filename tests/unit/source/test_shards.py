"""source.shards: which shards may start, by lineage, from their parents' progress."""

from __future__ import annotations

import dataclasses

from replicator.checkpoint import Checkpoint
from replicator.source.shards import Shard, ShardTree


def _cp(shard_id: str, *, end: bool) -> Checkpoint:
    return Checkpoint(shard_id, "1", shard_end=end, updated_at_s=0.0)


@dataclasses.dataclass(frozen=True)
class _Progress:
    shard_end: bool


def test_tree_child_waits_for_parent() -> None:
    """A child is not ready until its parent is checkpointed at shard end."""
    tree = ShardTree()
    tree.update([Shard("p", None, "1", "5"), Shard("c", "p", "6")])
    assert [s.shard_id for s in tree.ready({}, [])] == ["p"]
    assert [s.shard_id for s in tree.ready({"p": _cp("p", end=False)}, [])] == ["p"]
    assert [s.shard_id for s in tree.ready({"p": _cp("p", end=True)}, [])] == ["c"]


def test_tree_child_of_trimmed_parent_is_ready() -> None:
    """A parent no longer in the stream (trimmed) does not block its child."""
    tree = ShardTree()
    tree.update([Shard("c", "gone", "6")])
    assert [s.shard_id for s in tree.ready({}, [])] == ["c"]


def test_tree_skips_running_and_finished() -> None:
    """Running shards and finished shards are not offered again."""
    tree = ShardTree()
    tree.update([Shard("a", None, "1"), Shard("b", None, "2", "3")])
    assert tree.ready({"b": _cp("b", end=True)}, ["a"]) == []


def test_any_progress_with_a_shard_end_flag_will_do() -> None:
    """Lineage reads only ``shard_end``: the tree needs no checkpoint store (which sits above it)."""
    tree = ShardTree()
    tree.update([Shard("p", None, "1", "5"), Shard("c", "p", "6")])
    assert [s.shard_id for s in tree.ready({"p": _Progress(shard_end=True)}, [])] == ["c"]
    assert tree.parent_pending(Shard("c", "p", "6"), {"p": _Progress(shard_end=False)})


def test_a_merged_shard_waits_for_both_parents() -> None:
    """A child of a merge starts only when its parent AND its adjacent parent are read to the end."""
    tree = ShardTree()
    tree.update(
        [
            Shard.from_api(
                {
                    "ShardId": "p1",
                    "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "5"},
                }
            ),
            Shard.from_api(
                {
                    "ShardId": "p2",
                    "SequenceNumberRange": {"StartingSequenceNumber": "2", "EndingSequenceNumber": "6"},
                }
            ),
            Shard.from_api(
                {
                    "ShardId": "c",
                    "ParentShardId": "p1",
                    "AdjacentParentShardId": "p2",
                    "SequenceNumberRange": {"StartingSequenceNumber": "7"},
                }
            ),
        ]
    )
    one_done = {"p1": Checkpoint("p1", "5", shard_end=True, updated_at_s=0)}
    assert [s.shard_id for s in tree.ready(one_done, [])] == ["p2"]
    both_done = {**one_done, "p2": Checkpoint("p2", "6", shard_end=True, updated_at_s=0)}
    assert [s.shard_id for s in tree.ready(both_done, [])] == ["c"]


def test_parents_ending_above_a_child_are_the_rollovers_whose_order_is_not_documented() -> None:
    """A child starting above each parent's end is in order; a parent ending at or above its start is listed."""
    tree = ShardTree()
    tree.update(
        [
            Shard("p1", None, starting_sequence_number="100", ending_sequence_number="199"),
            Shard("p2", None, starting_sequence_number="150", ending_sequence_number="300"),
            Shard("open", None, starting_sequence_number="50"),
            Shard("after", "p1", starting_sequence_number="200"),
            Shard("merged", "p1", starting_sequence_number="250", adjacent_parent_shard_id="p2"),
            Shard("below", "p2", starting_sequence_number="00000000000000000000300"),
            Shard("of_open", "open", starting_sequence_number="10"),
            Shard("orphan", "trimmed", starting_sequence_number="1"),
        ]
    )
    assert tree.parents_ending_above(tree.shards["after"]) == []
    assert [p.shard_id for p in tree.parents_ending_above(tree.shards["merged"])] == ["p2"]
    assert [p.shard_id for p in tree.parents_ending_above(tree.shards["below"])] == ["p2"]  # compared as numbers
    assert tree.parents_ending_above(tree.shards["of_open"]) == []  # an open parent has no end yet
    assert tree.parents_ending_above(tree.shards["orphan"]) == []  # a parent no longer listed cannot be checked

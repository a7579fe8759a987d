"""Saved backfill progress: the JSON file and the checkpoint-table items, in their stored formats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.ops.backfill import BackfillError, DynamoDBProgressStore, JsonProgressStore, SegmentProgress

KEY = {"pk": {"B": b"\x00\xff"}, "sk": {"N": "1.50"}}
STORED_KEY = {"pk": {"B64": "AP8="}, "sk": {"N": "1.50"}}


async def test_json_progress_round_trips_binary_keys_and_refuses_other_segment_counts(tmp_path) -> None:
    """A LastEvaluatedKey with a B attribute survives the file; another --segments is refused."""
    store = JsonProgressStore(tmp_path / "p.json")
    key = {"pk": {"B": b"\x00\xff"}, "sk": {"N": "1.50"}}
    await store.save("T", 3, SegmentProgress(1, key, done=False, scanned=7))
    loaded = await JsonProgressStore(tmp_path / "p.json").load("T", 3)
    assert loaded == {1: SegmentProgress(1, key, done=False, scanned=7)}
    with pytest.raises(BackfillError, match="--segments 3"):
        await JsonProgressStore(tmp_path / "p.json").load("T", 4)
    assert await JsonProgressStore(tmp_path / "p.json").load("other", 4) == {}


async def test_json_progress_file_format(tmp_path) -> None:
    """The file maps table -> segments and per-segment progress; binary key parts are stored as B64."""
    path = tmp_path / "p.json"
    store = JsonProgressStore(path)
    await store.save("T", 3, SegmentProgress(1, KEY, done=False, scanned=7))
    await store.save("T", 3, SegmentProgress(2, None, done=True, scanned=4))
    doc = json.loads(path.read_text(encoding="utf-8"))
    for segment in doc["T"]["progress"].values():
        assert isinstance(segment.pop("updated_at"), float)
    assert doc == {
        "T": {
            "segments": 3,
            "progress": {
                "1": {"last_key": STORED_KEY, "done": False, "scanned": 7},
                "2": {"last_key": None, "done": True, "scanned": 4},
            },
        }
    }
    await store.clear("T")
    assert json.loads(path.read_text(encoding="utf-8")) == {}


class _Table:
    """A checkpoint-table client over a dict (PutItem, Query by hash key, DeleteItem)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    async def put_item(self, **kwargs: Any) -> dict[str, Any]:
        item = kwargs["Item"]
        self.items[item["streamArn"]["S"], item["shardId"]["S"]] = item
        return {}

    async def query(self, **kwargs: Any) -> dict[str, Any]:
        wanted = kwargs["ExpressionAttributeValues"][":s"]["S"]
        return {"Items": [item for (arn, _), item in sorted(self.items.items()) if arn == wanted]}

    async def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        del self.items[kwargs["Key"]["streamArn"]["S"], kwargs["Key"]["shardId"]["S"]]
        return {}


async def test_dynamodb_progress_items_round_trip_in_their_format() -> None:
    """One item per segment under backfill#<table>; the key is JSON with B64; other counts are refused."""
    client = _Table()
    store = DynamoDBProgressStore(client, "checkpoints")
    await store.save("T", 3, SegmentProgress(1, KEY, done=False, scanned=7))
    await store.save("T", 3, SegmentProgress(2, None, done=True, scanned=4))
    first = dict(client.items["backfill#T", "segment#00001"])
    assert isinstance(float(first.pop("updatedAt")["N"]), float)
    assert first == {
        "streamArn": {"S": "backfill#T"},
        "shardId": {"S": "segment#00001"},
        "segment": {"N": "1"},
        "segments": {"N": "3"},
        "shardEnd": {"BOOL": False},
        "scanned": {"N": "7"},
        "lastKey": {"S": json.dumps(STORED_KEY, sort_keys=True)},
    }
    assert "lastKey" not in client.items["backfill#T", "segment#00002"]
    assert await store.load("T", 3) == {
        1: SegmentProgress(1, KEY, done=False, scanned=7),
        2: SegmentProgress(2, None, done=True, scanned=4),
    }
    with pytest.raises(BackfillError, match="--segments 3"):
        await store.load("T", 4)
    await store.clear("T")
    assert client.items == {}

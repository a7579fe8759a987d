"""Scanned items as INSERT change records, so backfill and verify write them through the replication pipeline.

Backfill (copy) and verify (compare, repair) read items with Scan or GetItem and run each through the same
pipeline (filters, transforms, markers, versions) and conditional writer as streamed changes, as an INSERT
record in the Lambda event shape. What differs is where the record's version must land among the
streamed changes of the same key, and so its time, tie-breaker and old image (DESIGN.md, "Backfill"):

- backfill: a copy must lose to every change made after it was read. It is dated ``safety_margin_s``
  before its page was requested and loses ties (``BACKFILL_SEQUENCE``). Its old image is the item itself:
  the item is the source's state whoever wrote it last, so a replication marker it carries makes it an
  application change (never an echo), and its version is bumped past that marker as a streamed change's
  would be.
- verify: the record stands for the source's state now, to compare with or to correct the target. It is
  dated now and wins a tie with the change it corrects (``REPAIR_SEQUENCE``). The caller strips the
  item's markers and gives no old image: the item as the application wrote it, without a prior version.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from replicator.core.records import ChangeRecord, Item, from_lambda_event
from replicator.pipeline.version import TIEBREAK_DIGITS

BACKFILL_SEQUENCE = "0"
"""Tie-breaker of every backfilled version: the streamed copy of the same change (same time) wins."""
REPAIR_SEQUENCE = "9" * TIEBREAK_DIGITS
"""Tie-breaker of repair versions: a repair wins a tie with the change it corrects (same time, origin)."""
BACKFILL_EVENT_SOURCE = "replicator:backfill"
"""eventSource of a backfilled record, in its dead letter too: it was scanned, not read from a stream."""
STREAM_EVENT_SOURCE = "aws:dynamodb"
"""eventSource of verify's records: what a streamed record says, so filters see them as replication did."""


def synthetic_insert(
    item: Item,
    keys: Item,
    *,
    created_s: float,
    sequence_number: str,
    old_image: Item | None,
    shard_id: str,
    event_source: str,
) -> ChangeRecord:
    """Return an INSERT record whose new image is ``item``, as a stream would deliver it.

    ``created_s`` (ApproximateCreationDateTime) and ``sequence_number`` place the record's version
    (without an application timestamp: the time, then the tie-breaker). ``old_image`` is the state the
    change modified, as echo classification, transforms and the version's hybrid-clock bump see it; the
    event (what filters match and dead letters carry) stays an INSERT's, without OldImage. ``shard_id``
    names the record in logs and dead letters, as its shard and its eventID.
    """
    event: dict[str, Any] = {
        "eventID": shard_id,
        "eventName": "INSERT",
        "eventSource": event_source,
        "dynamodb": {
            "ApproximateCreationDateTime": created_s,
            "Keys": keys,
            "NewImage": item,
            "SequenceNumber": sequence_number,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    record = from_lambda_event(event, shard_id=shard_id)
    return record if old_image is None else dataclasses.replace(record, old_image=old_image)

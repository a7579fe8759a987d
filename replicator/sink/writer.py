"""The conditional writer: every target write is conditional on last-writer-wins.

The ConditionExpression is built from named clauses (below), so a reader can check each case. A failed
condition is an outcome (``superseded``: the target already holds a newer version), not an error.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from replicator.aws.lean import LeanDynamoDB, write_transport
from replicator.core.config import ReplicationConfig
from replicator.core.errors import RecordRejectedError, error_code, is_transient
from replicator.core.records import ChangeRecord, Item
from replicator.core.timestamps import app_timestamp_value

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

WriteOutcome = Literal["replicated", "superseded"]

# Errors that no retry can fix: the target refuses this one record (bad key type, item too large,
# an attribute the table's schema forbids). The record is poison; the failure policy isolates it.
_REJECTED_CODES = frozenset(
    {"ValidationException", "ItemCollectionSizeLimitExceededException", "SerializationException"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Write:
    """One change made ready for the target: the item to put (None: a delete) and its version."""

    keys: Item
    item: Item | None
    version: str
    app_timestamp_us: int | None
    record: ChangeRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A PutItem or DeleteItem request, as keyword arguments for the client."""

    operation: Literal["PutItem", "DeleteItem"]
    params: dict[str, Any]


class ConditionBuilder:
    """Builds the last-writer-wins ConditionExpression for one worker's (source, target) pair."""

    def __init__(self, cfg: ReplicationConfig, *, origin_region: str, target_region: str) -> None:
        """Fix the attribute names and the static tie rule; no I/O."""
        self._cfg = cfg
        # Two different origins with the same application timestamp: the greater region name wins, in
        # every replica. A local write in the target is from the target's region, so the tie rule for
        # it is known when this worker starts.
        self._incoming_wins_ties = origin_region > target_region

    def names(self, *, with_timestamp: bool) -> dict[str, str]:
        """ExpressionAttributeNames for the condition."""
        names = {"#ver": self._cfg.version_attribute}
        if self._cfg.timestamp_attribute is not None:
            names["#ts"] = self._cfg.timestamp_attribute
            if with_timestamp:
                names["#rts"] = self._cfg.timestamp_marker_attribute
        return names

    def over_replicated_only(self, key_name: str, *, with_timestamp: bool = False) -> tuple[str, dict[str, str]]:
        """The source-tombstone condition and its names: never replace an item the application wrote.

        The item is gone (the application deleted it), or holds an older replicated version; an item
        the application re-created since has no version marker and is left alone.
        """
        item_absent = "attribute_not_exists(#key)"
        older_replicated = "#ver < :ver"
        names = {"#key": key_name, "#ver": self._cfg.version_attribute}
        if not with_timestamp or self._cfg.timestamp_attribute is None:
            return f"{item_absent} OR {older_replicated}", names
        # With timestamps an UpdateItem keeps the old markers, so a version marker does not mean the last
        # write was replicated: a local write older than the delete (a replayed write the application
        # then updated) is replaced, one at or after it never (tests/unit/model found the case).
        names |= {"#ts": self._cfg.timestamp_attribute, "#rts": self._cfg.timestamp_marker_attribute}
        local_older = "(#ts < :ts AND (attribute_not_exists(#rts) OR #rts <> #ts))"
        replicated_older = "(#rts = #ts AND #ver < :ver)"
        return f"{item_absent} OR {local_older} OR {replicated_older}", names

    def still_upserted(
        self, timestamp_value: dict[str, Any], version_value: dict[str, Any] | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The condition for clearing a tombstone's flags: the item is still the upsert the record shows.

        Still flagged, its timestamp the upsert's (a later application write, with a greater
        timestamp, has its own record, which clears the flags in turn), and still the version marker
        the upsert kept: a tombstone replicated over the upsert since, with the same timestamp, won
        the tie and must stay (tests/unit/model found the case).
        """
        assert self._cfg.timestamp_attribute is not None  # noqa: S101 - only called with a timestamp
        names = {
            "#del": self._cfg.tombstone_attribute,
            "#ts": self._cfg.timestamp_attribute,
            "#ver": self._cfg.version_attribute,
        }
        values = {":true": {"BOOL": True}, ":ts": timestamp_value}
        if version_value is None:
            return "#del = :true AND #ts = :ts AND attribute_not_exists(#ver)", names, values
        values[":prev"] = version_value
        return "#del = :true AND #ts = :ts AND #ver = :prev", names, values

    def expression(self, *, with_timestamp: bool) -> str:
        """The condition; ``with_timestamp``: the incoming change carries the application timestamp."""
        # The target never saw a replicated version of this key (no item, or only local writes).
        never_replicated = "attribute_not_exists(#ver)"
        # The target's replicated version is older than this change's.
        older_version = "#ver < :ver"
        if self._cfg.timestamp_attribute is None:
            return f"{never_replicated} OR {older_version}"
        if not with_timestamp:
            # This change lacks the application timestamp: it may only replace items that lack one too.
            return f"attribute_not_exists(#ts) AND ({never_replicated} OR {older_version})"
        # No application timestamp to compare against: nothing the target holds is known to be newer.
        no_timestamp = "attribute_not_exists(#ts)"
        # The target's last write was local (its timestamp differs from the replicated copy)...
        last_write_local = "(attribute_not_exists(#rts) OR #rts <> #ts)"
        # ...and older than this change.
        local_older = f"(#ts < :ts AND {last_write_local})"
        # The target's last write was replicated: the full version decides (it starts with the timestamp).
        replicated_older = "(#rts = #ts AND #ver < :ver)"
        clauses = [no_timestamp, local_older, replicated_older]
        if self._incoming_wins_ties:
            # Same timestamp as a local write in the target: origin region breaks the tie.
            clauses.append(f"(#ts = :ts AND {last_write_local})")
        return " OR ".join(clauses)


class ConditionalWriter:
    """Writes changes to the target table with last-writer-wins conditions and replication markers."""

    def __init__(
        self,
        client: DynamoDBClient,
        *,
        lean: LeanDynamoDB | None = None,
        table: str,
        cfg: ReplicationConfig,
        origin_region: str,
        target_region: str,
        clock: Callable[[], float] = time.time,
        replace_local_writes: bool = True,
    ) -> None:
        """Bind the writer to a target table; no I/O.

        ``lean`` (``target.lean_writes``) sends the writes instead of ``client``'s botocore, unless a
        ``before-send`` handler on ``client`` intercepts PutItem or DeleteItem now.

        ``replace_local_writes`` False (the source-tombstone writer) never overwrites an item whose
        last write was local, whatever its timestamp: only an absent item or an older replicated version.
        """
        self._client = write_transport(client, lean)
        self._table = table
        self._cfg = cfg
        self._origin = origin_region
        self._conditions = ConditionBuilder(cfg, origin_region=origin_region, target_region=target_region)
        self._clock = clock
        self._replace_local_writes = replace_local_writes

    def request(self, write: Write) -> Request:
        """Build the conditional PutItem (or DeleteItem, with ``deletes: delete``) for a change."""
        cfg = self._cfg
        with_ts = cfg.timestamp_attribute is not None and write.app_timestamp_us is not None
        values: dict[str, Any] = {":ver": {"S": write.version}}
        markers: Item = {cfg.version_attribute: {"S": write.version}, cfg.origin_attribute: {"S": self._origin}}
        if with_ts:
            assert cfg.timestamp_attribute is not None  # noqa: S101 - narrowed by with_ts
            ts_value = (write.item or {}).get(cfg.timestamp_attribute) or app_timestamp_value(
                write.app_timestamp_us or 0, cfg.timestamp_unit
            )
            markers[cfg.timestamp_marker_attribute] = ts_value
            if write.item is None:
                markers[cfg.timestamp_attribute] = ts_value
        if self._replace_local_writes:
            condition = self._conditions.expression(with_timestamp=with_ts)
            names = self._conditions.names(with_timestamp=with_ts)
            if with_ts:
                values[":ts"] = markers[cfg.timestamp_marker_attribute]
        else:
            condition, names = self._conditions.over_replicated_only(next(iter(write.keys)), with_timestamp=with_ts)
            if "#ts" in names:
                values[":ts"] = markers[cfg.timestamp_marker_attribute]
        common = {
            "TableName": self._table,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if write.item is not None:
            return Request("PutItem", {"Item": {**write.item, **markers}, **common})
        if cfg.deletes == "delete":
            return Request("DeleteItem", {"Key": write.keys, **common})
        tombstone: Item = {
            **write.keys,
            **markers,
            cfg.tombstone_attribute: {"BOOL": True},
            cfg.expires_attribute: {"N": str(int(self._clock()) + cfg.tombstone_ttl_s)},
        }
        return Request("PutItem", {"Item": tombstone, **common})

    def revive_request(self, image: Item, version: str) -> Request | None:
        """Clear the tombstone flags of an item the application wrote over its tombstone (an upsert).

        DynamoDB's UpdateItem keeps the attributes it does not set, so an upsert on a tombstone keeps
        ``_rep_deleted`` and ``_rep_expires``: readers would skip the application's own write and TTL
        would remove it, while the other region has it live. ``image`` is the upsert's new image, as
        the source stream shows it; the version marker becomes the upsert's, so the stream record of
        this write is an echo. None without ``timestamp_attribute`` (nothing tells the upsert apart
        from a later write) or when the image carries no timestamp.
        """
        cfg = self._cfg
        ts_value = None if cfg.timestamp_attribute is None else image.get(cfg.timestamp_attribute)
        if ts_value is None or cfg.tombstone_attribute not in image:
            return None
        item = {k: v for k, v in image.items() if k not in (cfg.tombstone_attribute, cfg.expires_attribute)}
        item[cfg.version_attribute] = {"S": version}
        condition, names, values = self._conditions.still_upserted(ts_value, image.get(cfg.version_attribute))
        return Request(
            "PutItem",
            {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            },
        )

    async def revive(self, image: Item, version: str) -> WriteOutcome | None:
        """Send ``revive_request``; ``superseded`` when the item changed since; None when not needed."""
        req = self.revive_request(image, version)
        if req is None:
            return None
        try:
            await self._client.put_item(**req.params)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return "superseded"
            raise
        return "replicated"

    async def write(self, write: Write) -> WriteOutcome:
        """Write one change; ``superseded`` when the target already holds a newer version.

        Raises RecordRejectedError when the target refuses the record for good; transient errors
        (throttling, 5xx, connection) propagate unchanged for the caller's retry loop.
        """
        req = self.request(write)
        try:
            if req.operation == "PutItem":
                await self._client.put_item(**req.params)
            else:
                await self._client.delete_item(**req.params)
        except Exception as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                return "superseded"
            if code in _REJECTED_CODES and not is_transient(exc):
                raise RecordRejectedError(
                    f"target table {self._table} rejected the record at shard {write.record.shard_id} "
                    f"sequence {write.record.sequence_number}: {code}: {_message(exc)}"
                ) from exc
            raise
        return "replicated"


def _message(exc: BaseException) -> str:
    response: Any = getattr(exc, "response", {})
    return str(response.get("Error", {}).get("Message", exc))

"""Redrive from an SQS queue: receive dead letters in chunks, replay them, delete what is done.

Messages are received in chunks (invisible meanwhile) and deleted only after their record reached an
outcome; one that fails again is left in the queue and reappears after its visibility timeout.

- Parts of one letter may be in the queue twice (a retry after a crash sends them again under the same
  id): they are deleted with the letter; parts of a letter already replayed in this run, received later,
  are deleted as duplicates.
- DeleteMessageBatch and ChangeMessageVisibilityBatch report per-entry failures: entries failed on SQS's
  side are sent again (``ENTRY_ATTEMPTS`` in all); what still fails is counted and named by error code
  in the report. A letter whose messages were not all deleted is not counted as deleted: it reappears
  and is replayed again (harmless: last writer wins).
- FIFO queues hold back a message group while one of its messages is in flight: the parts of a letter
  still incomplete when the queue has nothing more to give are made visible again at once, so they do
  not wait out the visibility timeout (the next run gets them).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import TYPE_CHECKING, Any

import structlog

from replicator.core.retry import RetryPolicy
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from types_aiobotocore_sqs import SQSClient

    from replicator.ops.redrive import Redriver, RedriveReport

log = structlog.get_logger(__name__)

SQS_VISIBILITY_TIMEOUT_S = 900
SQS_CHUNK_DOCUMENTS = 500
ENTRY_ATTEMPTS = 5
"""Tries of a Delete/ChangeMessageVisibility batch entry that SQS failed on its side."""


@dataclasses.dataclass(slots=True)
class EntryFailures:
    """Batch entries SQS did not carry out after every attempt, by error code."""

    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    handles: set[str] = dataclasses.field(default_factory=set)


async def batched(
    call: Callable[..., Awaitable[Any]],
    queue_url: str,
    entries: list[dict[str, Any]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> EntryFailures:
    """Run a ``...Batch`` call over ``entries`` (10 a request); return the entries that failed for good.

    An entry failed as the sender's fault (e.g. an expired receipt handle) is not retried.
    """
    failures = EntryFailures()
    for start in range(0, len(entries), deadletter.SQS_BATCH_MAX):
        remaining = {str(i): e for i, e in enumerate(entries[start : start + deadletter.SQS_BATCH_MAX])}
        for attempt in range(1, ENTRY_ATTEMPTS + 1):
            resp = await call(QueueUrl=queue_url, Entries=[{"Id": i, **e} for i, e in remaining.items()])
            failed = resp.get("Failed") or []
            retry = {}
            for f in failed:
                entry = remaining.get(str(f.get("Id")))
                if entry is None:
                    continue
                if f.get("SenderFault") or attempt == ENTRY_ATTEMPTS:
                    failures.codes[str(f.get("Code"))] += 1
                    failures.handles.add(entry["ReceiptHandle"])
                else:
                    retry[str(f.get("Id"))] = entry
            if not retry:
                break
            remaining = retry
            await sleep(policy.delay_s(attempt))
    return failures


class SqsRedrive:
    """One redrive of one queue."""

    def __init__(
        self,
        redriver: Redriver,
        sqs: SQSClient,
        queue_url: str,
        report: RedriveReport,
        *,
        dry_run: bool,
        policy: RetryPolicy | None = None,
    ) -> None:
        """Wire the parts; no I/O."""
        self.redriver = redriver
        self.sqs = sqs
        self.queue_url = queue_url
        self.report = report
        self.dry_run = dry_run
        self.policy = policy or RetryPolicy(max_attempts=None, max_delay_s=5)
        self.assembler = deadletter.SqsAssembler()
        self.handles: dict[str, list[str]] = collections.defaultdict(list)
        self.replayed: set[str] = set()
        self.duplicates: list[str] = []

    async def approximate_messages(self) -> int | None:
        """The queue's approximate message count (for the progress bar), None when SQS does not say."""
        try:
            resp = await self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        except Exception:  # noqa: BLE001 - a guide for the bar only; the redrive itself does not need it
            return None
        return int(resp.get("Attributes", {}).get("ApproximateNumberOfMessages", 0)) or None

    async def run(self) -> None:
        """Receive, replay and delete until the queue has nothing more to give."""
        while docs := await self._receive_chunk():
            failed = await self.redriver.replay(docs)
            if self.dry_run:
                continue
            for doc in docs:
                # Parts of another sending that arrived after the letter completed went with its handles.
                self.assembler.forget(str(doc.get("id")))
            failed_ids = {str(d.get("id")) for d in failed}
            done_ids = list(dict.fromkeys(str(d.get("id")) for d in docs if str(d.get("id")) not in failed_ids))
            self.report.left_in_queue += len(failed_ids)
            for doc_id in failed_ids:
                # Left in the queue: it reappears after the visibility timeout; its handles are spent.
                self.handles.pop(doc_id, None)
            # Deleted only now that every record of the chunk reached its outcome.
            await self._delete({doc_id: self.handles.pop(doc_id, []) for doc_id in done_ids})
            self.replayed.update(done_ids)
        if self.duplicates and not self.dry_run:
            await self._delete_duplicates()
        if self.dry_run:
            # A dry run only looked: make every message it received visible again at once.
            every = [h for hs in self.handles.values() for h in hs] + self.duplicates
            await self._release(every)
        elif self.assembler.incomplete:
            incomplete = self.assembler.incomplete
            self.report.left_in_queue += len(incomplete)
            log.warning("dead_letter_parts_missing", ids=len(incomplete))
            if deadletter.is_fifo(self.queue_url):
                await self._release([h for doc_id in incomplete for h in self.handles.pop(doc_id, [])])

    async def _receive_chunk(self) -> list[dict[str, Any]]:
        """Receive up to a chunk of complete dead letters (their messages stay invisible meanwhile)."""
        docs: list[dict[str, Any]] = []
        while len(docs) < SQS_CHUNK_DOCUMENTS:
            resp = await self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=deadletter.SQS_BATCH_MAX,
                WaitTimeSeconds=1,
                VisibilityTimeout=SQS_VISIBILITY_TIMEOUT_S,
            )
            messages = resp.get("Messages") or []
            if not messages:
                break
            for msg in messages:
                try:
                    doc_id, doc = self.assembler.add(msg["Body"])
                except (ValueError, KeyError, deadletter.DeadLetterError) as exc:
                    self.report.unreadable += 1
                    log.error("dead_letter_unreadable", message_id=msg.get("MessageId"), error=str(exc))  # noqa: TRY400 - no traceback wanted
                    continue
                if doc_id in self.replayed:
                    # Already replayed and deleted in this run: another sending of the same letter.
                    self.assembler.forget(doc_id)
                    self.duplicates.append(msg["ReceiptHandle"])
                    continue
                self.handles[doc_id].append(msg["ReceiptHandle"])
                if doc is not None:
                    docs.append(doc)
        return docs

    async def _delete(self, by_doc: dict[str, list[str]]) -> None:
        entries = [{"ReceiptHandle": h} for hs in by_doc.values() for h in hs]
        failures = await batched(self.sqs.delete_message_batch, self.queue_url, entries, policy=self.policy)
        self.report.deleted_messages += len(entries) - len(failures.handles)
        self.report.not_deleted_codes.update(failures.codes)
        for doc_id, hs in by_doc.items():
            if failures.handles.intersection(hs):
                # Not all of it deleted: it reappears and is replayed again, so it is not reported as done.
                self.report.not_deleted += 1
                log.warning("dead_letter_not_deleted", id=doc_id, codes=sorted(failures.codes))

    async def _delete_duplicates(self) -> None:
        entries = [{"ReceiptHandle": h} for h in self.duplicates]
        failures = await batched(self.sqs.delete_message_batch, self.queue_url, entries, policy=self.policy)
        self.report.deleted_messages += len(entries) - len(failures.handles)
        self.report.duplicates_deleted += len(entries) - len(failures.handles)
        self.report.not_deleted_codes.update(failures.codes)
        self.report.not_deleted += len(failures.handles)

    async def _release(self, handles: list[str]) -> None:
        entries = [{"ReceiptHandle": h, "VisibilityTimeout": 0} for h in handles]
        failures = await batched(self.sqs.change_message_visibility_batch, self.queue_url, entries, policy=self.policy)
        self.report.not_released += len(failures.handles)
        self.report.not_released_codes.update(failures.codes)

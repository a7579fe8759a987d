"""How long an idle shard waits before its next GetRecords: adaptive backoff on consecutive empty reads.

DynamoDB Streams has no push: a shard learns of a new record only by polling, and every poll is a
billed read request (outside Lambda and Global Tables). An idle shard polled once a second costs 86,400
GetRecords a day; most shards of a large table are idle most of the time. So an empty read doubles the
wait before the next poll, from ``reader.poll_interval_s`` up to ``reader.max_idle_poll_interval_s``,
and the first read that returns records puts the shard back on the fast interval (4 polls/s, as Lambda).

The trade-off is measured in ``bench/idle_poll.py`` (bench/README): the idle cost falls as 1/max, and
the first record of a shard that wakes waits up to ``max`` for the next poll (p99 close to ``max``).

An empty read does not always mean the shard is idle: DynamoDB Streams' GetRecords "returns an empty
list" when the portion of the shard the iterator points to has no records, and "it might take multiple
calls to get to a portion of the shard that contains stream records" (API reference). A reader behind
the shard's tip (resuming from a checkpoint, or reading old records) would wait up to ``max`` at each
such call. So while a shard may be catching up (its first reads, or after a page whose newest record is
older than ``STALE_RECORD_S``) up to ``CATCH_UP_EMPTY_READS`` consecutive empty reads keep the fast
interval; a page of fresh records, or that many empty reads in a row, means the reader is at the tip.
"""

from __future__ import annotations

IDLE_START_S = 0.01
"""Where the growth starts when the fast interval is 0 (doubling 0 would poll an idle shard back to back)."""
CATCH_UP_EMPTY_READS = 8
"""Empty reads in a row kept on the fast interval while a shard may be behind its tip.

AWS documents no bound on how many empty portions precede records; 8 covers 2 s at 4 polls/s and costs
8 extra polls when a shard starts (once per shard life, ~4 h on DynamoDB Streams) or reads old records."""
STALE_RECORD_S = 120.0
"""A page whose newest record is older than this was read behind the tip (DynamoDB Local's stream times
are rounded down to the minute, so a fresh record there can look up to 60 s old)."""


class IdleBackoff:
    """The wait schedule of one shard: fast while records flow, doubling on each empty read up to a cap."""

    def __init__(self, *, fast_s: float, max_s: float, factor: float = 2.0) -> None:
        """``fast_s``: the busy interval; ``max_s``: the cap for an idle shard (at least ``fast_s``)."""
        self.fast_s = fast_s
        self.max_s = max(max_s, fast_s)
        self.factor = factor
        self._next_s = fast_s
        self._catch_up_reads = CATCH_UP_EMPTY_READS  # a shard's first reads may be behind its tip

    def after_empty(self) -> float:
        """An empty read: return the wait before the next poll, and grow the one after it (unless catching up)."""
        if self._catch_up_reads > 0:
            self._catch_up_reads -= 1
            return self._next_s
        delay_s = self._next_s
        self._next_s = min(self.max_s, max(delay_s * self.factor, self.fast_s, IDLE_START_S))
        return delay_s

    def after_records(self, newest_age_s: float | None = None) -> None:
        """A read returned records: the next empty read waits the fast interval again.

        ``newest_age_s``: how old the page's newest record is; older than ``STALE_RECORD_S``, the reader
        is behind the tip and the empty reads that follow may be empty portions, not idleness.
        """
        self._next_s = self.fast_s
        stale = newest_age_s is not None and newest_age_s > STALE_RECORD_S
        self._catch_up_reads = CATCH_UP_EMPTY_READS if stale else 0

    @property
    def idle_s(self) -> float:
        """The wait the next empty read will get."""
        return self._next_s

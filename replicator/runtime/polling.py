"""How long an idle shard waits before its next GetRecords: adaptive backoff on consecutive empty reads.

DynamoDB Streams has no push: a shard learns of a new record only by polling, and every poll is a
billed read request (outside Lambda and Global Tables). An idle shard polled once a second costs 86,400
GetRecords a day; most shards of a large table are idle most of the time. So an empty read doubles the
wait before the next poll, from ``reader.poll_interval_s`` up to ``reader.max_idle_poll_interval_s``,
and the first read that returns records puts the shard back on the fast interval (4 polls/s, as Lambda).

The trade-off is measured in ``bench/idle_poll.py`` (bench/README): the idle cost falls as 1/max, and
the first record of a shard that wakes waits up to ``max`` for the next poll (p99 close to ``max``).
"""

from __future__ import annotations

IDLE_START_S = 0.01
"""Where the growth starts when the fast interval is 0 (doubling 0 would poll an idle shard back to back)."""


class IdleBackoff:
    """The wait schedule of one shard: fast while records flow, doubling on each empty read up to a cap."""

    def __init__(self, *, fast_s: float, max_s: float, factor: float = 2.0) -> None:
        """``fast_s``: the busy interval; ``max_s``: the cap for an idle shard (at least ``fast_s``)."""
        self.fast_s = fast_s
        self.max_s = max(max_s, fast_s)
        self.factor = factor
        self._next_s = fast_s

    def after_empty(self) -> float:
        """An empty read: return the wait before the next poll, and grow the one after it."""
        delay_s = self._next_s
        self._next_s = min(self.max_s, max(delay_s * self.factor, self.fast_s, IDLE_START_S))
        return delay_s

    def after_records(self) -> None:
        """A read returned records: the next empty read waits the fast interval again."""
        self._next_s = self.fast_s

    @property
    def idle_s(self) -> float:
        """The wait the next empty read will get."""
        return self._next_s

"""Writes that must finish, or fail, before a cancellation of their caller goes on.

A conditional write that was sent may already be applied by DynamoDB when the task that sent it is
cancelled (shutdown cancels readers, the lease renewer and the coordinator). If the cancellation stopped
the wait for the answer, the caller's view of what is stored would go stale: a lease counter one behind
makes every later write of that lease fail its condition, and the lease looks lost. ``asyncio.shield``
alone (aiokafka shields its offset commits with it) keeps the write running but lets the caller go on
at once, still not knowing the outcome and having released any lock it held. ``complete_before_cancel``
also waits for the outcome, then lets the cancellation continue.

Each wait is bounded by the client's own timeouts (``aws.clients.client_config``: connect 3 s, read
10 s, no botocore retries), so a shutdown is delayed by at most one such call per write in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def complete_before_cancel(write: Awaitable[T]) -> T:
    """Await ``write`` to its end even if the caller is cancelled meanwhile, then re-raise the cancellation.

    Whatever ``write`` records about its outcome (a counter, a lock's release) is therefore done when
    this returns or raises. A cancellation of the caller wins over the write's own error; the write
    must record that error itself (it is not lost: ``write`` handled it before finishing).
    """
    task = asyncio.ensure_future(write)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if not task.done():
                cancelled = exc
                continue
            # The write ended in the same step (its outcome is recorded), or was itself cancelled
            # because the event loop is closing: nothing is left to wait for.
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not report it as never retrieved
            raise
        except Exception:
            # The write failed (and recorded it): the caller's cancellation is what goes on.
            if cancelled is not None:
                raise cancelled from None
            raise
        if cancelled is not None:
            raise cancelled
        return result

"""Background tasks that must not die unnoticed (the lease renewer): logged, counted and restarted.

A background task runs beside the coordinator and nobody awaits it; without supervision an exception
ends it silently (the lease renewer: leases stop being renewed and are lost one by one). Supervised, a
death is logged (``background_task_died``, the error type, never its message), counted in
``replicator_errors_total{kind="background_task_died"}`` and the task restarted after a pause. Restart
rather than exit: the renewer holds no state of its own (every pass renews what is held now), so a
fresh one is the same as the old; a death that repeats shows as a growing count, which the alert on
errors catches.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from replicator.observe.metrics import Metrics

log = structlog.get_logger(__name__)

RESTART_DELAY_S = 1.0
"""Pause before a dead background task is started again: a task failing at once does not spin."""


async def supervised(
    name: str, run: Callable[[], Awaitable[None]], *, metrics: Metrics, restart_delay_s: float = RESTART_DELAY_S
) -> None:
    """Run ``run`` until cancelled, restarting it whenever it raises or returns."""
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any death of a background task is counted and restarted
            error_type = type(exc).__name__
        else:
            error_type = "returned"
        metrics.errors.labels(kind="background_task_died").inc()
        log.error("background_task_died", task=name, error_type=error_type, action="restarting")
        await asyncio.sleep(restart_delay_s)

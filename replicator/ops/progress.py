"""The progress bar the long-running commands (``backfill``, ``redrive``) show on a terminal."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console


class ProgressBar:
    """One rich progress bar: ``<command> <description>``, done of total, elapsed and remaining time.

    A context manager: shown from ``__enter__`` to ``__exit__``. The total may be unknown (None: the bar
    pulses) or a guide (DynamoDB's ItemCount, SQS's approximate message count). Drawn on stderr by
    default: stdout carries the command's report (``--json`` too).
    """

    def __init__(self, command: str, description: str, *, total: int | None, console: Console | None = None) -> None:
        """Describe the bar; nothing is shown yet."""
        self.command = command
        self.description = description
        self.total = total
        self.console = console
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Self:
        """Show the bar."""
        from rich.console import Console  # noqa: PLC0415 - only for the interactive commands
        from rich.progress import (  # noqa: PLC0415 - same
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn(f"[bold]{self.command}[/] {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console or Console(stderr=True),
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop showing the bar."""
        self._bar.__exit__(*exc)

    def advance(self, n: int) -> None:
        """Count ``n`` more done."""
        self._bar.advance(self._task, n)

    @property
    def completed(self) -> float:
        """How many are done so far."""
        return float(self._bar.tasks[0].completed)


def open_progress_bar(
    stack: contextlib.ExitStack | contextlib.AsyncExitStack, command: str, description: str, *, total: int | None
) -> Callable[[int], None]:
    """Show a bar until ``stack`` closes; return what advances it."""
    return stack.enter_context(ProgressBar(command, description, total=total)).advance

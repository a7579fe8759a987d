"""What a redrive did: its report, for people (``lines``) and for scripts (``report_json``)."""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

SHOWN_LINES = 10


@dataclasses.dataclass(slots=True)
class RedriveReport:
    """What a redrive did."""

    source: str
    dry_run: bool
    read: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed_again: int = 0
    failure_types: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    unreadable: int = 0
    unreadable_lines: list[int] = dataclasses.field(default_factory=list)
    """JSONL line numbers that hold no dead letter (a torn or garbled line)."""
    failed_path: Path | None = None
    deleted_messages: int = 0
    left_in_queue: int = 0
    duplicates_deleted: int = 0
    """SQS messages of letters already replayed in this run (a letter sent twice), deleted."""
    not_deleted: int = 0
    """Replayed letters whose SQS messages SQS did not all delete: they reappear (and replay harmlessly)."""
    not_deleted_codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    not_released: int = 0
    """Messages a dry run could not make visible again: they reappear after the visibility timeout."""
    not_released_codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    unknown_targets: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Letters naming a target the configuration does not have, by that name: left, never replayed."""
    without_target: int = 0
    """Letters naming no target, refused because the configuration has several and no ``--target`` was given."""

    @property
    def ok(self) -> bool:
        """True when every dead letter reached an outcome other than failing again, and is gone from SQS."""
        return (
            self.failed_again == 0
            and self.unreadable == 0
            and self.left_in_queue == 0
            and self.not_deleted == 0
            and self.not_released == 0
            and not self.unknown_targets
            and self.without_target == 0
        )

    def lines(self) -> list[str]:
        """Describe the run, for people."""
        mode = " (dry run: nothing written or deleted)" if self.dry_run else ""
        out = [f"redrive of {self.source}{mode}: {self.read} dead letters read"]
        out.extend(f"  {outcome}: {count}" for outcome, count in sorted(self.outcomes.items()))
        if self.failed_again:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(self.failure_types.items()))
            out.append(f"  failed again: {self.failed_again} ({kinds})")
        if self.unreadable:
            where = ""
            if self.unreadable_lines:
                shown = ", ".join(str(n) for n in self.unreadable_lines[:SHOWN_LINES])
                more = ", ..." if len(self.unreadable_lines) > SHOWN_LINES else ""
                where = f" (lines {shown}{more}: torn by a crash mid-append, or garbled)"
            out.append(f"  unreadable: {self.unreadable}{where}")
        out.extend(self._left_lines())
        if self.failed_path is not None:
            what = "failed again" if not (self.unknown_targets or self.without_target) else "were not replayed"
            out.append(f"  dead letters that {what} were written to {self.failed_path}")
        out.extend(self._queue_lines())
        return out

    def _left_lines(self) -> list[str]:
        out = []
        if self.unknown_targets:
            names = ", ".join(f"{k} x{v}" for k, v in sorted(self.unknown_targets.items()))
            out.append(
                f"  naming a target not in the configuration (left, not replayed): "
                f"{sum(self.unknown_targets.values())} ({names})"
            )
        if self.without_target:
            out.append(
                f"  naming no target (left, not replayed): {self.without_target}; the configuration has several"
                " targets: pass --target NAME to replay them to that one"
            )
        return out

    def _queue_lines(self) -> list[str]:
        out = []
        if self.deleted_messages:
            out.append(f"  SQS messages deleted: {self.deleted_messages}")
        if self.duplicates_deleted:
            out.append(f"  duplicate messages deleted (a letter sent twice): {self.duplicates_deleted}")
        if self.left_in_queue:
            out.append(f"  left in the queue (reappear after the visibility timeout): {self.left_in_queue}")
        if self.not_deleted:
            codes = ", ".join(f"{k} x{v}" for k, v in sorted(self.not_deleted_codes.items()))
            out.append(
                f"  replayed but not deleted from the queue (reappear, replay again): {self.not_deleted} ({codes})"
            )
        if self.not_released:
            codes = ", ".join(f"{k} x{v}" for k, v in sorted(self.not_released_codes.items()))
            out.append(
                f"  not made visible again (reappear after the visibility timeout): {self.not_released} ({codes})"
            )
        return out


def report_json(report: RedriveReport) -> str:
    """Render the report as one JSON object (for scripts)."""
    return json.dumps(
        {
            "source": report.source,
            "dry_run": report.dry_run,
            "read": report.read,
            "outcomes": dict(report.outcomes),
            "failed_again": report.failed_again,
            "unreadable": report.unreadable,
            "failed_path": None if report.failed_path is None else str(report.failed_path),
            "deleted_messages": report.deleted_messages,
            "left_in_queue": report.left_in_queue,
            "unreadable_lines": report.unreadable_lines,
            "duplicates_deleted": report.duplicates_deleted,
            "not_deleted": report.not_deleted,
            "not_deleted_codes": dict(report.not_deleted_codes),
            "not_released": report.not_released,
            "not_released_codes": dict(report.not_released_codes),
            "unknown_targets": dict(report.unknown_targets),
            "without_target": report.without_target,
        }
    )

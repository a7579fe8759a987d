"""The model checker: every configuration converges on every small history, or is refused at start-up.

Each configuration (``configs.all_settings``) is either refused by ``Config``/``Pipeline.from_config``
(the start-up edge ``check-config`` and ``run`` share), explored exhaustively and shown to converge, or
one of the documented exceptions (DESIGN, "Convergence"), for which the checker must find the history
that breaks it: that history is why the documentation asks what it asks.
"""

from __future__ import annotations

import dataclasses

import pytest
from unit.model.configs import Settings, all_settings
from unit.model.explorer import Report, explore, run_history

MAX_OPS = 3
"""Application operations per history for every configuration (4 for the headline ones, below)."""


def documented_exception(s: Settings) -> str | None:
    """Why a configuration is accepted without a convergence guarantee (DESIGN says so), or None."""
    if s.deletes == "delete":
        return "deletes: delete: a replayed older write brings a deleted item back"
    if s.active_active and not s.skip_echoes:
        return "skip_echoes: false is one-way only: echoes loop"
    if s.active_active and not s.source_tombstones:
        # Without timestamp_attribute too: a worker without source_tombstones cannot tell it is one of a pair.
        return "active-active needs source_tombstones (and timestamp_attribute) on both workers"
    return None


def known_issue(s: Settings) -> str | None:
    """The open item of issue 14 that still breaks this accepted configuration (xfail until fixed)."""
    del s  # items 2, 3, 4 and 9 were marked here until their fixes; none is open now
    return None


def _cases() -> list[object]:
    cases: list[object] = []
    for s in all_settings():
        issue = None if s.refusal() or documented_exception(s) else known_issue(s)
        marks = [pytest.mark.xfail(strict=True, reason=issue)] if issue else []
        cases.append(pytest.param(s, marks=marks, id=s.label().replace(" ", ",")))
    return cases


def _show(report: Report) -> str:
    return f"{report.detail}\n  history: " + " / ".join(report.counterexample or [])


@pytest.mark.parametrize("settings", _cases())
def test_configuration_converges_or_is_refused(settings: Settings) -> None:
    """Every history up to the bound converges, or start-up refuses the configuration, or DESIGN names the gap."""
    refusal = settings.refusal()
    if refusal is not None:
        assert "replication." in refusal or "transforms[" in refusal, refusal
        lines = [line.strip() for line in refusal.splitlines() if "replication." in line or "transforms[" in line]
        why = lines[0].split(" [type=")[0] if lines else ""
        print(f"refused   {settings.label()}: {why}")  # noqa: T201 - the checker's report
        return
    report = explore(settings, max_ops=MAX_OPS, sequential=not settings.timestamp)
    reason = documented_exception(settings)
    if reason is not None:
        assert report.counterexample is not None, f"documented as diverging ({reason}), yet it converged"
        print(f"exception {settings.label()}: {reason}; {report.states} states")  # noqa: T201 - same
        return
    assert report.counterexample is None, _show(report)
    print(f"proved    {settings.label()}: {report.histories} histories, {report.states} states")  # noqa: T201


HEADLINE = [
    Settings(True, "tombstone", False, True, "none", False, False),  # noqa: FBT003 - positional table row
    Settings(False, "tombstone", False, True, "none", False, False),  # noqa: FBT003 - same
    Settings(True, "tombstone", False, True, "none", False, False, "kinesis_ms_skewed"),  # noqa: FBT003 - same
]


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(s, id=s.label().replace(" ", ","), marks=[pytest.mark.xfail(strict=True, reason=issue)])
        if (issue := known_issue(s))
        else pytest.param(s, id=s.label().replace(" ", ","))
        for s in HEADLINE
    ],
)
def test_headline_configurations_converge_with_four_operations(settings: Settings) -> None:
    """The recommended configurations converge on every history of four application operations."""
    report = explore(settings, max_ops=4, sequential=not settings.timestamp)
    assert report.counterexample is None, _show(report)
    print(f"proved    {settings.label()}: {report.histories} histories, {report.states} states (4 ops)")  # noqa: T201


def test_a_whole_item_put_then_an_update_in_one_second_needs_the_timestamp_attribute() -> None:
    """Item 1: without timestamp_attribute the hybrid clock goes backwards; source_tombstones is refused without it."""
    one_worker_each_way = Settings(False, "tombstone", False, True, "none", True, False)  # noqa: FBT003 - table row
    report = explore(one_worker_each_way, max_ops=3, faults=0, sequential=True, kinds=("put", "update"))
    assert report.counterexample is not None, "expected the PutItem-then-UpdateItem history to diverge"
    ops = [step for step in report.counterexample if step.startswith("app ")]
    # A write replicated in, a whole-item PutItem over it (its version bumped past the replicated one),
    # then an UpdateItem whose old image no longer has a marker: its version falls below the PutItem's.
    region = ops[-1].rsplit(" ", 1)[-1]
    assert ops[-2:] == [f"app put k0 in region {region}", f"app update k0 in region {region}"], _show(report)
    print(f"found     {one_worker_each_way.label()}: {_show(report)}")  # noqa: T201 - the checker's report
    # The update's record carries no trace of the replicated version (both images lack markers), so no
    # version computed from it can order it above the PutItem: the configuration a worker can recognise
    # as active-active (source_tombstones) is refused without an application timestamp.
    refusal = dataclasses.replace(one_worker_each_way, source_tombstones=True).refusal()
    assert refusal is not None, "source_tombstones without timestamp_attribute was accepted"
    assert "replication.source_tombstones" in refusal, refusal
    assert "replication.timestamp_attribute" in refusal, refusal


ACTIVE_ACTIVE = Settings(True, "tombstone", True, True, "none", True, False)  # noqa: FBT003 - table row


def test_a_delete_of_an_upsert_on_a_tombstone_replicates() -> None:
    """Item 3: the application deletes its upsert on a tombstone before the worker clears the flags: both lose it."""
    history = [
        *("app update k0 in region 1", "deliver 1:0", "deliver 0:0"),
        # Deleted in region 1: a tombstone in both regions (the source tombstone is an echo).
        *("app delete k0 in region 1", "deliver 1:1", "deliver 1:2", "deliver 0:1"),
        *("tombstone of k0 expires in region 1", "deliver 1:3"),
        # An upsert on region 0's tombstone keeps the flag; deleted before the worker reads the upsert.
        *("app update k0 in region 0", "app delete k0 in region 0"),
        *("deliver 0:2", "deliver 1:4", "deliver 0:3"),
    ]
    assert run_history(ACTIVE_ACTIVE, history) is None


def test_a_revive_never_clears_a_later_tombstone_of_the_same_time() -> None:
    """The flags of an upsert on a tombstone are not cleared once a delete that wins the tie replaced it."""
    history = [
        *("app update k0 in region 0", "deliver 0:0", "deliver 1:0"),
        # Deleted in both regions at once; region 1's delete is one unit after the replicated write.
        *("app delete k0 in region 1", "app delete k0 in region 0", "deliver 0:1", "deliver 0:2"),
        # An upsert on region 0's tombstone at that same time: region 1's delete wins the tie (its region).
        *("app update k0 in region 0", "deliver 1:1", "deliver 1:2", "deliver 1:3"),
        "deliver 0:3",  # the upsert: superseded in region 1, and its revive must not clear region 0's tombstone
    ]
    assert run_history(ACTIVE_ACTIVE, history) is None

"""The model checker on three regions: one worker per source region fans each change out to the others.

Each (source, target) pair is a lane with its own checkpoint (``targets:``), so a change reaches (and is
replayed to) its two targets at different times, in any interleaving with the other lanes. The
configurations are the ones the two-region checker proves (``test_convergence``), on three regions:
active-active as a full mesh, one-way as one source fanned out to two targets. Every table must end
equal, and no change may loop: a worker forwards only its application's records (``model.Forwarded``),
so the changes written anywhere are bounded by the application operations.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.model.configs import MESH3, Settings, all_settings
from unit.model.explorer import Report, explore, quiescent_check, steps_of
from unit.model.model import Livelock, empty_world
from unit.model.test_convergence import documented_exception

MESH_OPS = 2
"""Application operations of the full mesh on 2 keys, with one fault (a replay, or a dead letter redriven later)."""
FAN_OUT_OPS = 3
"""Application operations of one source fanned out to two targets on 2 keys, with one fault (the two-region bound)."""
HEADLINE_OPS = 3
"""Application operations of the full mesh on 1 key without faults, for the recommended configurations."""


def _proven_on_three() -> list[Settings]:
    """The accepted configurations the two-region checker proves, on three regions."""
    return [
        dataclasses.replace(s, regions=MESH3)
        for s in all_settings()
        if s.refusal() is None and documented_exception(s) is None
    ]


HEADLINE = [s for s in _proven_on_three() if s.active_active and s.transform == "none"]


def _id(s: Settings) -> str:
    return s.label().replace(" ", ",")


def _show(report: Report) -> str:
    return f"{report.detail}\n  history: " + " / ".join(report.counterexample or [])


@pytest.mark.parametrize("settings", _proven_on_three(), ids=_id)
def test_three_regions_converge(settings: Settings) -> None:
    """Every history up to the bound (a fault included), in any interleaving of the lanes, ends with equal tables."""
    ops = MESH_OPS if settings.active_active else FAN_OUT_OPS
    report = explore(settings, max_ops=ops, reduce=True, sequential=not settings.timestamp)
    assert report.counterexample is None, _show(report)
    print(f"proved    {settings.label()}: {report.histories} histories, {report.states} states ({ops} ops)")  # noqa: T201 - the checker's report


@pytest.mark.parametrize("settings", HEADLINE, ids=_id)
def test_mesh_converges_with_three_operations_on_one_key(settings: Settings) -> None:
    """Three concurrent operations on one key, every interleaving of the six lanes, end with equal tables."""
    report = explore(settings, max_ops=HEADLINE_OPS, faults=0, keys=1, reduce=True)
    assert report.counterexample is None, _show(report)
    print(f"proved    {settings.label()}: {report.histories} histories, {report.states} states (3 ops, 1 key)")  # noqa: T201 - same


def _exceptions_on_three() -> list[Settings]:
    """One active-active configuration per documented exception (DESIGN, "Convergence"), on three regions."""
    by_reason: dict[str, Settings] = {}
    for s in all_settings():
        reason = documented_exception(s)
        if s.active_active and reason and s.refusal() is None and s.transform == "none":
            by_reason.setdefault(reason, dataclasses.replace(s, regions=MESH3))
    return list(by_reason.values())


@pytest.mark.parametrize("settings", _exceptions_on_three(), ids=_id)
def test_documented_exceptions_diverge_on_three_regions_too(settings: Settings) -> None:
    """The checker has teeth on three regions: each configuration DESIGN names as diverging is caught."""
    report = explore(settings, max_ops=MESH_OPS, reduce=True, sequential=not settings.timestamp)
    assert report.counterexample is not None
    reason = documented_exception(settings)
    print(f"exception {settings.label()}: {reason}; {report.states} states")  # noqa: T201 - the checker's report


def test_the_reductions_keep_every_final_state() -> None:
    """Reducing (skipped records at once, budget subsumption) reaches exactly the final tables of the full search."""
    s = Settings(True, "tombstone", True, True, "none", True, False)  # noqa: FBT003 - positional table row
    full, reduced = explore(s, max_ops=3), explore(s, max_ops=3, reduce=True)
    assert full.counterexample is None
    assert reduced.counterexample is None
    assert reduced.states < full.states
    assert reduced.finals == full.finals


def test_a_forwarded_echo_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop check is live: a worker forwarding echoes (skip_echoes: false) is caught at the first one."""
    s = dataclasses.replace(HEADLINE[0], skip_echoes=False)
    monkeypatch.setattr(Settings, "forwards_application_only", property(lambda _self: True))
    report = explore(s, max_ops=1, faults=0, keys=1, reduce=True)
    assert report.counterexample is not None
    assert "forwards record" in report.detail, report.detail


@pytest.mark.parametrize("index", range(len(HEADLINE)), ids=[_id(s) for s in HEADLINE])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mesh_histories_converge(index: int, data: st.DataObject) -> None:
    """Up to 6 operations and 2 faults on three regions, steps chosen at random, end with every table equal."""
    s = HEADLINE[index]
    world, workers, run = empty_world(faults=2, regions=len(s.regions)), *steps_of(s, max_ops=6)
    history: list[str] = []
    for _ in range(60):
        options = list(run(world))
        if not options:
            break
        label, step = options[data.draw(st.integers(0, len(options) - 1), label="step")]
        try:
            after = step()
        except Livelock as exc:
            raise AssertionError(f"{exc}\n  history: {' / '.join([*history, label])}") from exc
        if after is not None:
            world = after
            history.append(label)
    detail = quiescent_check(world, s, workers, drain=True)
    assert detail is None, f"{detail}\n  history: {' / '.join(history)}"

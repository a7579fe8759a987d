"""Larger random histories than the exhaustive bound: hypothesis picks each step among those allowed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.model.configs import Settings
from unit.model.explorer import quiescent_check, steps_of
from unit.model.model import Livelock, empty_world

PROVEN = [
    Settings(True, "tombstone", False, True, "none", False, False),  # noqa: FBT003 - positional table row
    Settings(True, "tombstone", False, True, "keep_ts", False, False, "kinesis_ms_skewed"),  # noqa: FBT003
    Settings(True, "tombstone", True, True, "none", True, False),  # noqa: FBT003 - same
    Settings(True, "tombstone", True, True, "keep_ts", True, False, "kinesis_ms_skewed"),  # noqa: FBT003 - same
]
XFAIL: dict[int, str] = {}


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(
            i,
            id=s.label().replace(" ", ","),
            marks=[pytest.mark.xfail(strict=True, reason=XFAIL[i])] if i in XFAIL else [],
        )
        for i, s in enumerate(PROVEN)
    ],
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_histories_converge(index: int, data: st.DataObject) -> None:
    """Up to 8 operations and 3 faults, steps chosen at random, end with both tables equal."""
    s = PROVEN[index]
    world, workers, run = empty_world(faults=3), *steps_of(s, max_ops=8)
    history: list[str] = []
    for _ in range(40):
        options = list(run(world))
        if not options:
            break
        label, step = options[data.draw(st.integers(0, len(options) - 1), label="step")]
        try:
            after = step()
        except Livelock as exc:
            raise AssertionError(str(exc)) from exc
        if after is not None:
            world = after
            history.append(label)
    detail = quiescent_check(world, s, workers, drain=True)
    assert detail is None, f"{detail}\n  history: {' / '.join(history)}"

"""The chaos scenarios of issue 10, short enough for ``make test``; ``make chaos`` runs hundreds of rounds.

Each test runs real ``rotator once`` processes (see tests/chaos/world.py) and fails on any violation of the
invariants the watcher and the end-of-round checks record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.window_world import WindowFigures, run_window_scenario
from tests.chaos.world import run_scenario

ROUNDS = {"kill": 12, "concurrent": 10, "stall": 3, "faults": 10, "reload": 8, "window": 5}


@pytest.mark.parametrize("scenario", list(ROUNDS))
def test_chaos_scenario_keeps_every_invariant(tmp_path: Path, scenario: str) -> None:
    fig = (
        run_window_scenario(tmp_path, ROUNDS[scenario], seed=7)
        if scenario == "window"
        else run_scenario(tmp_path, scenario, ROUNDS[scenario], seed=7)
    )
    print(fig.line(scenario))
    assert fig.violations == [], "\n".join(fig.violations)
    assert fig.rounds == ROUNDS[scenario] and fig.samples > 0
    assert fig.created >= {"reload": 3, "window": 3}.get(scenario, 10)  # the first keys at least: passes really ran
    if scenario == "kill":
        assert fig.kills >= 1
    if scenario == "stall":
        assert fig.stalls >= 1
    if scenario == "faults":
        assert fig.injected >= 10
    if scenario == "reload":
        assert fig.restarts >= 3 and fig.kills >= 1  # every policy's workload restarted at least once
    if scenario == "window":
        # keys were made inside the windows, and due keys waited for them
        assert isinstance(fig, WindowFigures) and fig.inside >= 4 and fig.waits >= 1

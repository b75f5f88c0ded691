"""The status page shows a policy's change window, the freezes still ahead, and when a waiting rotation
may start (issue 24)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from rotator.model import Plan
from rotator.report import PassReport, PolicyReport
from rotator.status_page import render
from rotator.windows import Freeze, WindowConfig
from tests.test_planner import NOW, key
from tests.test_planner_properties import make_config


def test_the_window_freezes_and_the_opening_a_due_key_waits_for_are_shown() -> None:
    cfg = make_config(1)
    window = WindowConfig(cron="0 9 * * MON-THU", duration=timedelta(hours=6), timezone="Europe/Berlin")
    past = Freeze.model_validate({"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z", "reason": "old"})
    ahead = Freeze.model_validate(
        {"from": "2026-12-20T00:00:00Z", "to": "2027-01-04T00:00:00Z", "reason": "<year end>"}
    )
    policy = dataclasses.replace(cfg.policy("p0"), window=window, freezes=(past, ahead))
    cfg = dataclasses.replace(cfg, policies=(policy,))
    opens = NOW + timedelta(hours=19)
    plan = Plan("p0", "awaiting-window", current_key="k1", window_opens=opens)
    pr = PolicyReport("p0", plan, keys=(key("k1", timedelta(minutes=45)),))
    html = render(PassReport(NOW, NOW, True, [pr]), cfg, NOW)
    assert "0 9 * * MON-THU for 6h (Europe/Berlin)" in html
    assert "freeze 2026-12-20T00:00:00Z..2027-01-04T00:00:00Z (&lt;year end&gt;)" in html and "<year end>" not in html
    assert "(old)" not in html  # a freeze that is over holds nothing back
    assert f'data-window-opens="{opens.isoformat()}"' in html and "waits for the window opening" in html
    steady = dataclasses.replace(pr, plan=Plan("p0", "steady", current_key="k1"))
    html = render(PassReport(NOW, NOW, True, [steady]), cfg, NOW)
    assert "0 9 * * MON-THU" in html and "waits for the window opening" not in html

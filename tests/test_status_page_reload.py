"""The status page shows each reload unit of a policy (issue 23): state, key, since and detail, escaped."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from rotator.model import Plan, ReloadStatus
from rotator.reload.kubernetes import ReloadConfig
from rotator.report import PassReport, PolicyReport
from rotator.status_page import render
from tests.test_planner import NOW, key
from tests.test_planner_properties import make_config


def test_reload_units_are_shown_and_unobserved_ones_say_so() -> None:
    cfg = make_config(1)
    k8s = ReloadConfig.model_validate(
        {"type": "kubernetes", "namespace": "payments", "kind": "Deployment", "names": ["a"]}
    )
    policy = dataclasses.replace(cfg.policy("p0"), reload=(k8s,))
    cfg = dataclasses.replace(cfg, policies=(policy,))
    units = (
        ReloadStatus(
            "kubernetes:payments/Deployment",
            "a",
            "kubernetes",
            "k2",
            "rolling",
            NOW - timedelta(minutes=2),
            "1 of 3 <new>",
        ),
        ReloadStatus(
            "kubernetes:payments/Deployment", "b", "kubernetes", "k2", "failed", NOW, "ProgressDeadlineExceeded"
        ),
    )
    plan = Plan("p0", "reloading", current_key="k2")
    pr = PolicyReport(
        "p0", plan, keys=(key("k1", timedelta(minutes=50)), key("k2", timedelta(minutes=5))), reloads=units
    )
    html = render(PassReport(NOW, NOW, True, [pr]), cfg, NOW)
    assert 'data-reload="kubernetes:payments/Deployment/a"' in html and ">rolling<" in html
    assert 'data-reload="kubernetes:payments/Deployment/b"' in html and ">failed<" in html
    assert "1 of 3 &lt;new&gt;" in html and "<new>" not in html
    html = render(PassReport(NOW, NOW, True, [dataclasses.replace(pr, reloads=None)]), cfg, NOW)
    assert "reload targets: not observed in this pass" in html

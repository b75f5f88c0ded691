"""Config of reload targets (issue 23): every error at once, with its field and the fix."""

from __future__ import annotations

from datetime import timedelta

from rotator.config import from_mapping
from tests.test_config import base, errors, policy

DEPLOY = {"type": "kubernetes", "namespace": "payments", "kind": "Deployment", "names": ["checkout"]}


def test_a_policy_with_reload_targets_resolves() -> None:
    cfg = from_mapping(
        base(
            reloads_per_pass=5,
            policies=[policy("a", reload=[DEPLOY], reload_max_parallel=2, reload_timeout="10m")],
        )
    )
    p = cfg.policy("a")
    assert cfg.reloads_per_pass == 5
    assert len(p.reload) == 1 and p.reload_max_parallel == 2 and p.reload_timeout == timedelta(minutes=10)


def test_defaults_apply_to_reload_settings() -> None:
    cfg = from_mapping(
        base(defaults={"reload_timeout": "5m", "reload_max_parallel": 3}, policies=[policy("a", reload=[DEPLOY])])
    )
    assert cfg.policy("a").reload_timeout == timedelta(minutes=5) and cfg.policy("a").reload_max_parallel == 3


def test_every_reload_error_is_reported_at_once() -> None:
    bad = [
        {"type": "kubernetes", "namespace": "payments", "kind": "Pod", "names": ["x"]},
        {"type": "kubernetes", "namespace": "payments", "kind": "Deployment", "names": ["x"], "selector": "app=x"},
        {"type": "kubernetes", "namespace": "payments", "kind": "StatefulSet"},
        {"type": "rollout"},
        {"namespace": "payments"},
    ]
    found = errors(base(policies=[policy("a", reload=bad, reload_max_parallel=0)]))
    text = "\n".join(found)
    assert "policies[0].reload[0].kind" in text and "Deployment" in text
    assert "policies[0].reload[1]" in text and "not both" in text
    assert "policies[0].reload[2]" in text and "either names" in text
    assert "policies[0].reload[3].type" in text and "unknown reload type" in text and "kubernetes" in text
    assert "policies[0].reload[4].type" in text and "required" in text
    assert "policies[0].reload_max_parallel" in text


def test_reload_timeout_must_leave_room_before_the_old_key_expires() -> None:
    # lifetime 1d, rotate_before 25% = 6h; grace 1h + interval 1m + skew 1m leaves < 5h for a rollout
    found = errors(base(policies=[policy("a", lifetime="1d", reload=[DEPLOY], reload_timeout="5h")]))
    assert any(i.startswith("policies[0].reload_timeout") and "too long" in i and "rotate_before" in i for i in found)
    from_mapping(base(policies=[policy("a", lifetime="1d", reload=[DEPLOY], reload_timeout="4h")]))


def test_reload_settings_without_reload_targets_are_an_error() -> None:
    found = errors(base(policies=[policy("a", reload_timeout="10m")]))
    assert any(i.startswith("policies[0].reload_timeout") and "only applies with reload targets" in i for i in found)


def test_kubernetes_names_follow_the_api_rules() -> None:
    bad = {"type": "kubernetes", "namespace": "Payments", "kind": "Deployment", "names": ["Check_Out", "ok"]}
    found = errors(base(policies=[policy("a", reload=[bad])]))
    assert any("reload[0].namespace" in i and "namespace name" in i for i in found)
    assert any("reload[0].names" in i and "workload name" in i for i in found)


def test_the_lambda_runtime_rejects_a_cluster_it_cannot_reach() -> None:
    from rotator.config import for_runtime

    data = base(policies=[policy("a", reload=[DEPLOY, {**DEPLOY, "names": ["b"], "in_cluster": True}])])
    from_mapping(data)  # fine for the container and the CronJob
    with for_runtime("lambda"):
        found = errors(data)
    assert any(i.startswith("policies[0].reload[0]") and "Lambda runtime cannot reach" in i for i in found)
    assert any(i.startswith("policies[0].reload[1]") for i in found)
    with for_runtime("lambda"):
        from_mapping(base(policies=[policy("a", reload=[{**DEPLOY, "kubeconfig": "/var/task/kubeconfig"}])]))


def test_the_lambda_handler_loads_its_config_for_the_lambda_runtime(monkeypatch: object) -> None:
    import yaml

    from rotator.errors import ConfigError
    from rotator.runtime import lambda_handler

    data = base(policies=[policy("a", reload=[DEPLOY])])
    monkeypatch.setenv("ROTATOR_CONFIG_YAML", yaml.safe_dump(data))  # type: ignore[attr-defined]
    try:
        lambda_handler.load_config()
    except ConfigError as exc:
        assert any("Lambda runtime cannot reach" in str(i) for i in exc.issues)
    else:
        raise AssertionError("the Lambda accepted a reload target it cannot reach")

"""Reload targets end to end (issue 23): real ``rotator once`` processes, the Momento emulator over HTTP, a
file store, and the consumers' service over HTTP (ECS and Lambda: moto's server behind the documented
rollout lifecycle, tests/servers/aws_rollouts.py, on the emulator's clock).

Each test walks a whole rotation: the key is due -> a new key is published -> the next pass starts the reload
-> passes while it rolls start nothing again and revoke nothing -> the rollout finishes -> the old key is
revoked after grace. And the failure path: a rollout the service reports failed keeps the old key, raises
the reload failure, and is started again after ``reload_timeout``.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.servers.aws_rollouts import AwsRollouts
from tests.servers.moto_server import TEST_ENV, MotoServer, moto, moto_server  # noqa: F401
from tests.support.consumers import WebhookReceiver, webhook_receiver
from tests.support.e2e import Harness, Run, at, harness

pytestmark = pytest.mark.slow

REGION = "us-east-1"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def policy(reload: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "checkout",
        "role": "operator",
        "lifetime": "1h",
        "rotate_before": "20m",
        "grace": "5m",
        "orphan_after": "10m",
        "targets": [{"store": "local", "secret": "checkout/momento", "format": "json"}],
        "reload": reload,
        "reload_timeout": "10m",
    }


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer) -> Iterator[tuple[Harness, AwsRollouts]]:  # noqa: F811
    moto.configure({"lambda": {"use_docker": False}})
    with harness(tmp_path) as h, AwsRollouts(moto.url, clock=h.clock) as proxy:
        yield h, proxy


def once(h: Harness, config: Path, minutes: float) -> tuple[Run, dict[str, Any]]:
    run = h.run("-c", str(config), "once", now=at(minutes))
    assert not JWT.search(run.stdout + run.stderr), "a key in rotator's output"
    summary = run.summary()
    return run, summary


def policy_json(summary: dict[str, Any]) -> dict[str, Any]:
    (p,) = summary["policies"]
    return dict(p)


def _ecs_service(aws: AwsRollouts, *, desired: int) -> Any:
    """Cluster ``prod`` with service ``checkout`` (``desired`` tasks), its first deployment complete; the client."""
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=aws.url)
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(family="app", containerDefinitions=[{"name": "app", "image": "x", "memory": 128}])
    ecs.create_service(cluster="prod", serviceName="checkout", taskDefinition="app", desiredCount=desired)
    aws.ecs_complete("prod/checkout")
    return ecs


def test_ecs_a_rotation_restarts_the_service_once_and_revokes_after_the_rollout(
    world: tuple[Harness, AwsRollouts], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, aws = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    ecs = _ecs_service(aws, desired=2)
    reload = [{"type": "ecs", "cluster": "prod", "services": ["checkout"], "region": REGION, "endpoint_url": aws.url}]
    cfg = h.write_config([policy(reload)])

    _, s = once(h, cfg, 0)
    assert s["counts"]["created"] == 1 and aws.count("ecs:UpdateService") == 0  # a first key replaces nothing
    (k1,) = h.live_ids("checkout")

    _, s = once(h, cfg, 45)  # due: a new key, published; the reload waits for the next pass
    assert s["counts"]["created"] == 1 and s["counts"]["reloaded"] == 0
    k2 = h.newest_id("checkout")

    _, s = once(h, cfg, 46)
    assert s["counts"]["reloaded"] == 1 and aws.count("ecs:UpdateService") == 1
    assert s["counts"]["revoked"] == 0

    aws.ecs_tasks_started("prod/checkout")  # new tasks run, the old deployment still drains
    for minute in (47, 51):  # past grace, but the rollout is not done: no second restart, no revoke
        _, s = once(h, cfg, minute)
        p = policy_json(s)
        assert s["counts"]["reloaded"] == 0 and s["counts"]["revoked"] == 0, p
        assert aws.count("ecs:UpdateService") == 1
        assert p["phase"] == "reloading" and p["reloads"][0]["state"] == "rolling", p
        assert set(h.live_ids("checkout")) == {k1, k2}

    aws.ecs_complete("prod/checkout")
    _, s = once(h, cfg, 52)
    assert s["counts"]["revoked"] == 1, s
    assert h.live_ids("checkout") == [k2] and aws.count("ecs:UpdateService") == 1
    ecs.close()


def test_ecs_a_failed_rollout_keeps_the_old_key_and_is_started_again_after_reload_timeout(
    world: tuple[Harness, AwsRollouts], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, aws = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    ecs = _ecs_service(aws, desired=1)
    reload = [{"type": "ecs", "cluster": "prod", "services": ["checkout"], "region": REGION, "endpoint_url": aws.url}]
    cfg = h.write_config([policy(reload)], alerts={"on_success": False})
    once(h, cfg, 0)
    (k1,) = h.live_ids("checkout")
    once(h, cfg, 45)
    once(h, cfg, 46)
    assert aws.count("ecs:UpdateService") == 1
    aws.ecs_fail("prod/checkout")

    run, s = once(h, cfg, 52)
    p = policy_json(s)
    assert run.returncode == 0 and s["counts"]["revoked"] == 0 and k1 in h.live_ids("checkout")
    assert p["reloads"][0]["state"] == "failed"
    assert any(n.startswith("! reload failed") for n in p["notes"]), p
    assert aws.count("ecs:UpdateService") == 1  # retried once per reload_timeout, not on every pass

    _, s = once(h, cfg, 57)  # reload_timeout (10m) after the failed deployment started: started again
    assert s["counts"]["reloaded"] == 1 and aws.count("ecs:UpdateService") == 2
    aws.ecs_complete("prod/checkout")
    _, s = once(h, cfg, 58)
    assert s["counts"]["revoked"] == 1 and k1 not in h.live_ids("checkout")
    ecs.close()


def test_ecs_a_rollout_that_never_finishes_is_reported_at_reload_timeout_and_started_again(
    world: tuple[Harness, AwsRollouts], monkeypatch: pytest.MonkeyPatch
) -> None:
    with webhook_receiver() as rx:
        _ecs_stalled(world, monkeypatch, rx)


def _ecs_stalled(world: tuple[Harness, AwsRollouts], monkeypatch: pytest.MonkeyPatch, rx: WebhookReceiver) -> None:
    h, aws = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    ecs = _ecs_service(aws, desired=1)
    reload = [{"type": "ecs", "cluster": "prod", "services": ["checkout"], "region": REGION, "endpoint_url": aws.url}]
    cfg = h.write_config(
        [policy(reload)], alerts={"on_success": False, "notifiers": [{"type": "webhook", "url": rx.url}]}
    )
    once(h, cfg, 0)
    (k1,) = h.live_ids("checkout")
    once(h, cfg, 45)
    once(h, cfg, 46)  # the deployment starts; its tasks never become healthy, ECS reports nothing failed
    _, s = once(h, cfg, 55)  # 9 minutes in: still rolling, grace long over, nothing revoked or repeated
    p = policy_json(s)
    assert p["reloads"][0]["state"] == "rolling" and s["counts"]["revoked"] == 0, p
    assert not any(n.startswith("! reload failed") for n in p["notes"]), p
    assert aws.count("ecs:UpdateService") == 1

    _, s = once(h, cfg, 57)  # past reload_timeout (10m): reported and started again, the old key kept
    p = policy_json(s)
    assert s["counts"]["reloaded"] == 1 and s["counts"]["revoked"] == 0 and k1 in h.live_ids("checkout"), p
    assert any(n.startswith("! reload failed") and "longer than reload_timeout" in n for n in p["notes"]), p
    assert aws.count("ecs:UpdateService") == 2
    (alert,) = rx.events("reload_failed", "checkout")
    assert "ecs:" in alert["message"] and "checkout" in alert["message"], alert

    aws.ecs_complete("prod/checkout")
    _, s = once(h, cfg, 58)
    assert s["counts"]["revoked"] == 1 and h.live_ids("checkout") != [] and k1 not in h.live_ids("checkout")
    ecs.close()


def _function(moto_url: str, proxy_url: str, name: str, env: dict[str, str]) -> None:
    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto_url)
    role = iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    iam.close()
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return None\n")
    fn = boto3.client("lambda", region_name=REGION, endpoint_url=proxy_url)
    fn.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": code.getvalue()},
        Environment={"Variables": env},
    )
    fn.close()


def test_lambda_a_rotation_sets_the_key_id_keeps_the_other_variables_and_revokes_after_the_update(
    world: tuple[Harness, AwsRollouts],
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, aws = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    _function(moto.url, aws.url, "checkout-worker", {"DB_PASSWORD": "hunter2-not-a-key", "MOMENTO_KEY_ID": "none"})
    reload = [{"type": "lambda", "functions": ["checkout-worker"], "region": REGION, "endpoint_url": aws.url}]
    cfg = h.write_config([policy(reload)])
    once(h, cfg, 0)
    (k1,) = h.live_ids("checkout")
    once(h, cfg, 45)
    k2 = h.newest_id("checkout")
    run, s = once(h, cfg, 46)
    assert s["counts"]["reloaded"] == 1 and aws.lambda_status("checkout-worker") == "InProgress"
    assert "hunter2-not-a-key" not in run.stdout + run.stderr
    fn = boto3.client("lambda", region_name=REGION, endpoint_url=aws.url)
    env = fn.get_function_configuration(FunctionName="checkout-worker")["Environment"]["Variables"]
    assert env == {"DB_PASSWORD": "hunter2-not-a-key", "MOMENTO_KEY_ID": k2}

    _, s = once(h, cfg, 52)  # past grace, the update still in progress: nothing revoked, nothing repeated
    assert s["counts"]["revoked"] == 0 and s["counts"]["reloaded"] == 0 and set(h.live_ids("checkout")) == {k1, k2}
    aws.lambda_finish("checkout-worker")
    _, s = once(h, cfg, 53)
    assert s["counts"]["revoked"] == 1 and h.live_ids("checkout") == [k2]
    assert aws.count("lambda:UpdateFunctionConfiguration") == 1
    fn.close()


def _lambda_update_started(
    h: Harness,
    aws: AwsRollouts,
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, str]:
    """A function with a reload target, a first key, a rotation at 45m and the update started at 46m: the
    config and the old key."""
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    _function(moto.url, aws.url, "checkout-worker", {"MOMENTO_KEY_ID": "none"})
    reload = [{"type": "lambda", "functions": ["checkout-worker"], "region": REGION, "endpoint_url": aws.url}]
    cfg = h.write_config([policy(reload)], alerts={"on_success": False})
    once(h, cfg, 0)
    (k1,) = h.live_ids("checkout")
    once(h, cfg, 45)
    once(h, cfg, 46)
    return cfg, k1


def test_lambda_a_failed_update_keeps_the_old_key_alerts_and_is_made_again_after_reload_timeout(
    world: tuple[Harness, AwsRollouts],
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, aws = world
    cfg, k1 = _lambda_update_started(h, aws, moto, monkeypatch)
    aws.lambda_finish("checkout-worker", failed="SubnetOutOfIPAddresses")

    run, s = once(h, cfg, 52)
    p = policy_json(s)
    assert run.returncode == 0 and s["counts"]["revoked"] == 0 and k1 in h.live_ids("checkout"), p
    assert p["reloads"][0]["state"] == "failed" and "SubnetOutOfIPAddresses" in p["reloads"][0]["detail"], p
    assert any(n.startswith("! reload failed") for n in p["notes"]), p
    assert aws.count("lambda:UpdateFunctionConfiguration") == 1  # not on every pass: once per reload_timeout

    _, s = once(h, cfg, 57)  # reload_timeout after the failed update: made again
    assert s["counts"]["reloaded"] == 1 and aws.count("lambda:UpdateFunctionConfiguration") == 2, s
    aws.lambda_finish("checkout-worker")
    _, s = once(h, cfg, 58)
    assert s["counts"]["revoked"] == 1 and k1 not in h.live_ids("checkout")


def test_lambda_an_update_stuck_in_progress_is_reported_at_reload_timeout_and_never_revokes_early(
    world: tuple[Harness, AwsRollouts],
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, aws = world
    cfg, k1 = _lambda_update_started(h, aws, moto, monkeypatch)
    assert aws.lambda_status("checkout-worker") == "InProgress"

    # Past reload_timeout, still InProgress: reported; Lambda refuses a second update while one is in progress
    # (ResourceConflictException), which is a conflict to wait out, not a reason to revoke.
    run, s = once(h, cfg, 57)
    p = policy_json(s)
    assert s["counts"]["revoked"] == 0 and k1 in h.live_ids("checkout"), p
    assert any(n.startswith("! reload failed") and "longer than reload_timeout" in n for n in p["notes"]), p
    assert not JWT.search(run.stdout + run.stderr)
    assert aws.lambda_status("checkout-worker") == "InProgress"
    (again,) = [r for r in p["results"] if r["action"] == "reload"]
    assert "already holds key id" in again["skipped"] and s["counts"]["failed"] == 0, again  # nothing re-sent

    aws.lambda_finish("checkout-worker")
    _, s = once(h, cfg, 58)
    assert s["counts"]["revoked"] == 1 and k1 not in h.live_ids("checkout"), policy_json(s)
    assert aws.count("lambda:UpdateFunctionConfiguration") <= 2


def test_plan_lists_the_reload_it_would_make_and_changes_nothing(
    world: tuple[Harness, AwsRollouts],
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, aws = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    _function(moto.url, aws.url, "checkout-worker", {"MOMENTO_KEY_ID": "none"})
    reload = [{"type": "lambda", "functions": ["checkout-worker"], "region": REGION, "endpoint_url": aws.url}]
    cfg = h.write_config([policy(reload)])
    once(h, cfg, 0)
    once(h, cfg, 45)
    run = h.run("-c", str(cfg), "plan", now=at(46))
    assert run.returncode == 0, run.explain()
    (plan,) = run.stdout_json_lines()
    (reload_action,) = plan["planned"]
    assert reload_action["action"] == "reload" and reload_action["target"] == "lambda:us-east-1"
    assert reload_action["unit"] == "checkout-worker" and plan["phase"] == "reloading"
    assert [r["state"] for r in plan["reloads"]] == ["pending"]
    assert aws.count("lambda:UpdateFunctionConfiguration") == 0
    status = h.run("-c", str(cfg), "status", "--json", now=at(46))
    assert status.returncode == 0, status.explain()
    (entry,) = status.stdout_json_lines()[0]["policies"]
    assert [(r["unit"], r["state"]) for r in entry["reloads"]] == [("checkout-worker", "pending")]


def test_webhook_is_signed_sent_on_every_pass_while_the_old_key_waits_and_never_carries_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks import Webhook

    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    monkeypatch.setenv("RELOAD_SIGNING_KEY", secret)
    got: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/reload"
    try:
        with harness(tmp_path) as h:
            reload = [{"type": "webhook", "url": url, "secret": {"env": "RELOAD_SIGNING_KEY"}}]
            cfg = h.write_config([policy(reload)])
            once(h, cfg, 0)
            (k1,) = h.live_ids("checkout")
            once(h, cfg, 45)
            assert got == []  # published in this pass: the webhook goes on the next one
            k2 = h.newest_id("checkout")
            _, s = once(h, cfg, 46)
            assert s["counts"]["reloaded"] == 1 and s["counts"]["revoked"] == 0 and len(got) == 1
            _, s = once(h, cfg, 48)  # grace not over: sent again, the same message id
            assert len(got) == 2 and s["counts"]["revoked"] == 0
            _, s = once(h, cfg, 51)  # grace over: sent once more, then the old key is revoked
            assert len(got) == 3 and s["counts"]["revoked"] == 1 and h.live_ids("checkout") == [k2]
            once(h, cfg, 52)
            assert len(got) == 3  # nothing waits any more: no webhook
            live_keys = h.run("-c", str(cfg), "audit", now=at(52)).stdout
    finally:
        server.shutdown()
        server.server_close()
    hook = Webhook(secret)
    ids = set()
    for headers, body in got:
        payload = hook.verify(body, headers)  # the library checks the signature and the timestamp's tolerance
        ids.add(headers["webhook-id"])
        assert payload["type"] == "momento.key.rotated"
        assert payload["data"]["key_id"] == k2 and payload["data"]["policy"] == "checkout"
        assert not JWT.search(body.decode()), "key material in a webhook"
        assert k1 not in body.decode()
    assert len(ids) == 1, ids
    assert json.loads(got[0][1])["data"]["expires_at"]
    assert secret not in live_keys


def test_a_failing_webhook_keeps_the_old_key_in_that_pass_and_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    monkeypatch.setenv("RELOAD_SIGNING_KEY", "whsec_" + base64.b64encode(b"k" * 32).decode())
    answer = [500]

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(answer[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/reload"
    try:
        with harness(tmp_path) as h:
            reload = [{"type": "webhook", "url": url, "secret": {"env": "RELOAD_SIGNING_KEY"}, "timeout": "2s"}]
            cfg = h.write_config([policy(reload)])
            once(h, cfg, 0)
            (k1,) = h.live_ids("checkout")
            once(h, cfg, 45)
            run, s = once(h, cfg, 51)  # grace is over, but the webhook fails: no revoke in this pass
            assert run.returncode == 1 and s["counts"]["failed"] == 1 and s["counts"]["revoked"] == 0, s
            assert k1 in h.live_ids("checkout")
            results = policy_json(s)["results"]
            assert any(
                r["action"] == "revoke" and "a reload of this policy failed" in r.get("skipped", "") for r in results
            )
            assert any(e.get("event") == "action failed" and e.get("action") == "reload" for e in run.logs())
            answer[0] = 204
            run, s = once(h, cfg, 52)
            assert run.returncode == 0 and s["counts"]["revoked"] == 1 and k1 not in h.live_ids("checkout")
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_that_never_answers_fails_within_its_timeout_and_keeps_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.setenv("RELOAD_SIGNING_KEY", "whsec_" + base64.b64encode(b"t" * 32).decode())
    with webhook_receiver(204) as hook, harness(tmp_path) as h:
        reload = [{"type": "webhook", "url": hook.url, "secret": {"env": "RELOAD_SIGNING_KEY"}, "timeout": "1s"}]
        cfg = h.write_config([policy(reload)])
        once(h, cfg, 0)
        (k1,) = h.live_ids("checkout")
        once(h, cfg, 45)
        hook.delay = 5.0  # far past the reload's timeout: the call must give up, not hang the pass
        run, s = once(h, cfg, 51)
        assert run.returncode == 1 and s["counts"]["failed"] == 1 and s["counts"]["revoked"] == 0, s
        assert k1 in h.live_ids("checkout") and len(hook.requests) >= 1
        (failed,) = [r for r in policy_json(s)["results"] if r["action"] == "reload"]
        assert "no answer within 1s" in failed["error"], failed
        hook.delay = 0.0
        run, s = once(h, cfg, 52)
        assert run.returncode == 0 and s["counts"]["revoked"] == 1 and k1 not in h.live_ids("checkout")


def test_reloads_per_pass_caps_restarts_across_the_fleet(
    world: tuple[Harness, AwsRollouts],
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, aws = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    pols = []
    for i, name in enumerate(("fn-a", "fn-b")):
        if i == 0:
            _function(moto.url, aws.url, name, {"MOMENTO_KEY_ID": "none"})
        else:
            _function_again(aws.url, name)
        p = policy([{"type": "lambda", "functions": [name], "region": REGION, "endpoint_url": aws.url}])
        p["name"] = f"checkout-{i}"
        p["targets"] = [{"store": "local", "secret": f"checkout-{i}/momento", "format": "json"}]
        pols.append(p)
    cfg = h.write_config(pols, reloads_per_pass=1)
    once(h, cfg, 0)
    once(h, cfg, 45)
    _, s = once(h, cfg, 46)
    assert s["counts"]["reloaded"] == 1 and s["counts"]["skipped"] == 1, s
    assert aws.count("lambda:UpdateFunctionConfiguration") == 1
    _, s = once(h, cfg, 47)
    assert s["counts"]["reloaded"] == 1 and aws.count("lambda:UpdateFunctionConfiguration") == 2


def _function_again(proxy_url: str, name: str) -> None:
    """A second function with the role the first one created."""
    iam_role = "arn:aws:iam::123456789012:role/fn-role"
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return None\n")
    fn = boto3.client("lambda", region_name=REGION, endpoint_url=proxy_url)
    fn.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=iam_role,
        Handler="index.handler",
        Code={"ZipFile": code.getvalue()},
        Environment={"Variables": {"MOMENTO_KEY_ID": "none"}},
    )
    fn.close()

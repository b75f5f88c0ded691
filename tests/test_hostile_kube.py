"""A hostile or broken Kubernetes API server: every request rotator makes to it (the ``kubernetes`` pickup check,
leader election) ends within its deadline plus a second and reads a bounded answer (issue 22).

The API server is ``tests/servers/kube_api.py`` behind the ``HostileIssuer`` proxy (a generic rewriting proxy),
which drips, bloats or nests its answers; rotator talks HTTP to it through the real ``kubernetes`` client's
configuration. Before :mod:`rotator.kube`, the client's ``_request_timeout`` was per socket read (an answer
dripped a byte at a time never ended) and every answer, error answers included, was read whole.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.pickup.kubernetes import CheckConfig, KubernetesCheck, open_check
from rotator.runtime.leader import LeaseApiFailure, LeaseClient
from tests.servers.hostile_issuer import Behaviour, HostileIssuer, deep_nesting, drip, drip_headers, huge_body, replace
from tests.servers.kube_api import KubeApiServer, running_kube_api
from tests.support.e2e import ROTATOR, harness

NS = "apps"
PODS = f"/api/v1/namespaces/{NS}/pods"
SECRET = f"/api/v1/namespaces/{NS}/secrets/momento"
LEASES = "/apis/coordination.k8s.io/v1/namespaces"
BIG = 100 * 1024 * 1024


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with running_kube_api() as server:
        yield server


@pytest.fixture
def proxy(kube: KubeApiServer) -> Iterator[HostileIssuer]:
    with HostileIssuer(kube.url) as p:
        yield p


def client_via(proxy: HostileIssuer) -> Any:
    from kubernetes import client

    return client.ApiClient(client.Configuration(host=proxy.url, api_key={"authorization": "Bearer test"}))


def check_via(proxy: HostileIssuer, **cfg: Any) -> KubernetesCheck:
    config = CheckConfig.model_validate({"type": "kubernetes", "namespace": NS, "timeout": "2s", **cfg})
    return open_check(config, api_client=client_via(proxy))


def timed(fn: Any) -> tuple[Any, float]:
    t = time.monotonic()
    result = fn()
    return result, time.monotonic() - t


def huge(size: int = BIG, status: int = 200) -> Behaviour:
    """An answer of ``size`` bytes without a length (chunked), streamed: nothing can refuse it up front."""
    return huge_body(size, status, "application/json")


PUBLISHED = datetime(2026, 1, 1, tzinfo=UTC)


def add_ready_pod(kube: KubeApiServer) -> None:
    kube.add_pod(NS, "web-1", labels={"app": "web"}, started_at=PUBLISHED + timedelta(minutes=1))


# ---- the pickup check ---------------------------------------------------------------------------------------


def test_a_normal_pod_listing_through_the_proxy_is_ok(kube: KubeApiServer, proxy: HostileIssuer) -> None:
    add_ready_pod(kube)
    verdict = check_via(proxy, pods={"selector": "app=web"}).check("p", "k1", PUBLISHED)
    assert verdict.ok, verdict


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(drip_headers(0.05), id="dripped-headers"),
        pytest.param(drip(0.05, body=b" " * 4000 + b"{}"), id="dripped-body"),
    ],
)
def test_a_dripping_pod_listing_lags_within_the_timeout(
    kube: KubeApiServer, proxy: HostileIssuer, behaviour: Any
) -> None:
    add_ready_pod(kube)
    proxy.on("GET", PODS, behaviour)
    verdict, took = timed(lambda: check_via(proxy, pods={"selector": "app=web"}).check("p", "k1", PUBLISHED))
    assert not verdict.ok
    assert "no answer within 2s" in verdict.detail, verdict.detail
    assert took < 3.0, took


def test_a_huge_pod_listing_lags_and_is_not_read_whole(kube: KubeApiServer, proxy: HostileIssuer) -> None:
    add_ready_pod(kube)
    proxy.on("GET", PODS, huge())
    verdict = check_via(proxy, pods={"selector": "app=web"}).check("p", "k1", PUBLISHED)
    assert not verdict.ok
    assert "larger than 33554432 bytes" in verdict.detail, verdict.detail


@pytest.mark.parametrize("status", [403, 500])
def test_a_huge_error_answer_is_not_read_whole(kube: KubeApiServer, proxy: HostileIssuer, status: int) -> None:
    proxy.on("GET", SECRET, huge(status=status))
    verdict = check_via(proxy, secret={"name": "momento"}).check("p", "k1", PUBLISHED)
    assert not verdict.ok
    assert "larger than 4194304 bytes" in verdict.detail, verdict.detail


def test_a_deeply_nested_secret_lags_as_unreadable(kube: KubeApiServer, proxy: HostileIssuer) -> None:
    proxy.on("GET", SECRET, deep_nesting(100_000))
    verdict = check_via(proxy, secret={"name": "momento"}).check("p", "k1", PUBLISHED)
    assert not verdict.ok
    assert "unreadable answer" in verdict.detail, verdict.detail


def test_an_error_status_message_is_never_shown(kube: KubeApiServer, proxy: HostileIssuer) -> None:
    body = json.dumps({"kind": "Status", "reason": "Forbidden", "message": "<!channel> sk-secret-token", "code": 403})
    proxy.on("GET", SECRET, replace(403, body.encode()))
    verdict = check_via(proxy, secret={"name": "momento"}).check("p", "k1", PUBLISHED)
    assert "forbidden: get secrets in namespace apps" in verdict.detail
    assert "sk-secret-token" not in verdict.detail and "channel" not in verdict.detail


# ---- leader election ----------------------------------------------------------------------------------------


def lease_client(proxy: HostileIssuer, timeout: float = 1.0) -> LeaseClient:
    return LeaseClient(client_via(proxy), "rotator", "rotator", timeout=timeout)


@pytest.mark.parametrize(
    "behaviour, why",
    [
        pytest.param(drip_headers(0.05), "no answer within 1s", id="dripped-headers"),
        pytest.param(drip(0.05, body=b" " * 4000 + b"{}"), "no answer within 1s", id="dripped-body"),
        pytest.param(huge(), "larger than 65536 bytes", id="huge"),
        pytest.param(huge(status=500), "larger than 65536 bytes", id="huge-error"),
        pytest.param(deep_nesting(100_000), "unreadable answer", id="deep-nesting"),
    ],
)
def test_a_hostile_lease_answer_fails_within_the_deadline(proxy: HostileIssuer, behaviour: Any, why: str) -> None:
    proxy.on("GET", LEASES, behaviour)
    client = lease_client(proxy)
    t = time.monotonic()
    with pytest.raises(LeaseApiFailure) as failure:
        client.get()
    assert time.monotonic() - t < 2.0
    assert why in failure.value.why, failure.value.why


def test_lease_writes_go_through_the_bounded_client(kube: KubeApiServer, proxy: HostileIssuer) -> None:
    client = lease_client(proxy)
    assert client.get() is None
    now = datetime.now(UTC).replace(microsecond=5)
    lease = client.create({"holderIdentity": "a", "leaseDurationSeconds": 3, "acquireTime": now, "renewTime": now})
    client.replace(lease, {**lease["spec"], "renewTime": now + timedelta(seconds=1)})
    assert kube.lease("rotator", "rotator")["spec"]["holderIdentity"] == "a"
    assert [m for m, p in proxy.calls] == ["GET", "POST", "PUT"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_daemon_whose_api_server_drips_keeps_campaigning_then_leads(tmp_path: Path, kube: KubeApiServer) -> None:
    """A real ``rotator run`` with leader election through a kubeconfig: while the API server drips its answers,
    each Lease request is cut at its deadline (half of ``renew_deadline``) and retried; once it answers, the
    daemon leads and runs its pass. Before the bounded client the first request hung for as long as it dripped."""
    with harness(tmp_path, real_time=True) as h, HostileIssuer(kube.url) as proxy:
        proxy.on("GET", LEASES, drip_headers(0.05))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": proxy.url}}],
                    "users": [{"name": "u", "user": {"token": "test"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        policy = {
            "name": "alpha",
            "role": "operator",
            "lifetime": "1h",
            "rotate_before": "20m",
            "grace": "5m",
            "orphan_after": "10m",
            "format": "json",
            "targets": [{"store": "local", "secret": "alpha/momento"}],
        }
        cfg = h.write_config(
            [policy],
            interval="1s",
            clock_skew="1s",
            pass_timeout="10s",
            http={"listen": None},
            leader_election={
                "enabled": True,
                "in_cluster": False,
                "kubeconfig": str(kubeconfig),
                "namespace": "rotator",
                "lease_duration": "3s",
                "renew_deadline": "2s",
                "retry_period": "0.3s",
            },
        )
        stderr = tmp_path / "run.stderr"
        with stderr.open("w") as err:
            proc = subprocess.Popen([ROTATOR, "-c", str(cfg), "run"], cwd=h.work, stderr=err, stdout=subprocess.DEVNULL)
            try:
                lease = "/apis/coordination.k8s.io/v1/namespaces/rotator/leases/rotator"
                deadline = time.monotonic() + 20  # the process's start-up is slow on a loaded runner: poll
                while time.monotonic() < deadline and proxy.count("GET", lease) < 3:
                    time.sleep(0.2)
                gets = proxy.count("GET", lease)
                assert gets >= 3, (gets, stderr.read_text()[-2000:])  # cut at 1s each, and tried again
                assert "no answer within 1s" in stderr.read_text()
                assert h.live_ids("alpha") == []  # no pass ran without the Lease
                proxy.on("GET", LEASES, None)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and len(h.live_ids("alpha")) != 1:
                    time.sleep(0.2)
                assert len(h.live_ids("alpha")) == 1, stderr.read_text()[-2000:]
                assert proc.poll() is None
            finally:
                proc.terminate()
                proc.wait(10)

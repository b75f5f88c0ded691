"""``rollout_status``: complete exactly when ``kubectl rollout status`` says so
(kubectl/pkg/polymorphichelpers/rollout_status.go), on hand-made workload objects."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.reload.kubernetes import rollout_status


def deployment(gen: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    st = {"observedGeneration": observed, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, **status}
    return {"metadata": {"generation": gen}, "spec": {"replicas": 3}, "status": st}


@pytest.mark.parametrize(
    ("obj", "state", "words"),
    [
        (deployment(), "done", "3 replicas"),
        (deployment(gen=3), "rolling", "spec update to be observed"),
        (deployment(updatedReplicas=1), "rolling", "1 of 3 new replicas"),
        (deployment(replicas=4), "rolling", "old replicas pending termination"),
        (deployment(availableReplicas=2), "rolling", "2 of 3 updated replicas available"),
        (
            deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]),
            "failed",
            "progress deadline",
        ),
    ],
)
def test_deployment(obj: dict[str, Any], state: str, words: str) -> None:
    got, detail = rollout_status("Deployment", obj)
    assert got == state and words in detail


def statefulset(strategy: str = "RollingUpdate", partition: int | None = None, **status: Any) -> dict[str, Any]:
    st = {
        "observedGeneration": 2,
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "currentRevision": "r2",
        "updateRevision": "r2",
    }
    upd: dict[str, Any] = {"type": strategy}
    if partition is not None:
        upd["rollingUpdate"] = {"partition": partition}
    return {"metadata": {"generation": 2}, "spec": {"replicas": 3, "updateStrategy": upd}, "status": {**st, **status}}


def test_statefulset() -> None:
    assert rollout_status("StatefulSet", statefulset())[0] == "done"
    assert rollout_status("StatefulSet", statefulset(currentRevision="r1"))[0] == "rolling"
    assert rollout_status("StatefulSet", statefulset(readyReplicas=2))[0] == "rolling"
    assert rollout_status("StatefulSet", statefulset(observedGeneration=0))[0] == "rolling"
    assert rollout_status("StatefulSet", statefulset(partition=2, updatedReplicas=1, currentRevision="r1"))[0] == "done"
    assert (
        rollout_status("StatefulSet", statefulset(partition=1, updatedReplicas=1, currentRevision="r1"))[0] == "rolling"
    )
    state, detail = rollout_status("StatefulSet", statefulset("OnDelete"))
    assert state == "failed" and "OnDelete" in detail


def test_daemonset() -> None:
    def ds(**status: Any) -> dict[str, Any]:
        st = {"observedGeneration": 5, "desiredNumberScheduled": 4, "updatedNumberScheduled": 4, "numberAvailable": 4}
        return {"metadata": {"generation": 5}, "spec": {}, "status": {**st, **status}}

    assert rollout_status("DaemonSet", ds())[0] == "done"
    assert rollout_status("DaemonSet", ds(updatedNumberScheduled=3))[0] == "rolling"
    assert rollout_status("DaemonSet", ds(numberAvailable=3))[0] == "rolling"
    assert rollout_status("DaemonSet", ds(observedGeneration=4))[0] == "rolling"


def test_garbage_is_never_done() -> None:
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        obj = {"metadata": {"generation": "x"}, "spec": ["x"], "status": {"observedGeneration": None, "conditions": 7}}
        state, _ = rollout_status(kind, obj)  # type: ignore[arg-type]
        assert state in ("rolling", "done")
    # a Deployment whose status says nothing, for a spec that wants replicas, is not done
    assert (
        rollout_status("Deployment", {"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": {}})[0]
        == "rolling"
    )

"""A local Kubernetes API server that the real ``kubernetes`` Python client talks to over HTTP.

It serves what the ``kubernetes`` pickup check reads, in the shapes the API server uses:

- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=&limit=&continue=``: a ``PodList`` of the namespace's pods
  matching the selector (equality ``a=b`` / ``a==b``, inequality ``a!=b``, sets ``a in (x,y)`` /
  ``a notin (x,y)``, existence ``a`` / ``!a``, comma-separated and ANDed; a bad selector is a 400
  ``BadRequest``), paged with ``metadata.continue`` when ``limit`` is given;
- ``GET /api/v1/namespaces/{ns}/pods/{name}`` and ``GET /api/v1/namespaces/{ns}/secrets/{name}``;
- Secret writes (what the ``kubernetes`` store does), with the API server's optimistic concurrency from the API
  conventions, "Concurrency Control and Consistency": "When a record is about to be updated, its version is
  checked against a pre-saved value, and if it doesn't match, the update fails with a StatusConflict (HTTP
  status code 409)", and the resourceVersion "is changed by the server every time an object is modified":

  - ``PUT /api/v1/namespaces/{ns}/secrets/{name}`` replaces the Secret. A stale ``metadata.resourceVersion`` is
    409 ``Conflict`` ("the object has been modified; please apply your changes to the latest version and try
    again"). Without one the update is made unconditionally: the Secret strategy's
    ``AllowUnconditionalUpdate()`` returns true (kubernetes/kubernetes ``pkg/registry/core/secret/strategy.go``;
    the Lease strategy's returns false, hence the 422 above), so only a client that sends the version it read
    is protected. ``AllowCreateOnUpdate()`` is false there too: a ``PUT`` of a missing Secret is 404
    ``NotFound``. A Secret's ``type`` cannot change, nor its data once ``immutable: true`` (422 ``Invalid``);
  - ``POST /api/v1/namespaces/{ns}/secrets`` creates one (201); an existing name is 409 ``AlreadyExists``
    (API conventions, "HTTP Status codes"), a ``resourceVersion`` in the body is a 400;
  - every write bumps ``metadata.resourceVersion`` and keeps ``uid`` and ``creationTimestamp``; ``stringData``
    is merged into ``data`` and never stored ("All keys and values are merged into the data field on write,
    overwriting any existing values. The stringData field is never output when reading from the API": the
    Secret reference, https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/);
  - validation as ``ValidateSecret`` (kubernetes/kubernetes ``pkg/apis/core/validation/validation.go``): each
    data key must be ``IsConfigMapKey`` (``[-._a-zA-Z0-9]+``, at most 253 characters, not ``.``, ``..`` or
    starting with ``..``: k8s.io/apimachinery ``pkg/util/validation``) and the values must total at most
    ``MaxSecretSize`` (1 MiB; the reference: "The total bytes of the values in the Data field must be less
    than MaxSecretSize bytes"), else 422 ``Invalid``; annotations total at most 256 KiB (422). A ``data`` value
    that is not base64 is a 400 ``BadRequest`` (the body cannot be decoded: ``data`` is ``[]byte``, base64 in
    JSON);
  - RBAC: ``update`` and ``create`` on ``secrets``, evaluated with the same rules as reads. ``create`` never
    names an object in its URL, so a rule with ``resourceNames`` never allows it ("you cannot restrict create
    or deletecollection requests by their resource name", Using RBAC Authorization);
- ``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``: "SelfSubjectAccessReview checks whether or
  the current user can perform an action ... users should always be able to check whether they can perform an
  action" (authorization.k8s.io/v1): any known token may ask; ``status.allowed`` is the token's rules applied
  to ``spec.resourceAttributes`` (``kubectl auth can-i``);
- Leases (``coordination.k8s.io/v1``, what leader election uses): ``GET``/``PUT``
  ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`` and ``POST .../leases``, with the API server's
  optimistic concurrency: every write bumps ``metadata.resourceVersion``; a ``PUT`` must carry the current one
  (stale: 409 ``Conflict``, "the object has been modified; please apply your changes to the latest version and
  try again"; none: 422 ``Invalid``, since the Lease strategy refuses unconditional updates), a ``POST`` of an
  existing name is 409 ``AlreadyExists``, a missing Lease is 404 ``NotFound``. Sources: the API conventions,
  "Concurrency Control and Consistency"
  (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#concurrency-control-and-consistency)
  and "HTTP Status codes" (409 Conflict / AlreadyExists, 422 Invalid) in the same document; the Lease
  reference (https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/): ``acquireTime``
  and ``renewTime`` are ``MicroTime``, which the server parses with the layout
  ``2006-01-02T15:04:05.000000Z07:00`` (exactly six fractional digits; anything else is a 400 ``BadRequest``),
  and ``leaseDurationSeconds`` must be greater than 0;
- errors as ``Status`` objects (``{"kind": "Status", "status": "Failure", "reason", "message", "details",
  "code"}``): 404 ``NotFound`` (``secrets "x" not found``), 401 ``Unauthorized`` for a missing or unknown bearer
  token, 403 ``Forbidden`` (``secrets "x" is forbidden: User "..." cannot get resource "secrets" in API group ""
  in the namespace "ns"``) for a known token whose RBAC rules do not allow the request.

- apps/v1 workloads (Deployments, StatefulSets, DaemonSets,
  https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/):
  ``GET /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets|daemonsets}[/{name}]`` (lists filtered by
  ``labelSelector`` on ``metadata.labels``, paged like pods; the items of a typed list carry no kind/apiVersion)
  and ``PATCH`` of a named one (https://kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply):
  ``application/strategic-merge-patch+json`` (maps merge, ``null`` deletes, the pod template's keyed lists such
  as ``containers``/``env``/``volumes`` merge by their merge key, ``$patch`` directives), ``application/
  merge-patch+json`` (RFC 7386) and ``application/json-patch+json`` (RFC 6902); any other type is 415
  ``UnsupportedMediaType`` (server-side apply is not modelled). A ``metadata.resourceVersion`` in the patched
  object that differs from the stored one is 409 ``Conflict``; a missing workload 404 ``NotFound``; RBAC verbs
  get/list/patch in API group ``apps`` (403 before 415/404). A patch that changes nothing is not written (same
  resourceVersion); otherwise the resourceVersion moves and ``metadata.generation`` follows the strategies'
  PrepareForUpdate (any spec change; for a Deployment also metadata.annotations). ``status`` is the
  controllers'. Selector immutability, selector/template-label match and replicas >= 0 are validated (422).
- a rollout controller (:meth:`KubeApiServer.step`, :meth:`KubeApiServer.auto_rollout`) with the kubelet's part:
  pods created from the template (its labels and annotations, start times by :attr:`KubeApiServer.clock`),
  Ready one step later unless :meth:`KubeApiServer.stall_rollout`; deleted pods stay listed with a
  ``deletionTimestamp`` for one step; Deployments roll by maxSurge/maxUnavailable (added as 1/0) with the
  Available/Progressing conditions and ProgressDeadlineExceeded, StatefulSets from the highest ordinal (partition,
  OnDelete, the stale currentRevision of OnDelete), DaemonSets node by node (maxUnavailable, OnDelete); the
  status fields ``kubectl rollout status`` reads, which :func:`rollout_status` evaluates as kubectl does. A
  consumer model: a container reading a Secret through ``env.valueFrom.secretKeyRef`` records the key id it read
  at start in the pod annotation :data:`KEY_ID_ANNOTATION` (a missing Secret: CreateContainerConfigError).

Tokens and RBAC: the token ``test`` may do anything. :meth:`KubeApiServer.add_token` adds a token limited to
RBAC rules (the ``rules`` of a Role, evaluated like the API server: apiGroups, verbs, resources and
resourceNames within the Role's namespace); :meth:`KubeApiServer.grant_role` reads them from a Role manifest.

Test helpers: :meth:`on_request` runs a function before each request is handled (a concurrent writer between
a client's read and its write), :meth:`secret` and :meth:`secret_data` read a Secret (its data decoded),
:meth:`touch_secret` changes a Secret as another writer would (a new resourceVersion), :meth:`add_pod`
(labels, ``startTime``, containers' ``startedAt``, the ``Ready`` condition) adds or replaces a pod,
:meth:`put_secret` adds or replaces a Secret (values base64-encoded as the API does),
:meth:`lease` reads a Lease, :meth:`lease_writes` lists every accepted Lease write (``(method, holder)``),
:meth:`fail_next` queues error statuses; :meth:`add_workload`, :meth:`workload`, :meth:`workload_pods`,
:meth:`workload_patches`, :meth:`step`, :meth:`run_rollout`, :meth:`auto_rollout`, :meth:`stall_rollout`,
:meth:`running_key_ids` and :meth:`all_running_key_ids` drive and read the workloads. :meth:`api_client` gives
a ``kubernetes.client.ApiClient`` pointed at the server
(``Configuration(host=url, api_key={"authorization": "Bearer <token>"})``). Every request is in
:attr:`requests` as ``(method, path, status)``. Bound to 127.0.0.1 on a free port; use
:func:`running_kube_api` (or ``start``/``stop``) from a fixture. With ``tls=True`` it serves HTTPS with a
throwaway CA (trustme), as the in-cluster API server does, and :meth:`service_account` writes what the
kubelet mounts in a pod (``token``, ``ca.crt``, ``namespace``) and returns its ``KUBERNETES_SERVICE_HOST``/``PORT``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.servers.loopback import serve, shut

DEFAULT_TOKEN = "test"
DEFAULT_USER = "system:serviceaccount:rotator:rotator"

_PATH_RE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>pods|secrets)(?:/(?P<name>[^/]+))?$")
_ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
#: ``core.MaxSecretSize`` and ``TotalAnnotationSizeLimitB``
MAX_SECRET_SIZE = 1024 * 1024
MAX_ANNOTATIONS_SIZE = 256 * 1024
_CONFIG_MAP_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+\Z")
_LABEL_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
_LEASE_RE = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?$")
#: metav1.RFC3339Micro, the layout MicroTime is parsed with: exactly six fractional digits
_MICRO_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(?:Z|[+-]\d{2}:\d{2})$")
LEASES = "leases.coordination.k8s.io"
_KEY_RE = re.compile(r"^(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- label selectors --------------------------------------------------------------------------------------


class SelectorError(ValueError):
    pass


Requirement = tuple[str, str, frozenset[str]]  # key, op (in, notin, exists, !), values


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_selector(selector: str) -> list[Requirement]:
    """A label selector as requirements; raises SelectorError with the API server's kind of message."""
    reqs: list[Requirement] = []
    if not selector.strip():
        return reqs
    for raw in _split_top(selector):
        part = raw.strip()
        m = re.fullmatch(r"(\S+?)\s+(in|notin)\s+\(([^()]*)\)", part)
        if m:
            key, op, values = m.group(1), m.group(2), frozenset(v.strip() for v in m.group(3).split(","))
        elif "!=" in part:
            key, _, value = part.partition("!=")
            key, op, values = key.strip(), "notin", frozenset({value.strip()})
        elif "=" in part:
            key, _, value = part.partition("==") if "==" in part else part.partition("=")
            key, op, values = key.strip(), "in", frozenset({value.strip()})
        elif part.startswith("!"):
            key, op, values = part[1:].strip(), "!", frozenset()
        else:
            key, op, values = part, "exists", frozenset()
        if not _KEY_RE.match(key) or any(
            v and not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", v) for v in values
        ):
            raise SelectorError(f"unable to parse requirement: {part!r}")
        reqs.append((key, op, values))
    return reqs


def matches(reqs: list[Requirement], labels: Mapping[str, str]) -> bool:
    for key, op, values in reqs:
        if op == "in" and labels.get(key) not in values:
            return False
        if op == "notin" and key in labels and labels[key] in values:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


# ---- RBAC -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule, scoped to a namespace (``None``: a ClusterRole binding)."""

    verbs: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None
    api_groups: frozenset[str] = frozenset({""})

    def allows(self, verb: str, resource: str, namespace: str, name: str | None, group: str = "") -> bool:
        if self.namespace is not None and self.namespace != namespace:
            return False
        if not {group, "*"} & self.api_groups:
            return False
        if not ({verb, "*"} & self.verbs and {resource, "*"} & self.resources):
            return False
        # resourceNames restrict requests naming one object; a list never names one
        return not self.resource_names or (name is not None and name in self.resource_names)


def rules_from_role(role: Mapping[str, Any]) -> list[Rule]:
    """The rules of a Role manifest (a parsed YAML document), scoped to its namespace."""
    ns = role.get("metadata", {}).get("namespace")
    out = []
    for r in role.get("rules", []):
        out.append(
            Rule(
                frozenset(r.get("verbs", [])),
                frozenset(r.get("resources", [])),
                frozenset(r.get("resourceNames", [])),
                ns,
                frozenset(r.get("apiGroups", [])),
            )
        )
    return out


# ---- apps/v1 workloads: constants, patches, rollout status --------------------------------------------------

_APPS_RE = re.compile(
    r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>deployments|statefulsets|daemonsets)(?:/(?P<name>[^/]+))?$"
)
#: kind -> resource (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/)
WORKLOAD_KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
_KIND_OF = {resource: kind for kind, resource in WORKLOAD_KINDS.items()}
#: the pod annotation where the consumer model records the key id its process read at start
KEY_ID_ANNOTATION = "test.rotator.momento.dev/key-id"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
#: the patch types served here. The API server also takes application/apply-patch+yaml (server-side apply),
#: which is not modelled: it is answered like any other unknown type, 415
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)
#: strategic merge patch: the list fields of a pod template that merge by a key (``patchMergeKey`` in
#: k8s.io/api core/v1 types.go); every other list is replaced whole, as in a JSON merge patch
_SMP_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
#: k8s.io/apimachinery pkg/util/rand SafeEncodeString's alphabet (no vowels, no confusable characters)
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DELETE = object()


def _real_clock() -> datetime:
    return datetime.now(UTC)


def _safe_hash(text: str, length: int = 10) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in digest[:length])


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _normalized(obj: Any) -> Any:
    """``obj`` as apiequality.Semantic.DeepEqual sees it once decoded into the typed object: null fields are
    zero values, and empty and nil maps/slices are equal (k8s.io/apimachinery third_party/forked/golang/reflect)."""
    if isinstance(obj, dict):
        out = {k: _normalized(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(obj, list):
        return [_normalized(v) for v in obj]
    return obj


def _without_nulls(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_without_nulls(v) for v in obj]
    return obj


def _bad_request(message: str) -> _Reply:
    return _Reply(400, status_object(400, "BadRequest", message))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes a member, anything else (lists
    included) replaces the target value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(original: Any, patch: Any) -> Any:
    """A strategic merge patch (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/,
    k8s.io/apimachinery pkg/util/strategicpatch): a JSON merge patch, except that the lists in
    :data:`_SMP_MERGE_KEYS` merge element by element on their merge key, and the directives ``$patch: replace``
    (a map, or a list element ``{"$patch": "replace"}``: replace the whole list) and ``$patch: delete`` (a map,
    or a list element with its merge key) are honoured. ``$setElementOrder/...`` is accepted and ignored (it only
    orders); ``$retainKeys`` and ``$deleteFromPrimitiveList/...`` are not modelled (400)."""
    result = _smp_map(original if isinstance(original, dict) else {}, patch)
    return {} if result is _DELETE else result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and set(v) == {"$patch"})]
    return value


def _smp_map(original: dict[str, Any], patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    if directive is not None:
        raise _bad_request(f"unknown patch type: {directive!r} in map: {patch!r}")
    result = dict(original)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$"):
            raise _bad_request(f"the strategic merge patch directive {key!r} is not modelled by this test server")
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        merge_key = _SMP_MERGE_KEYS.get(key)
        if isinstance(value, list) and merge_key is not None:
            result[key] = _smp_list(current if isinstance(current, list) else [], value, merge_key)
        elif isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = _strip_directives(copy.deepcopy(value))
    return result


def _smp_list(original: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" and len(item) == 1 for item in patch):
        return _strip_directives(copy.deepcopy(patch))  # type: ignore[no-any-return]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise _bad_request(f"map: {item!r} does not contain declared merge key: {merge_key}")
        at = next(
            (i for i, e in enumerate(result) if isinstance(e, dict) and e.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if at is not None:
                del result[at]
            continue
        merged = _smp_map(result[at] if at is not None else {}, item)
        if merged is _DELETE:
            continue
        if at is None:
            result.append(merged)
        else:
            result[at] = merged
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ValueError(f"path {'/' + '/'.join(parts)!r} does not exist")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON Patch: ``add``, ``remove``, ``replace``, ``move``, ``copy``, ``test``. A body that is not a
    list of operations is a 400 (the server cannot decode it); an operation that fails is a 422, as in
    k8s.io/apiserver pkg/endpoints/handlers/patch.go."""
    if not isinstance(ops, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            if not isinstance(op, dict) or not isinstance(op.get("path"), str):
                raise ValueError(f"invalid operation {op!r}")
            kind = op.get("op")
            parts = _pointer(op["path"])
            if kind in ("move", "copy"):
                src = _pointer(str(op.get("from", "")))
                value = copy.deepcopy(_resolve(doc, src))
                if kind == "move":
                    doc = _remove_at(doc, src)
                doc = _add_at(doc, parts, value)
            elif kind == "add":
                doc = _add_at(doc, parts, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                doc = _remove_at(doc, parts)
            elif kind == "replace":
                doc = _add_at(_remove_at(doc, parts), parts, copy.deepcopy(op.get("value")))
            elif kind == "test":
                if _resolve(doc, parts) != op.get("value"):
                    raise ValueError(f"testing value {op['path']} failed")
            else:
                raise ValueError(f"Unexpected kind: {kind}")
    except (ValueError, TypeError, IndexError) as exc:
        raise _Reply(422, status_object(422, "Invalid", str(exc))) from None
    return doc


def _add_at(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if index > len(parent):
            raise ValueError(f"index {index} out of range")
        parent.insert(index, value)
    else:
        raise ValueError(f"cannot add at {'/'.join(parts)}")
    return doc


def _remove_at(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return None
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise ValueError(f"path {'/' + '/'.join(parts)!r} does not exist")
    return doc


class RolloutError(Exception):
    """What ``kubectl rollout status`` reports as an error (a deadline exceeded, a strategy it cannot follow)."""


def rollout_status(workload: Mapping[str, Any]) -> tuple[str, bool]:
    """``(message, done)`` as ``kubectl rollout status`` computes them from a workload object: a port of the
    status viewers in kubernetes/kubectl ``pkg/polymorphichelpers/rollout_status.go``. Raises
    :class:`RolloutError` where kubectl fails (ProgressDeadlineExceeded; a non-RollingUpdate strategy)."""
    kind = workload.get("kind")
    meta = workload.get("metadata") or {}
    spec = workload.get("spec") or {}
    st = workload.get("status") or {}
    name, generation, observed = meta.get("name"), meta.get("generation", 0), st.get("observedGeneration", 0)
    replicas = spec.get("replicas")
    if kind == "Deployment":
        if generation <= observed:
            cond = next((c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), None)
            if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
                raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
            updated = st.get("updatedReplicas", 0)
            if replicas is not None and updated < replicas:
                return (
                    f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} new replicas '
                    "have been updated...",
                    False,
                )
            if st.get("replicas", 0) > updated:
                return (
                    f'Waiting for deployment "{name}" rollout to finish: {st.get("replicas", 0) - updated} old '
                    "replicas are pending termination...",
                    False,
                )
            if st.get("availableReplicas", 0) < updated:
                return (
                    f'Waiting for deployment "{name}" rollout to finish: {st.get("availableReplicas", 0)} of '
                    f"{updated} updated replicas are available...",
                    False,
                )
            return f'deployment "{name}" successfully rolled out', True
        return "Waiting for deployment spec update to be observed...", False
    if kind == "DaemonSet":
        if (spec.get("updateStrategy") or {}).get("type") != "RollingUpdate":
            raise RolloutError("rollout status is only available for RollingUpdate strategy type")
        if generation <= observed:
            desired, updated = st.get("desiredNumberScheduled", 0), st.get("updatedNumberScheduled", 0)
            if updated < desired:
                return (
                    f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} new pods have '
                    "been updated...",
                    False,
                )
            if st.get("numberAvailable", 0) < desired:
                return (
                    f'Waiting for daemon set "{name}" rollout to finish: {st.get("numberAvailable", 0)} of '
                    f"{desired} updated pods are available...",
                    False,
                )
            return f'daemon set "{name}" successfully rolled out', True
        return "Waiting for daemon set spec update to be observed...", False
    if kind == "StatefulSet":
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type") != "RollingUpdate":
            raise RolloutError("rollout status is only available for RollingUpdate strategy type")
        if observed == 0 or generation > observed:
            return "Waiting for statefulset spec update to be observed...", False
        if replicas is not None and st.get("readyReplicas", 0) < replicas:
            return f"Waiting for {replicas - st.get('readyReplicas', 0)} pods to be ready...", False
        rolling = strategy.get("rollingUpdate")
        if rolling is not None:
            partition = rolling.get("partition")
            if replicas is not None and partition is not None and st.get("updatedReplicas", 0) < replicas - partition:
                return (
                    f"Waiting for partitioned roll out to finish: {st.get('updatedReplicas', 0)} out of "
                    f"{replicas - partition} new pods have been updated...",
                    False,
                )
            return f"partitioned roll out complete: {st.get('updatedReplicas', 0)} new pods have been updated...", True
        if st.get("updateRevision") != st.get("currentRevision"):
            return (
                f"waiting for statefulset rolling update to complete {st.get('updatedReplicas', 0)} pods at "
                f"revision {st.get('updateRevision')}...",
                False,
            )
        return (
            f"statefulset rolling update complete {st.get('currentReplicas', 0)} pods at revision "
            f"{st.get('currentRevision')}...",
            True,
        )
    raise RolloutError(f"no status viewer has been implemented for {kind}")


@dataclass
class _Workload:
    """A workload as served (``obj``) and what its controller keeps to itself."""

    namespace: str
    kind: str
    name: str
    obj: dict[str, Any]
    #: DaemonSet: the nodes it schedules on (node-0, node-1, ...)
    nodes: int = 0
    stalled: bool = False
    #: every accepted patch body, in order
    patches: list[Any] = dc_field(default_factory=list)
    #: Deployment: its ReplicaSets by pod-template-hash: {"name", "uid", "revision"}
    replica_sets: dict[str, dict[str, Any]] = dc_field(default_factory=dict)
    #: StatefulSet: the revision its pods [0, currentReplicas) run
    current_revision: str = ""
    #: Deployment: the name of a ReplicaSet created by this sync, for the NewReplicaSetCreated condition
    created_rs: str | None = None

    @property
    def resource(self) -> str:
        return WORKLOAD_KINDS[self.kind]

    @property
    def owner_uids(self) -> set[str]:
        if self.kind == "Deployment":
            return {str(rs["uid"]) for rs in self.replica_sets.values()}
        return {str(self.obj["metadata"]["uid"])}


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: maxSurge rounds up, maxUnavailable rounds down."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    raise ValueError(f"invalid value for IntOrString: {value!r}")


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions", [])
    )


def _pod_terminating(pod: Mapping[str, Any]) -> bool:
    return "deletionTimestamp" in (pod.get("metadata") or {})


def _pod_config_error(pod: Mapping[str, Any]) -> bool:
    return any(
        (cs.get("state") or {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
        for cs in (pod.get("status") or {}).get("containerStatuses", [])
    )


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# ---- the server -------------------------------------------------------------------------------------------


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class KubeApiServer:
    """See the module docstring. Thread-safe; its state is plain dicts guarded by one lock."""

    def __init__(self, *, tls: bool = False) -> None:
        self.tls = tls
        self._ca: Any = None
        self._lock = threading.Lock()
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        #: every accepted Lease write: (method, namespace/name, holderIdentity)
        self.lease_log: list[tuple[str, str, str]] = []
        #: token -> (user name, its RBAC rules or None for everything)
        self.tokens: dict[str, tuple[str, list[Rule] | None]] = {DEFAULT_TOKEN: (DEFAULT_USER, None)}
        self.requests: list[tuple[str, str, int]] = []
        self._faults: deque[int] = deque()
        self._hook: Callable[[str, str], None] | None = None
        self._rv = 1000
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: the server's clock (aware UTC): pod start times, condition times, progress deadlines. Tests may move it.
        self.clock: Callable[[], datetime] = _real_clock
        #: apps/v1 workloads by (namespace, resource, name), with the controller's private state
        self.workloads: dict[tuple[str, str, str], _Workload] = {}
        #: StatefulSet ``OnDelete``: whether ``status.currentRevision`` catches up once every pod runs the update
        #: revision. False models the long-standing behaviour (kubernetes/kubernetes#73492, #106055: only a
        #: RollingUpdate completes, ``completeRollingUpdate`` in pkg/controller/statefulset/stateful_set_utils.go);
        #: True the fix of kubernetes/kubernetes#136833.
        self.ondelete_promotes_current_revision = False
        self._pod_seq: dict[tuple[str, str], int] = {}
        self._seq = 0
        self._auto: tuple[threading.Thread, threading.Event] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> KubeApiServer:
        server = self

        class Handler(_Handler):
            api = server

        ctx = None
        if self.tls:  # as the in-cluster API server: HTTPS with a cluster CA (a throwaway one from trustme)
            import ssl

            import trustme

            self._ca = trustme.CA()
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert("127.0.0.1").configure_cert(ctx)
        self._httpd, self._thread = serve(Handler, "kube-api", tls=ctx, poll=0.05)
        return self

    def service_account(self, directory: Path, *, namespace: str, token: str = DEFAULT_TOKEN) -> dict[str, str]:
        """Write what the kubelet mounts for a pod's service account (``token``, ``ca.crt``, ``namespace``) into
        ``directory``; returns the environment the kubelet gives such a pod (``KUBERNETES_SERVICE_HOST``/``PORT``).
        Needs ``tls=True``: in-cluster clients always use HTTPS."""
        assert self.tls and self._ca is not None, "in-cluster clients speak HTTPS: KubeApiServer(tls=True)"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(token)
        (directory / "namespace").write_text(namespace)
        self._ca.cert_pem.write_to_path(str(directory / "ca.crt"))
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    def stop(self) -> None:
        self.stop_auto_rollout()
        shut(self._httpd, self._thread)
        self._httpd, self._thread = None, None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        self.stop_auto_rollout()
        with self._lock:
            self.workloads.clear()
            self._pod_seq.clear()
            self.clock = _real_clock
            self.pods.clear()
            self.secrets.clear()
            self.leases.clear()
            self.lease_log.clear()
            self.tokens = {DEFAULT_TOKEN: (DEFAULT_USER, None)}
            self.requests.clear()
            self._faults.clear()
            self._hook = None

    # -- clients --------------------------------------------------------------------------------------------

    def configuration(self, token: str = DEFAULT_TOKEN) -> Any:
        from kubernetes import client

        return client.Configuration(host=self.url, api_key={"authorization": f"Bearer {token}"})

    def api_client(self, token: str = DEFAULT_TOKEN) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration(token))

    # -- state helpers --------------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str],
        started_at: datetime | None,
        ready: bool = True,
        containers: Mapping[str, datetime | None] | None = None,
        phase: str = "Running",
    ) -> dict[str, Any]:
        """Add or replace a pod. ``started_at`` is ``status.startTime``; ``containers`` maps container names to
        their ``state.running.startedAt`` (``None``: waiting); default one container ``app`` started then."""
        if containers is None:
            containers = {"app": started_at}
        with self._lock:
            pod = self._build_pod(
                namespace, name, labels=labels, started_at=started_at, ready=ready, containers=containers, phase=phase
            )
            self.pods[(namespace, name)] = pod
            self._pod_seq[(namespace, name)] = self._next_seq()
        return pod

    def _build_pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str],
        started_at: datetime | None,
        ready: bool,
        containers: Mapping[str, datetime | None],
        phase: str,
        images: Mapping[str, str] | None = None,
        waiting: tuple[str, str | None] = ("Pending", None),
    ) -> dict[str, Any]:
        """The pod model (caller holds the lock): ``containers`` maps names to ``state.running.startedAt``
        (``None``: waiting with ``waiting`` = (reason, message)); ``images`` by container name."""
        statuses = []
        for cname, cstart in containers.items():
            image = (images or {}).get(cname) or f"example/{cname}:1"
            if cstart is not None:
                state: dict[str, Any] = {"running": {"startedAt": _time(cstart)}}
            else:
                state = {"waiting": {"reason": waiting[0]}}
                if waiting[1]:
                    state["waiting"]["message"] = waiting[1]
            statuses.append(
                {
                    "name": cname,
                    "image": image,
                    "imageID": f"docker.io/{image.split(':')[0]}@sha256:{'0' * 64}",
                    "ready": ready and cstart is not None,
                    "started": cstart is not None,
                    "restartCount": 0,
                    "state": state,
                }
            )
        now = _time(self.clock())
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": now},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
        ]
        status: dict[str, Any] = {"phase": phase, "conditions": conditions, "containerStatuses": statuses}
        if started_at is not None:
            status["startTime"] = _time(started_at)
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "creationTimestamp": _time(started_at or self.clock()),
                "labels": dict(labels),
            },
            "spec": {
                "containers": [{"name": c, "image": (images or {}).get(c) or f"example/{c}:1"} for c in containers]
            },
            "status": status,
        }

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def remove_pod(self, namespace: str, name: str) -> None:
        """Remove a pod at once (a force delete: no graceful termination). For a StatefulSet or DaemonSet with
        ``OnDelete`` this is how a test deletes pods; the next :meth:`step` recreates them."""
        with self._lock:
            self.pods.pop((namespace, name), None)
            self._pod_seq.pop((namespace, name), None)

    def put_secret(self, namespace: str, name: str, data: Mapping[str, str | bytes], *, type: str = "Opaque") -> None:
        """Add or replace a Secret; ``data`` values are plain text/bytes (stored base64-encoded)."""
        encoded = {
            k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode("ascii") for k, v in data.items()
        }
        with self._lock:
            self.secrets[(namespace, name)] = {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": self._next_rv(),
                    "creationTimestamp": _time(datetime.now(UTC)),
                },
                "data": encoded,
                "type": type,
            }

    def put_raw_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """A Secret whose ``data`` values are sent as given (e.g. not base64)."""
        self.put_secret(namespace, name, {})
        with self._lock:
            self.secrets[(namespace, name)]["data"] = dict(data)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the Secret as the API serves it (``data`` base64), or None."""
        with self._lock:
            obj = self.secrets.get((namespace, name))
            return json.loads(json.dumps(obj)) if obj is not None else None

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data entries, decoded (UTF-8), or None when there is no such Secret."""
        obj = self.secret(namespace, name)
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    def touch_secret(self, namespace: str, name: str, *, labels: Mapping[str, str] | None = None) -> str:
        """Change the Secret as another writer would (``labels`` merged in): a new resourceVersion, returned."""
        with self._lock:
            obj = self.secrets[(namespace, name)]
            obj["metadata"].setdefault("labels", {}).update(labels or {"touched": "yes"})
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return str(obj["metadata"]["resourceVersion"])

    def on_request(self, hook: Callable[[str, str], None] | None) -> None:
        """Call ``hook(method, path)`` before each request is handled (None: stop)."""
        with self._lock:
            self._hook = hook

    def delete_secret(self, namespace: str, name: str) -> None:
        with self._lock:
            self.secrets.pop((namespace, name), None)

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the Lease, or None."""
        with self._lock:
            obj = self.leases.get((namespace, name))
            return json.loads(json.dumps(obj)) if obj is not None else None

    def lease_writes(self, namespace: str, name: str) -> list[tuple[str, str]]:
        """``(method, holderIdentity)`` of every accepted write of the Lease, in order."""
        with self._lock:
            return [(m, h) for m, key, h in self.lease_log if key == f"{namespace}/{name}"]

    def add_token(self, token: str, rules: list[Rule], *, user: str = DEFAULT_USER) -> None:
        """A bearer token whose requests are allowed only by ``rules``."""
        with self._lock:
            self.tokens[token] = (user, list(rules))

    def grant_role(self, token: str, role: Mapping[str, Any], *, user: str = DEFAULT_USER) -> None:
        """A bearer token with exactly the rules of a Role manifest (a parsed YAML document)."""
        self.add_token(token, rules_from_role(role), user=user)

    def fail_next(self, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (a Status object)."""
        with self._lock:
            self._faults.extend([status] * times)

    def count(self, resource: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, path, _ in self.requests if resource is None or f"/{resource}" in path)

    # -- serving --------------------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        raw_path: str,
        authorization: str | None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        with self._lock:
            hook = self._hook
        if hook is not None:
            hook(method, path)
        try:
            status, body_out = (
                200,
                self._dispatch(method, path, parse_qs(parts.query), authorization, body, content_type),
            )
            if method == "POST":
                status = 201
        except _Reply as reply:
            status, body_out = reply.status, reply.body
        with self._lock:
            self.requests.append((method, path, status))
        return status, body_out

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> dict[str, Any]:
        token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
        with self._lock:
            grant = self.tokens.get(token) if token is not None else None
            fault = self._faults.popleft() if self._faults else None
        if grant is None:
            raise _Reply(401, status_object(401, "Unauthorized", "Unauthorized"))
        if fault is not None:
            reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
            raise _Reply(fault, status_object(fault, reasons.get(fault, "InternalError"), f"injected {fault}"))
        apps_path = _APPS_RE.match(path)
        if apps_path is not None:
            return self._workload_request(
                method,
                apps_path.group("ns"),
                apps_path.group("resource"),
                apps_path.group("name"),
                query,
                grant,
                body,
                content_type,
            )
        lease_path = _LEASE_RE.match(path)
        if lease_path is not None:
            return self._lease(method, lease_path.group("ns"), lease_path.group("name"), grant, body)
        if path == _ACCESS_REVIEW_PATH and method == "POST":
            return self._access_review(grant, body)
        m = _PATH_RE.match(path)
        if m is not None and m.group("resource") == "secrets" and method in ("PUT", "POST"):
            return self._secret_write(method, m.group("ns"), m.group("name"), grant, body)
        if method != "GET" or m is None:
            raise _Reply(404, status_object(404, "NotFound", "the server could not find the requested resource"))
        ns, resource, name = m.group("ns"), m.group("resource"), m.group("name")
        verb = "get" if name else "list"
        user, rules = grant
        if rules is not None and not any(r.allows(verb, resource, ns, name) for r in rules):
            what = f'{resource} "{name}"' if name else resource
            raise _Reply(
                403,
                status_object(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "" '
                    f'in the namespace "{ns}"',
                    {"name": name, "kind": resource} if name else {"kind": resource},
                ),
            )
        store = self.pods if resource == "pods" else self.secrets
        if name:
            with self._lock:
                obj = store.get((ns, name))
            if obj is None:
                raise _Reply(
                    404,
                    status_object(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}),
                )
            copied: dict[str, Any] = json.loads(json.dumps(obj))
            return copied
        return self._list(ns, resource, query)

    # -- secret writes --------------------------------------------------------------------------------------

    def _secret_write(
        self, method: str, ns: str, name: str | None, grant: tuple[str, list[Rule] | None], body: bytes
    ) -> dict[str, Any]:
        verb = {("PUT", True): "update", ("POST", False): "create"}.get((method, name is not None))
        if verb is None:
            raise _Reply(405, status_object(405, "MethodNotAllowed", f"{method} is not supported here"))
        user, rules = grant
        if rules is not None and not any(r.allows(verb, "secrets", ns, name) for r in rules):
            what = f'secrets "{name}"' if name else "secrets"
            raise _Reply(
                403,
                status_object(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{user}" cannot {verb} resource "secrets" in API group "" '
                    f'in the namespace "{ns}"',
                    {"name": name, "kind": "secrets"} if name else {"kind": "secrets"},
                ),
            )
        secret = self._secret_body(body, ns)
        meta = secret["metadata"]
        body_name = meta.get("name")
        if verb == "create":
            if not body_name:
                raise self._secret_invalid("", "metadata.name", "Required value: name or generateName is required")
            if meta.get("resourceVersion"):
                raise _Reply(
                    400, status_object(400, "BadRequest", "resourceVersion should not be set on objects to be created")
                )
            self._validate_secret(body_name, secret)
            with self._lock:
                if (ns, body_name) in self.secrets:
                    raise _Reply(
                        409,
                        status_object(
                            409,
                            "AlreadyExists",
                            f'secrets "{body_name}" already exists',
                            {"name": body_name, "kind": "secrets"},
                        ),
                    )
                return self._store_secret(ns, body_name, secret, created=None)
        assert name is not None
        if body_name != name:
            raise _Reply(
                400, status_object(400, "BadRequest", "the name of the object does not match the name on the URL")
            )
        rv = meta.get("resourceVersion")
        with self._lock:
            current = self.secrets.get((ns, name))
            if current is None:
                # the Secret strategy's AllowCreateOnUpdate is false: a PUT never creates
                raise _Reply(
                    404,
                    status_object(404, "NotFound", f'secrets "{name}" not found', {"name": name, "kind": "secrets"}),
                )
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise _Reply(
                    409,
                    status_object(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on secrets "{name}": the object has been modified; please '
                        "apply your changes to the latest version and try again",
                        {"name": name, "kind": "secrets"},
                    ),
                )
            # no resourceVersion: the Secret strategy's AllowUnconditionalUpdate is true, the update is made
            self._validate_secret(name, secret)
            if secret.get("type", "Opaque") != current.get("type", "Opaque"):
                raise self._secret_invalid(name, "type", f'Invalid value: "{secret.get("type")}": field is immutable')
            if current.get("immutable") is True and (
                secret.get("data", {}) != current.get("data", {}) or secret.get("immutable") is not True
            ):
                raise self._secret_invalid(name, "data", "Forbidden: field is immutable when `immutable` is set")
            return self._store_secret(ns, name, secret, created=current)

    def _secret_body(self, body: bytes, ns: str) -> dict[str, Any]:
        try:
            secret = json.loads(body or b"null")
        except ValueError:
            raise _Reply(400, status_object(400, "BadRequest", "the body is not JSON")) from None
        if not isinstance(secret, dict) or secret.get("kind", "Secret") != "Secret":
            raise _Reply(400, status_object(400, "BadRequest", "the body is not a Secret"))
        meta = secret.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Reply(400, status_object(400, "BadRequest", "metadata must be an object"))
        if meta.get("namespace") not in (None, ns):
            raise _Reply(
                400,
                status_object(400, "BadRequest", "the namespace of the provided object does not match the request"),
            )
        for field_ in ("labels", "annotations"):
            value = meta.get(field_) or {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise _Reply(400, status_object(400, "BadRequest", f"metadata.{field_} must map strings to strings"))
        data = secret.get("data") or {}
        if not isinstance(data, dict):
            raise _Reply(400, status_object(400, "BadRequest", "data must be an object"))
        for key, value in data.items():
            try:
                if not isinstance(value, str):
                    raise ValueError
                base64.b64decode(value, validate=True)
            except ValueError:
                raise _Reply(
                    400,
                    status_object(
                        400,
                        "BadRequest",
                        f'Secret in version "v1" cannot be handled as a Secret: data[{key}]: illegal base64 data',
                    ),
                ) from None
        string_data = secret.pop("stringData", None) or {}
        if not isinstance(string_data, dict) or not all(isinstance(v, str) for v in string_data.values()):
            raise _Reply(400, status_object(400, "BadRequest", "stringData must map strings to strings"))
        data.update({k: base64.b64encode(v.encode()).decode("ascii") for k, v in string_data.items()})
        secret["data"] = data
        return secret

    def _validate_secret(self, name: str, secret: dict[str, Any]) -> None:
        """ValidateSecret: data keys (IsConfigMapKey), the total data size, and the metadata's maps."""
        total = 0
        for key, value in secret["data"].items():
            if len(key) > 253 or not _CONFIG_MAP_KEY_RE.match(key) or key in (".", "..") or key.startswith(".."):
                raise self._secret_invalid(
                    name,
                    f"data[{key}]",
                    f"Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', "
                    "'_' or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name', regex used for validation is "
                    "'[-._a-zA-Z0-9]+')",
                )
            total += len(base64.b64decode(value))
        if total > MAX_SECRET_SIZE:
            raise self._secret_invalid(name, "data", f"Too long: must have at most {MAX_SECRET_SIZE} bytes")
        meta = secret["metadata"]
        annotations = meta.get("annotations") or {}
        for key in [*annotations, *(meta.get("labels") or {})]:
            if not _KEY_RE.match(key):
                raise self._secret_invalid(name, "metadata", f'Invalid value: "{key}": not a qualified name')
        if sum(len(k) + len(v) for k, v in annotations.items()) > MAX_ANNOTATIONS_SIZE:
            raise self._secret_invalid(
                name, "metadata.annotations", f"Too long: must have at most {MAX_ANNOTATIONS_SIZE} bytes"
            )
        for key, value in (meta.get("labels") or {}).items():
            if not _LABEL_VALUE_RE.match(value):
                raise self._secret_invalid(name, f"metadata.labels[{key}]", f'Invalid value: "{value}"')

    def _store_secret(
        self, ns: str, name: str, secret: dict[str, Any], *, created: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store ``secret`` under a new resourceVersion (caller holds the lock); a copy of what was stored."""
        given = secret["metadata"]
        meta: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": self._next_rv()}
        if created is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_time(datetime.now(UTC)))
        else:
            meta.update(uid=created["metadata"]["uid"], creationTimestamp=created["metadata"]["creationTimestamp"])
        for field_ in ("labels", "annotations"):
            if given.get(field_):
                meta[field_] = dict(given[field_])
        obj: dict[str, Any] = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": meta,
            "data": dict(secret["data"]),
            "type": secret.get("type") or (created or {}).get("type") or "Opaque",
        }
        if secret.get("immutable") is not None:
            obj["immutable"] = bool(secret["immutable"])
        self.secrets[(ns, name)] = obj
        copied: dict[str, Any] = json.loads(json.dumps(obj))
        return copied

    @staticmethod
    def _secret_invalid(name: str, field: str, message: str) -> _Reply:
        return _Reply(
            422,
            status_object(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: {field}: {message}',
                {"name": name, "kind": "Secret", "causes": [{"field": field}]},
            ),
        )

    # -- access reviews -------------------------------------------------------------------------------------

    def _access_review(self, grant: tuple[str, list[Rule] | None], body: bytes) -> dict[str, Any]:
        try:
            review = json.loads(body or b"null")
        except ValueError:
            raise _Reply(400, status_object(400, "BadRequest", "the body is not JSON")) from None
        attrs = review.get("spec", {}).get("resourceAttributes") if isinstance(review, dict) else None
        if not isinstance(attrs, dict):
            raise self._secret_invalid("", "spec.resourceAttributes", "Required value")
        _, rules = grant
        allowed = rules is None or any(
            r.allows(
                str(attrs.get("verb", "")),
                str(attrs.get("resource", "")),
                str(attrs.get("namespace", "")),
                attrs.get("name") or None,
                str(attrs.get("group", "")),
            )
            for r in rules
        )
        status: dict[str, Any] = {"allowed": allowed}
        if allowed and rules is not None:
            status["reason"] = "RBAC: allowed by a Role"
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {},
            "spec": review["spec"],
            "status": status,
        }

    # -- leases ---------------------------------------------------------------------------------------------

    def _lease(
        self, method: str, ns: str, name: str | None, grant: tuple[str, list[Rule] | None], body: bytes
    ) -> dict[str, Any]:
        verbs = {("GET", True): "get", ("PUT", True): "update", ("POST", False): "create", ("GET", False): "list"}
        verb = verbs.get((method, name is not None))
        if verb is None or verb == "list":
            raise _Reply(405, status_object(405, "MethodNotAllowed", f"{method} is not supported here"))
        user, rules = grant
        if rules is not None and not any(r.allows(verb, "leases", ns, name, "coordination.k8s.io") for r in rules):
            what = f'{LEASES} "{name}"' if name else LEASES
            raise _Reply(
                403,
                status_object(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{user}" cannot {verb} resource "leases" in API group '
                    f'"coordination.k8s.io" in the namespace "{ns}"',
                    {"name": name, "group": "coordination.k8s.io", "kind": "leases"},
                ),
            )
        if verb == "get":
            assert name is not None
            with self._lock:
                obj = self.leases.get((ns, name))
            if obj is None:
                raise self._lease_not_found(name)
            copied: dict[str, Any] = json.loads(json.dumps(obj))
            return copied
        lease = self._lease_body(body)
        meta = lease.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Reply(400, status_object(400, "BadRequest", "metadata must be an object"))
        body_name = meta.get("name")
        if meta.get("namespace") not in (None, ns):
            raise _Reply(
                400,
                status_object(400, "BadRequest", "the namespace of the provided object does not match the request"),
            )
        if verb == "create":
            if not body_name:
                raise self._invalid(name or "", "metadata.name", "Required value: name or generateName is required")
            if meta.get("resourceVersion"):
                raise _Reply(
                    400, status_object(400, "BadRequest", "resourceVersion should not be set on objects to be created")
                )
            with self._lock:
                if (ns, body_name) in self.leases:
                    # API conventions, HTTP Status codes: 409 StatusReasonAlreadyExists on create of an existing name
                    raise _Reply(
                        409,
                        status_object(
                            409,
                            "AlreadyExists",
                            f'{LEASES} "{body_name}" already exists',
                            {"name": body_name, "group": "coordination.k8s.io", "kind": "leases"},
                        ),
                    )
                stored = self._store_lease(ns, body_name, lease, created=None)
                self.lease_log.append(("POST", f"{ns}/{body_name}", stored["spec"].get("holderIdentity") or ""))
            return stored
        assert name is not None
        if body_name != name:
            raise _Reply(
                400, status_object(400, "BadRequest", "the name of the object does not match the name on the URL")
            )
        rv = meta.get("resourceVersion")
        with self._lock:
            current = self.leases.get((ns, name))
            if current is None:
                # simplified: the real Lease strategy allows create-on-update (AllowCreateOnUpdate), so a PUT of
                # a deleted Lease may create it there; either answer leaves an elector leading at most once
                raise self._lease_not_found(name)
            if not rv:
                # the Lease strategy's AllowUnconditionalUpdate is false: an update must name the version it read
                raise self._invalid(
                    name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update"
                )
            if rv != current["metadata"]["resourceVersion"]:
                # API conventions, Concurrency Control and Consistency: a stale resourceVersion is a 409 Conflict
                raise _Reply(
                    409,
                    status_object(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {LEASES} "{name}": the object has been modified; '
                        "please apply your changes to the latest version and try again",
                        {"name": name, "group": "coordination.k8s.io", "kind": "leases"},
                    ),
                )
            stored = self._store_lease(ns, name, lease, created=current)
            self.lease_log.append(("PUT", f"{ns}/{name}", stored["spec"].get("holderIdentity") or ""))
        return stored

    def _lease_body(self, body: bytes) -> dict[str, Any]:
        try:
            lease = json.loads(body or b"null")
        except ValueError:
            raise _Reply(400, status_object(400, "BadRequest", "the body is not JSON")) from None
        if not isinstance(lease, dict) or lease.get("kind", "Lease") != "Lease":
            raise _Reply(400, status_object(400, "BadRequest", "the body is not a Lease"))
        spec = lease.get("spec") or {}
        if not isinstance(spec, dict):
            raise _Reply(400, status_object(400, "BadRequest", "spec must be an object"))
        for f in ("acquireTime", "renewTime"):
            value = spec.get(f)
            if value is not None and not (isinstance(value, str) and _MICRO_TIME_RE.match(value)):
                raise _Reply(
                    400,
                    status_object(
                        400,
                        "BadRequest",
                        f'Lease in version "v1" cannot be handled as a Lease: parsing time {json.dumps(value)} as '
                        '"2006-01-02T15:04:05.000000Z07:00": cannot parse',
                    ),
                )
        for f in ("leaseDurationSeconds", "leaseTransitions"):
            value = spec.get(f)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _Reply(400, status_object(400, "BadRequest", f"spec.{f}: not an integer"))
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and duration <= 0:
            raise self._invalid("", "spec.leaseDurationSeconds", f"Invalid value: {duration}: must be greater than 0")
        if (spec.get("leaseTransitions") or 0) < 0:
            raise self._invalid("", "spec.leaseTransitions", "Invalid value: must be greater than or equal to 0")
        lease["spec"] = spec
        return lease

    def _store_lease(
        self, ns: str, name: str, lease: dict[str, Any], *, created: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store ``lease`` under a new resourceVersion (caller holds the lock); a copy of what was stored."""
        meta = dict(lease.get("metadata") or {})
        meta.update(name=name, namespace=ns, resourceVersion=self._next_rv())
        if created is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_time(datetime.now(UTC)))
        else:
            meta.update(uid=created["metadata"]["uid"], creationTimestamp=created["metadata"]["creationTimestamp"])
        obj = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": meta, "spec": lease["spec"]}
        self.leases[(ns, name)] = obj
        copied: dict[str, Any] = json.loads(json.dumps(obj))
        return copied

    @staticmethod
    def _lease_not_found(name: str) -> _Reply:
        return _Reply(
            404,
            status_object(
                404,
                "NotFound",
                f'{LEASES} "{name}" not found',
                {"name": name, "group": "coordination.k8s.io", "kind": "leases"},
            ),
        )

    @staticmethod
    def _invalid(name: str, field: str, message: str) -> _Reply:
        return _Reply(
            422,
            status_object(
                422,
                "Invalid",
                f'Lease.coordination.k8s.io "{name}" is invalid: {field}: {message}',
                {"name": name, "group": "coordination.k8s.io", "kind": "Lease", "causes": [{"field": field}]},
            ),
        )

    # -- apps/v1 workloads: test helpers ---------------------------------------------------------------------

    def add_workload(
        self,
        namespace: str,
        kind: str,
        name: str,
        *,
        replicas: int = 2,
        labels: Mapping[str, str] | None = None,
        selector: Mapping[str, str] | None = None,
        template_annotations: Mapping[str, str] | None = None,
        update_strategy: str = "RollingUpdate",
        progress_deadline_seconds: int | None = 600,
        consumer_secret: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Add a Deployment, StatefulSet or DaemonSet (``kind``), fully rolled out: generation 1 observed, its
        pods created (``replicas`` of them; a DaemonSet's: one on each of ``replicas`` nodes), Ready, labelled
        with the template labels ``labels`` (default ``app=<name>``; the workload's own labels too) and carrying
        ``template_annotations``. ``selector``: ``matchLabels`` (default: ``labels``). ``update_strategy``:
        Deployment ``RollingUpdate`` (modelled as maxSurge 1, maxUnavailable 0, which the spec then says) or
        ``Recreate``; StatefulSet/DaemonSet ``RollingUpdate`` or ``OnDelete``. ``progress_deadline_seconds``:
        Deployment only (None: no deadline). ``consumer_secret=(secret, key)``: the container reads that Secret
        entry through ``env.valueFrom.secretKeyRef`` (env ``MOMENTO_API_KEY``) and each pod records the key id it
        read at start in the annotation :data:`KEY_ID_ANNOTATION`. A copy of the workload as served."""
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"kind must be one of {sorted(WORKLOAD_KINDS)}, not {kind!r}")
        allowed = ("RollingUpdate", "Recreate") if kind == "Deployment" else ("RollingUpdate", "OnDelete")
        if update_strategy not in allowed:
            raise ValueError(f"a {kind}'s strategy is one of {allowed}, not {update_strategy!r}")
        template_labels = dict(labels or {"app": name})
        match = dict(selector if selector is not None else template_labels)
        if not match or any(template_labels.get(k) != v for k, v in match.items()):
            raise ValueError("`selector` does not match template `labels`")
        container: dict[str, Any] = {
            "name": "app",
            "image": "example/app:1",
            "imagePullPolicy": "IfNotPresent",
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }
        if consumer_secret is not None:
            secret_name, key = consumer_secret
            container["env"] = [
                {"name": "MOMENTO_API_KEY", "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
            ]
        template_meta: dict[str, Any] = {"labels": template_labels}
        if template_annotations:
            template_meta["annotations"] = dict(template_annotations)
        template = {
            "metadata": template_meta,
            "spec": {
                "containers": [container],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "securityContext": {},
                "schedulerName": "default-scheduler",
            },
        }
        spec: dict[str, Any] = {"selector": {"matchLabels": match}, "template": template, "revisionHistoryLimit": 10}
        annotations: dict[str, str] = {}
        if kind == "Deployment":
            spec["replicas"] = replicas
            spec["strategy"] = (
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
                if update_strategy == "RollingUpdate"
                else {"type": "Recreate"}
            )
            if progress_deadline_seconds is not None:
                spec["progressDeadlineSeconds"] = progress_deadline_seconds
        elif kind == "StatefulSet":
            spec.update(replicas=replicas, serviceName=name, podManagementPolicy="OrderedReady")
            # the API server defaults rollingUpdate.partition to 0 (SetDefaults_StatefulSet)
            spec["updateStrategy"] = (
                {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
                if update_strategy == "RollingUpdate"
                else {"type": "OnDelete"}
            )
            spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain", "whenScaled": "Retain"}
        else:
            spec["updateStrategy"] = (
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
                if update_strategy == "RollingUpdate"
                else {"type": "OnDelete"}
            )
            # the internal TemplateGeneration, served in apps/v1 as this annotation
            annotations[TEMPLATE_GENERATION_ANNOTATION] = "1"
        with self._lock:
            meta: dict[str, Any] = {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "generation": 1,
                "creationTimestamp": _time(self.clock()),
                "labels": dict(template_labels),
            }
            if annotations:
                meta["annotations"] = annotations
            obj = {"kind": kind, "apiVersion": "apps/v1", "metadata": meta, "spec": spec, "status": {}}
            w = _Workload(namespace, kind, name, obj, nodes=replicas if kind == "DaemonSet" else 0)
            self.workloads[(namespace, w.resource, name)] = w
            # created already rolled out: the controller runs to a steady state, pods pass readiness at once
            for _ in range(10 * replicas + 10):
                acted = self._sync(w)
                for _key, pod in self._pods_of(w):
                    if not _pod_ready(pod) and not _pod_config_error(pod):
                        self._make_ready(pod)
                        acted = True
                if not acted:
                    break
            self._update_status(w)
            return copy.deepcopy(w.obj)

    def workload(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        """A deep copy of the workload as the API serves it, or None."""
        with self._lock:
            w = self.workloads.get((namespace, self._resource_of(kind), name))
            return copy.deepcopy(w.obj) if w is not None else None

    def workload_patches(self, namespace: str, kind: str, name: str) -> list[Any]:
        """Every accepted patch body of the workload, in order, as parsed JSON (a JSON Patch is a list)."""
        with self._lock:
            w = self.workloads.get((namespace, self._resource_of(kind), name))
            return copy.deepcopy(w.patches) if w is not None else []

    def workload_pods(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """Copies of the workload's pods (terminating ones included), oldest first."""
        with self._lock:
            w = self.workloads.get((namespace, self._resource_of(kind), name))
            return [copy.deepcopy(pod) for _, pod in self._pods_of(w)] if w is not None else []

    def stall_rollout(self, namespace: str, kind: str, name: str, stalled: bool = True) -> None:
        """While stalled, the workload's pods that are not Ready never become Ready (a failing readiness probe):
        the rollout makes no progress, and a Deployment's Progressing condition turns ``False`` /
        ``ProgressDeadlineExceeded`` once ``progressDeadlineSeconds`` pass on :attr:`clock` without progress."""
        with self._lock:
            self.workloads[(namespace, self._resource_of(kind), name)].stalled = stalled

    def step(self, namespace: str | None = None, kind: str | None = None, name: str | None = None) -> bool:
        """One pass of the kubelet and the workload controllers over every workload (or those matching the
        arguments): pods deleted in the previous pass are gone, pods waiting on a missing Secret retry, started
        pods become Ready (unless stalled), then each controller makes what progress its strategy allows (one
        pod in a rolling update) and writes its status. Whether anything changed."""
        resource = self._resource_of(kind) if kind is not None else None
        changed = False
        with self._lock:
            for (ns, res, nm), w in sorted(self.workloads.items()):
                if (
                    (namespace is not None and ns != namespace)
                    or (resource is not None and res != resource)
                    or (name is not None and nm != name)
                ):
                    continue
                changed = self._reconcile(w) or changed
        return changed

    def run_rollout(
        self, namespace: str | None = None, kind: str | None = None, name: str | None = None, *, max_steps: int = 1000
    ) -> int:
        """:meth:`step` until nothing changes; the number of steps that changed something."""
        for n in range(max_steps):
            if not self.step(namespace, kind, name):
                return n
        raise AssertionError(f"the rollout did not settle in {max_steps} steps")

    def auto_rollout(self, seconds_per_pod: float) -> None:
        """Step every workload every ``seconds_per_pod`` real seconds in a daemon thread (for tests that run real
        rotator processes against the server), until :meth:`stop_auto_rollout` (or :meth:`stop`/:meth:`reset`)."""
        self.stop_auto_rollout()
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(seconds_per_pod):
                self.step()

        thread = threading.Thread(target=run, name="kube-api-rollout", daemon=True)
        self._auto = (thread, stop)
        thread.start()

    def stop_auto_rollout(self) -> None:
        auto, self._auto = self._auto, None
        if auto is not None:
            auto[1].set()
            auto[0].join(timeout=5)

    def running_key_ids(self, namespace: str, kind: str, name: str) -> set[str]:
        """The key ids held by the workload's existing pods (terminating ones too: their process still runs)."""
        with self._lock:
            w = self.workloads.get((namespace, self._resource_of(kind), name))
            if w is None:
                return set()
            return {
                str(pod["metadata"]["annotations"][KEY_ID_ANNOTATION])
                for _, pod in self._pods_of(w)
                if KEY_ID_ANNOTATION in (pod["metadata"].get("annotations") or {})
            }

    def all_running_key_ids(self) -> set[str]:
        """The key ids held by every existing pod that records one."""
        with self._lock:
            return {
                str(pod["metadata"]["annotations"][KEY_ID_ANNOTATION])
                for pod in self.pods.values()
                if KEY_ID_ANNOTATION in (pod["metadata"].get("annotations") or {})
            }

    @staticmethod
    def _resource_of(kind: str) -> str:
        if kind in WORKLOAD_KINDS:
            return WORKLOAD_KINDS[kind]
        if kind in _KIND_OF:
            return kind
        raise ValueError(f"kind must be one of {sorted(WORKLOAD_KINDS)}, not {kind!r}")

    # -- apps/v1 workloads: serving --------------------------------------------------------------------------

    def _workload_request(
        self,
        method: str,
        ns: str,
        resource: str,
        name: str | None,
        query: dict[str, list[str]],
        grant: tuple[str, list[Rule] | None],
        body: bytes,
        content_type: str | None,
    ) -> dict[str, Any]:
        verb = {("GET", True): "get", ("GET", False): "list", ("PATCH", True): "patch"}.get((method, name is not None))
        if verb is None:
            # the API server serves create/update/delete here too; this test server does not model them
            raise _Reply(
                405,
                status_object(405, "MethodNotAllowed", f"{method} on {resource}.apps is not modelled by this server"),
            )
        user, rules = grant
        # authorization (RBAC, https://kubernetes.io/docs/reference/access-authn-authz/rbac/) runs in the filter
        # chain, before the handler looks at the body or the object: 403 before 415/404
        if rules is not None and not any(r.allows(verb, resource, ns, name, "apps") for r in rules):
            what = f'{resource}.apps "{name}"' if name else f"{resource}.apps"
            raise _Reply(
                403,
                status_object(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "apps" '
                    f'in the namespace "{ns}"',
                    {"name": name, "group": "apps", "kind": resource} if name else {"group": "apps", "kind": resource},
                ),
            )
        if verb == "list":
            return self._list_workloads(ns, resource, query)
        assert name is not None
        if verb == "get":
            with self._lock:
                w = self.workloads.get((ns, resource, name))
                if w is None:
                    raise self._workload_not_found(resource, name)
                return copy.deepcopy(w.obj)
        return self._patch_workload(ns, resource, name, body, content_type)

    def _list_workloads(self, ns: str, resource: str, query: dict[str, list[str]]) -> dict[str, Any]:
        try:
            reqs = parse_selector(query.get("labelSelector", [""])[0])
        except SelectorError as exc:
            raise _bad_request(str(exc)) from None
        with self._lock:
            items = []
            for (wns, res, _), w in sorted(self.workloads.items()):
                if wns == ns and res == resource and matches(reqs, w.obj["metadata"].get("labels") or {}):
                    item = copy.deepcopy(w.obj)
                    # the items of a typed list carry no kind/apiVersion of their own (only the list does)
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
                    items.append(item)
            rv = str(self._rv)
        return _paged(items, query, rv, f"{_KIND_OF[resource]}List", "apps/v1")

    @staticmethod
    def _workload_not_found(resource: str, name: str) -> _Reply:
        return _Reply(
            404,
            status_object(
                404,
                "NotFound",
                f'{resource}.apps "{name}" not found',
                {"name": name, "group": "apps", "kind": resource},
            ),
        )

    @staticmethod
    def _workload_invalid(kind: str, name: str, field: str, message: str) -> _Reply:
        return _Reply(
            422,
            status_object(
                422,
                "Invalid",
                f'{kind}.apps "{name}" is invalid: {field}: {message}',
                {
                    "name": name,
                    "group": "apps",
                    "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
                },
            ),
        )

    def _patch_workload(
        self, ns: str, resource: str, name: str, body: bytes, content_type: str | None
    ) -> dict[str, Any]:
        # the patch type is the Content-Type less any parameters ("; charset=..."); anything else is 415
        # (PatchResource in k8s.io/apiserver pkg/endpoints/handlers/patch.go; the patch types:
        # https://kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply)
        patch_type = (content_type or "").split(";", 1)[0].strip().lower()
        if patch_type not in PATCH_TYPES:
            raise _Reply(
                415,
                status_object(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    + ", ".join(PATCH_TYPES),
                ),
            )
        try:
            patch = json.loads(body or b"null")
        except ValueError:
            raise _bad_request("error decoding patch: the body is not JSON") from None
        if patch_type != JSON_PATCH and not isinstance(patch, dict):
            raise _bad_request("error decoding patch: a merge patch must be a JSON object")
        with self._lock:
            w = self.workloads.get((ns, resource, name))
            if w is None:
                raise self._workload_not_found(resource, name)
            current = w.obj
            if patch_type == JSON_PATCH:
                patched = json_patch(current, patch)
            elif patch_type == MERGE_PATCH:
                patched = merge_patch(current, patch)
            else:
                patched = strategic_merge_patch(current, patch)
            updated = self._prepare_workload_update(w, patched)
            w.patches.append(copy.deepcopy(patch))
            if _normalized(updated) == _normalized(current):
                # a patch that changes nothing is not written: the storage layer skips an identical object
                # (GuaranteedUpdate), so the resourceVersion stays and kubectl says "patched (no change)"
                return copy.deepcopy(current)
            updated["metadata"]["resourceVersion"] = self._next_rv()
            w.obj = updated
            return copy.deepcopy(updated)

    def _prepare_workload_update(self, w: _Workload, patched: Any) -> dict[str, Any]:
        """The update a patch makes of ``w.obj`` (caller holds the lock), or the API server's error for it."""
        kind, name, current = w.kind, w.name, w.obj
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise _Reply(422, status_object(422, "Invalid", "the patched object is not a valid object"))
        new: dict[str, Any] = _without_nulls(patched)
        meta, old_meta = new["metadata"], current["metadata"]
        # checkName / EnsureObjectNamespaceMatchesRequestNamespace (patch.go)
        if meta.get("name", name) != name:
            raise _bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if meta.get("namespace", w.namespace) != w.namespace:
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
        # optimistic concurrency (https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions):
        # a resourceVersion in the patched object is a precondition on the stored one
        # (kubernetes/kubernetes#63104); none means an unconditional update (AllowUnconditionalUpdate is true for
        # all three strategies, pkg/registry/apps/*/strategy.go)
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta["resourceVersion"]:
            raise _Reply(
                409,
                status_object(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {w.resource}.apps "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": name, "group": "apps", "kind": w.resource},
                ),
            )
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise self._workload_invalid(
                kind, name, "metadata.uid", f'Invalid value: "{meta["uid"]}": field is immutable'
            )
        # BeforeUpdate: system fields are kept; PrepareForUpdate: an update cannot set status (that is the status
        # subresource's)
        new.update(kind=kind, apiVersion="apps/v1")
        meta.update(
            name=name,
            namespace=w.namespace,
            uid=old_meta["uid"],
            creationTimestamp=old_meta["creationTimestamp"],
            generation=old_meta["generation"],
            resourceVersion=old_meta["resourceVersion"],
        )
        new["status"] = copy.deepcopy(current.get("status") or {})
        spec = new.get("spec")
        if not isinstance(spec, dict):
            raise self._workload_invalid(kind, name, "spec", "Required value")
        self._validate_workload(w, spec, current["spec"])
        # generation (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/#ObjectMeta:
        # "A sequence number representing a specific generation of the desired state"), PrepareForUpdate in
        # pkg/registry/apps/{deployment,statefulset,daemonset}/strategy.go: a Deployment's bumps on any change of
        # spec or metadata.annotations ("annotations are copied from deployments to their replica sets"), a
        # StatefulSet's on any change of spec; a DaemonSet's on any change of spec, and a change of spec.template
        # also bumps its templateGeneration (served as the annotation deprecated.daemonset.template.generation,
        # which a client cannot set)
        spec_changed = _normalized(spec) != _normalized(current["spec"])
        template_changed = _normalized(spec.get("template")) != _normalized(current["spec"].get("template"))
        if kind == "DaemonSet":
            template_generation = int((old_meta.get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION, "1"))
            meta.setdefault("annotations", {})[TEMPLATE_GENERATION_ANNOTATION] = str(
                template_generation + (1 if template_changed else 0)
            )
        annotations_changed = _normalized(meta.get("annotations")) != _normalized(old_meta.get("annotations"))
        if spec_changed or (kind == "Deployment" and annotations_changed):
            meta["generation"] = old_meta["generation"] + 1
        return new

    def _validate_workload(self, w: _Workload, spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
        """What ValidateDeployment/ValidateStatefulSet/ValidateDaemonSet (+ ...Update) check that this model
        relies on (pkg/apis/apps/validation/validation.go), each a 422 ``Invalid``."""
        kind, name = w.kind, w.name
        invalid = self._workload_invalid
        if _normalized(spec.get("selector")) != _normalized(old_spec.get("selector")):
            # apps/v1: "disallow mutation of selector" (ValidateUpdate in the strategies)
            raise invalid(kind, name, "spec.selector", "Invalid value: field is immutable")
        template = spec.get("template")
        if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
            raise invalid(kind, name, "spec.template", "Required value")
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not isinstance(labels, dict) or not _selector_matches(spec.get("selector") or {}, labels):
            raise invalid(
                kind,
                name,
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            )
        containers = template["spec"].get("containers")
        if not isinstance(containers, list) or not containers:
            raise invalid(kind, name, "spec.template.spec.containers", "Required value")
        for i, c in enumerate(containers):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
                raise invalid(kind, name, f"spec.template.spec.containers[{i}].name", "Required value")
        if kind != "DaemonSet":
            replicas = spec.get("replicas", 1)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid(
                    kind, name, "spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0"
                )
        if kind == "Deployment":
            strategy = spec.get("strategy") or {}
            stype = strategy.get("type", "RollingUpdate")
            if stype not in ("RollingUpdate", "Recreate"):
                raise invalid(kind, name, "spec.strategy.type", f'Unsupported value: "{stype}"')
            if stype == "Recreate" and strategy.get("rollingUpdate") is not None:
                raise invalid(
                    kind,
                    name,
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                )
            if stype == "RollingUpdate":
                rolling = strategy.get("rollingUpdate") or {}
                try:
                    surge = _int_or_percent(rolling.get("maxSurge", "25%"), 100, round_up=True)
                    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), 100, round_up=False)
                except ValueError as exc:
                    raise invalid(kind, name, "spec.strategy.rollingUpdate", f"Invalid value: {exc}") from None
                if surge == 0 and unavailable == 0:
                    raise invalid(
                        kind,
                        name,
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        "Invalid value: 0: may not be 0 when `maxSurge` is 0",
                    )
            deadline = spec.get("progressDeadlineSeconds")
            if deadline is not None and (not isinstance(deadline, int) or deadline <= spec.get("minReadySeconds", 0)):
                raise invalid(
                    kind, name, "spec.progressDeadlineSeconds", "Invalid value: must be greater than minReadySeconds"
                )
        else:
            stype = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
            if stype not in ("RollingUpdate", "OnDelete"):
                raise invalid(kind, name, "spec.updateStrategy.type", f'Unsupported value: "{stype}"')

    # -- apps/v1 workloads: the kubelet and the controllers (caller holds the lock) --------------------------

    def _pods_of(self, w: _Workload | None) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """The pods the workload's controller owns (by ownerReferences), oldest first."""
        if w is None:
            return []
        uids = w.owner_uids
        found = [
            (key, pod)
            for key, pod in self.pods.items()
            if key[0] == w.namespace
            and any(ref.get("uid") in uids for ref in pod["metadata"].get("ownerReferences") or [])
        ]
        return sorted(found, key=lambda kp: self._pod_seq.get(kp[0], 0))

    @staticmethod
    def _template_hash(w: _Workload) -> str:
        return _safe_hash(_canonical(_normalized(w.obj["spec"]["template"])))

    @staticmethod
    def _revision_of(pod: Mapping[str, Any]) -> str:
        labels = pod["metadata"].get("labels") or {}
        return str(labels.get("pod-template-hash") or labels.get("controller-revision-hash") or "")

    def _reconcile(self, w: _Workload) -> bool:
        changed = False
        # graceful deletion: a pod deleted by the previous pass has finished terminating and is gone
        for key, pod in self._pods_of(w):
            if _pod_terminating(pod):
                del self.pods[key]
                self._pod_seq.pop(key, None)
                changed = True
        # the kubelet: a container waiting on a missing Secret retries; a started pod passes its readiness probe
        for _, pod in self._pods_of(w):
            if _pod_config_error(pod):
                changed = self._start_pod(w, pod) or changed
            elif not _pod_ready(pod) and not w.stalled:
                self._make_ready(pod)
                changed = True
        changed = self._sync(w) or changed
        return self._update_status(w) or changed

    def _sync(self, w: _Workload) -> bool:
        if w.kind == "Deployment":
            return self._sync_deployment(w)
        if w.kind == "StatefulSet":
            return self._sync_statefulset(w)
        return self._sync_daemonset(w)

    def _sync_deployment(self, w: _Workload) -> bool:
        """The Deployment controller (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/):
        a ReplicaSet per pod template (pod-template-hash), the revision annotation on the Deployment, and the
        rolling update arithmetic of pkg/controller/deployment/rolling.go: the new ReplicaSet scales up while
        pods <= replicas + maxSurge, an old one scales down while available pods stay >= replicas -
        maxUnavailable (counting the new ReplicaSet's unavailable pods against it). Recreate: every old pod is
        deleted, and the new ones are created once they are gone."""
        spec, meta = w.obj["spec"], w.obj["metadata"]
        changed = False
        h = self._template_hash(w)
        top = max((int(rs["revision"]) for rs in w.replica_sets.values()), default=0)
        rs = w.replica_sets.get(h)
        if rs is None or (int(rs["revision"]) != top and any(self._revision_of(p) != h for _, p in self._pods_of(w))):
            # a new ReplicaSet, or an older one adopted again (a rollback): it takes the next revision
            if rs is None:
                rs = {"name": f"{w.name}-{h}", "uid": str(uuid.uuid4())}
                w.created_rs = rs["name"]
            rs["revision"] = top + 1
            w.replica_sets[h] = rs
            changed = True
        if (meta.get("annotations") or {}).get(REVISION_ANNOTATION) != str(rs["revision"]):
            # set through UpdateStatus, which lets annotations through and does not bump the generation
            meta.setdefault("annotations", {})[REVISION_ANNOTATION] = str(rs["revision"])
            meta["resourceVersion"] = self._next_rv()
            changed = True
        if spec.get("paused"):
            return changed  # a paused Deployment does not roll out (scaling while paused is not modelled)
        desired = int(spec.get("replicas", 1))
        strategy = spec.get("strategy") or {}
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["name"], "uid": rs["uid"]}
        if strategy.get("type") == "Recreate":
            pods = self._pods_of(w)
            old = [(k, p) for k, p in pods if self._revision_of(p) != h]
            live_old = [(k, p) for k, p in old if not _pod_terminating(p)]
            for key, pod in live_old:
                self._terminate(key, pod)
            if old:  # the new ReplicaSet scales up only once no old pod runs (oldPodsRunning)
                return changed or bool(live_old)
            new = [(k, p) for k, p in pods if not _pod_terminating(p)]
            for _ in range(desired - len(new)):
                self._spawn(w, owner, f"{rs['name']}-{self._suffix()}", {"pod-template-hash": h})
                changed = True
            for key, pod in self._pick_victims(new, len(new) - desired):
                self._terminate(key, pod)
                changed = True
            return changed
        rolling = strategy.get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
        max_unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and max_unavailable == 0:
            max_unavailable = 1  # ResolveFenceposts: both rounding to 0 means maxUnavailable 1
        for _ in range(4 * desired + 8):
            active = [(k, p) for k, p in self._pods_of(w) if not _pod_terminating(p)]
            new = [(k, p) for k, p in active if self._revision_of(p) == h]
            old = [(k, p) for k, p in active if self._revision_of(p) != h]
            if len(new) < desired and len(active) < desired + surge:
                self._spawn(w, owner, f"{rs['name']}-{self._suffix()}", {"pod-template-hash": h})
                changed = True
                continue
            if old:
                new_unavailable = sum(1 for _, p in new if not _pod_ready(p))
                if len(active) - (desired - max_unavailable) - new_unavailable > 0:
                    key, pod = self._pick_victims(old, 1)[0]
                    self._terminate(key, pod)
                    changed = True
                    continue
            elif len(new) > desired:
                key, pod = self._pick_victims(new, 1)[0]
                self._terminate(key, pod)
                changed = True
                continue
            break
        return changed

    def _pick_victims(
        self, pods: list[tuple[tuple[str, str], dict[str, Any]]], n: int
    ) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """Which pods a ReplicaSet scales down first (ActivePodsWithRanks, simplified): not Ready before Ready,
        then the newest."""
        ranked = sorted(pods, key=lambda kp: (_pod_ready(kp[1]), -self._pod_seq.get(kp[0], 0)))
        return ranked[: max(n, 0)]

    def _sync_statefulset(self, w: _Workload) -> bool:
        """The StatefulSet controller (https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/,
        pkg/controller/statefulset/stateful_set_control.go), OrderedReady: pods ``<name>-<ordinal>``, created in
        order, each only once every other pod is Running and Ready and none is terminating. RollingUpdate: "The
        StatefulSet controller will delete and recreate each Pod in the StatefulSet. It will proceed in the same
        order as Pod termination (from the largest ordinal to the smallest), updating each Pod one at a time",
        down to ``rollingUpdate.partition``; a pod is recreated under the same name only once the old one is
        gone. OnDelete: "the StatefulSet controller will not automatically update the Pods ... Users must
        manually delete Pods to cause the controller to create new Pods". A recreated pod runs the update
        revision unless RollingUpdate and its ordinal < partition (newVersionedStatefulSetPod)."""
        spec, st = w.obj["spec"], w.obj.get("status") or {}
        update_rev = f"{w.name}-{self._template_hash(w)}"
        if not w.current_revision:
            w.current_revision = st.get("currentRevision") or update_rev
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0) if rolling else 0
        desired = int(spec.get("replicas", 1))
        owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": w.name, "uid": w.obj["metadata"]["uid"]}
        changed = False
        for _ in range(2 * desired + 4):
            by_ordinal: dict[int, tuple[tuple[str, str], dict[str, Any]]] = {}
            for key, pod in self._pods_of(w):
                suffix = key[1].rsplit("-", 1)[-1]
                if suffix.isdigit():
                    by_ordinal[int(suffix)] = (key, pod)
            if any(_pod_terminating(p) or not _pod_ready(p) for _, p in by_ordinal.values()):
                break  # OrderedReady: wait for every pod to be Running and Ready, and for deletions to finish
            missing = [o for o in range(desired) if o not in by_ordinal]
            if missing:
                ordinal = missing[0]
                revision = w.current_revision if rolling and ordinal < partition else update_rev
                pod_name = f"{w.name}-{ordinal}"
                self._spawn(
                    w,
                    owner,
                    pod_name,
                    {
                        "controller-revision-hash": revision,
                        "statefulset.kubernetes.io/pod-name": pod_name,
                        "apps.kubernetes.io/pod-index": str(ordinal),
                    },
                    extra_spec={"hostname": pod_name, "subdomain": spec.get("serviceName", w.name)},
                )
                changed = True
                continue
            condemned = sorted((o for o in by_ordinal if o >= desired), reverse=True)
            if condemned:
                self._terminate(*by_ordinal[condemned[0]])
                changed = True
                continue
            if rolling:
                stale = [
                    o
                    for o in range(desired - 1, partition - 1, -1)
                    if self._revision_of(by_ordinal[o][1]) != update_rev
                ]
                if stale:
                    self._terminate(*by_ordinal[stale[0]])
                    changed = True
                    continue
            break
        return changed

    def _sync_daemonset(self, w: _Workload) -> bool:
        """The DaemonSet controller (https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/,
        https://kubernetes.io/docs/tasks/manage-daemon/update-daemon-set/): one pod on each node; a node whose
        pod is terminating counts as having none, so its new pod is created at once. RollingUpdate (maxSurge 0):
        an old pod that is not available is replaced at once, otherwise old pods are deleted while fewer than
        ``maxUnavailable`` nodes are unavailable (pkg/controller/daemon/update.go). OnDelete: "new DaemonSet
        pods will only be created when you manually delete old DaemonSet pods"."""
        spec = w.obj["spec"]
        h = self._template_hash(w)
        generation = (w.obj["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION, "1")
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        max_unavailable = max(
            1, _int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), w.nodes, round_up=True)
        )
        owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": w.name, "uid": w.obj["metadata"]["uid"]}
        changed = False
        for _ in range(2 * w.nodes + 4):
            by_node: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {}
            for key, pod in self._pods_of(w):
                if not _pod_terminating(pod):
                    by_node[pod["spec"].get("nodeName", "")] = (key, pod)
            nodes = [f"node-{i}" for i in range(w.nodes)]
            missing = [n for n in nodes if n not in by_node]
            for node in missing:
                self._spawn(
                    w,
                    owner,
                    f"{w.name}-{self._suffix()}",
                    {"controller-revision-hash": h, "pod-template-generation": generation},
                    node=node,
                )
                changed = True
            if missing:
                continue
            if not rolling:
                break
            old = [n for n in nodes if self._revision_of(by_node[n][1]) != h]
            old_unavailable = [n for n in old if not _pod_ready(by_node[n][1])]
            unavailable = sum(1 for n in nodes if not _pod_ready(by_node[n][1]))
            if old_unavailable:
                self._terminate(*by_node[old_unavailable[0]])
            elif old and unavailable < max_unavailable:
                self._terminate(*by_node[old[0]])
            else:
                break
            changed = True
        return changed

    @staticmethod
    def _suffix() -> str:
        return _safe_hash(str(uuid.uuid4()), 5)

    def _spawn(
        self,
        w: _Workload,
        owner: dict[str, Any],
        pod_name: str,
        revision_labels: Mapping[str, str],
        *,
        node: str | None = None,
        extra_spec: Mapping[str, Any] | None = None,
    ) -> None:
        """A controller creates a pod from the current template (its labels and annotations, as real pods carry
        them); the kubelet starts it at once (startTime and the containers' startedAt: now by :attr:`clock`),
        not yet Ready. A container whose env reads a missing Secret waits with CreateContainerConfigError."""
        template = w.obj["spec"]["template"]
        tmeta = template.get("metadata") or {}
        containers = template["spec"].get("containers") or []
        now = self.clock()
        pod = self._build_pod(
            w.namespace,
            pod_name,
            labels={**(tmeta.get("labels") or {}), **revision_labels},
            started_at=now,
            ready=False,
            containers={c["name"]: now for c in containers},
            phase="Running",
            images={c["name"]: c.get("image", "") for c in containers},
        )
        pod["metadata"]["annotations"] = dict(tmeta.get("annotations") or {})
        pod["metadata"]["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": True}]
        pod["spec"] = copy.deepcopy(template["spec"])
        pod["spec"]["nodeName"] = node or f"node-{self._seq % 3}"
        pod["spec"].update(extra_spec or {})
        self.pods[(w.namespace, pod_name)] = pod
        self._pod_seq[(w.namespace, pod_name)] = self._next_seq()
        self._start_pod(w, pod, created=True)

    def _consumer_read(self, namespace: str, pod: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """What a container reading ``env[].valueFrom.secretKeyRef`` gets at start: ``(key id, None)``, or
        ``(None, error)`` when the Secret or its key is missing and the reference is not ``optional`` (the
        kubelet then keeps the container waiting: CreateContainerConfigError; it resolves env only at start,
        https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-environment-variables)."""
        from rotator.keys import payload_key_id
        from rotator.redaction import SecretText

        for container in (pod.get("spec") or {}).get("containers") or []:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if not isinstance(ref, dict):
                    continue
                secret = self.secrets.get((namespace, str(ref.get("name"))))
                if secret is None or ref.get("key") not in (secret.get("data") or {}):
                    if ref.get("optional"):
                        continue
                    if secret is None:
                        return None, f'secret "{ref.get("name")}" not found'
                    return None, f"couldn't find key {ref.get('key')} in Secret {namespace}/{ref.get('name')}"
                try:
                    text = base64.b64decode(secret["data"][ref["key"]]).decode("utf-8", errors="replace")
                except ValueError:
                    return None, None  # a value the API would not have accepted; the process reads no key id
                return payload_key_id(SecretText(text)), None
        return None, None

    def _start_pod(self, w: _Workload, pod: dict[str, Any], *, created: bool = False) -> bool:
        """The kubelet starts the pod's containers (env resolved now), or keeps them waiting on a missing
        Secret. Whether the pod changed."""
        key_id, error = self._consumer_read(w.namespace, pod)
        status = pod["status"]
        if error is not None:
            if not created:
                return False
            status["phase"] = "Pending"
            for cs in status["containerStatuses"]:
                cs.update(
                    started=False,
                    ready=False,
                    state={"waiting": {"reason": "CreateContainerConfigError", "message": error}},
                )
            return True
        now = _time(self.clock())
        status["phase"] = "Running"
        for cs in status["containerStatuses"]:
            if "running" not in cs["state"]:
                cs.update(started=True, ready=False, state={"running": {"startedAt": now}})
        if key_id is not None:
            pod["metadata"].setdefault("annotations", {})[KEY_ID_ANNOTATION] = key_id
        if not created:
            pod["metadata"]["resourceVersion"] = self._next_rv()
        return True

    def _make_ready(self, pod: dict[str, Any]) -> None:
        now = _time(self.clock())
        for cond in pod["status"]["conditions"]:
            if cond["type"] in ("Ready", "ContainersReady") and cond["status"] != "True":
                cond.update(status="True", lastTransitionTime=now)
        for cs in pod["status"]["containerStatuses"]:
            cs["ready"] = True
        pod["metadata"]["resourceVersion"] = self._next_rv()

    def _terminate(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        """Graceful deletion (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination):
        the pod gets a deletionTimestamp and is still listed, its process still running (and its Ready
        condition as it was), until the next :meth:`step`. Controllers no longer count it."""
        grace = int(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))
        pod["metadata"]["deletionTimestamp"] = _time(self.clock() + timedelta(seconds=grace))
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
        pod["metadata"]["resourceVersion"] = self._next_rv()

    # -- apps/v1 workloads: status ----------------------------------------------------------------------------

    def _update_status(self, w: _Workload) -> bool:
        """Write the controller's status (a write: a new resourceVersion) if it differs. Ints the API marks
        ``omitempty`` are left out when 0, as the API server serialises them."""
        old = w.obj.get("status") or {}
        if w.kind == "Deployment":
            new = self._deployment_status(w, old)
        elif w.kind == "StatefulSet":
            new = self._statefulset_status(w)
        else:
            new = self._daemonset_status(w)
        if new == old:
            return False
        w.obj["status"] = new
        w.obj["metadata"]["resourceVersion"] = self._next_rv()
        return True

    def _deployment_status(self, w: _Workload, old: Mapping[str, Any]) -> dict[str, Any]:
        """DeploymentStatus (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/
        #DeploymentStatus) as calculateStatus and syncRolloutStatus (pkg/controller/deployment/sync.go,
        progress.go) write it; the conditions of
        https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status: Available
        (MinimumReplicasAvailable while available >= replicas - maxUnavailable); Progressing: True /
        NewReplicaSetCreated when a rollout creates its ReplicaSet, True / ReplicaSetUpdated whenever it makes
        progress (lastUpdateTime moves), True / NewReplicaSetAvailable once complete ("This Progressing condition
        will retain a status value of "True" until a new rollout is initiated"), False / ProgressDeadlineExceeded
        once lastUpdateTime + progressDeadlineSeconds has passed without progress; Unknown / DeploymentPaused
        while paused."""
        spec, meta = w.obj["spec"], w.obj["metadata"]
        h = self._template_hash(w)
        rs_name = w.replica_sets[h]["name"] if h in w.replica_sets else None
        active = [p for _, p in self._pods_of(w) if not _pod_terminating(p)]
        desired = int(spec.get("replicas", 1))
        replicas = len(active)
        updated = sum(1 for p in active if self._revision_of(p) == h)
        ready = sum(1 for p in active if _pod_ready(p))
        available = ready  # minReadySeconds is not modelled: a pod is available as soon as it is Ready
        strategy = spec.get("strategy") or {}
        max_unavailable = (
            _int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"), desired, round_up=False)
            if strategy.get("type", "RollingUpdate") == "RollingUpdate"
            else 0
        )
        new: dict[str, Any] = {
            "observedGeneration": meta["generation"],
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas - available),
        }
        new = {k: v for k, v in new.items() if v}  # all omitempty
        conditions = copy.deepcopy(list(old.get("conditions") or []))
        now = _time(self.clock())

        def find(ctype: str) -> dict[str, Any] | None:
            return next((c for c in conditions if c.get("type") == ctype), None)

        def put(ctype: str, status: str, reason: str, message: str, *, touch: bool = False) -> None:
            # SetDeploymentCondition: same status and reason is no change (unless progress touches it); a
            # transition time only moves when the status does
            current = find(ctype)
            if current is not None and current["status"] == status and current["reason"] == reason and not touch:
                return
            cond = {
                "type": ctype,
                "status": status,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
                "reason": reason,
                "message": message,
            }
            if current is not None and current["status"] == status:
                cond["lastTransitionTime"] = current["lastTransitionTime"]
            if current is None:
                conditions.append(cond)
            else:
                conditions[conditions.index(current)] = cond

        if available >= desired - max_unavailable:
            put("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            put("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        deadline = spec.get("progressDeadlineSeconds")
        created, w.created_rs = w.created_rs, None
        if created is not None and deadline is not None:
            # getNewReplicaSet (pkg/controller/deployment/sync.go): creating the new ReplicaSet is what marks a
            # new rollout, with Progressing True / NewReplicaSetCreated (the first surge pod is no progress by
            # DeploymentProgressing's arithmetic, since the old pods counted as updated until now)
            put("Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{created}"')
        progressing = find("Progressing")
        if spec.get("paused"):
            if progressing is None or progressing["reason"] != "DeploymentPaused":
                put("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif progressing is not None and progressing["reason"] == "DeploymentPaused":
            put("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
        elif deadline is None:
            conditions = [c for c in conditions if c.get("type") != "Progressing"]
        else:
            is_complete_deployment = (
                replicas == updated and progressing is not None and progressing["reason"] == "NewReplicaSetAvailable"
            )
            complete = (
                updated == desired
                and replicas == desired
                and available == desired
                and new.get("observedGeneration", 0) >= meta["generation"]
            )
            old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
            made_progress = (
                updated > old.get("updatedReplicas", 0)
                or replicas - updated < old_old
                or ready > old.get("readyReplicas", 0)
                or available > old.get("availableReplicas", 0)
            )
            what = f'ReplicaSet "{rs_name}"' if rs_name else f'Deployment "{w.name}"'
            if not is_complete_deployment:
                if complete:
                    put("Progressing", "True", "NewReplicaSetAvailable", f"{what} has successfully progressed.")
                elif made_progress:
                    put("Progressing", "True", "ReplicaSetUpdated", f"{what} is progressing.", touch=True)
                elif progressing is not None and progressing["reason"] != "NewReplicaSetAvailable":
                    last = datetime.strptime(progressing["lastUpdateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                    if (
                        progressing["reason"] == "ProgressDeadlineExceeded"
                        or last + timedelta(seconds=int(deadline)) < self.clock()
                    ):
                        put("Progressing", "False", "ProgressDeadlineExceeded", f"{what} has timed out progressing.")
        if conditions:
            new["conditions"] = conditions
        return new

    def _statefulset_status(self, w: _Workload) -> dict[str, Any]:
        """StatefulSetStatus (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/stateful-set-v1/
        #StatefulSetStatus): counts of the pods at currentRevision / updateRevision (the controller-revision-hash
        label); currentRevision becomes updateRevision once a RollingUpdate has every replica updated and Ready
        (completeRollingUpdate), never for OnDelete unless :attr:`ondelete_promotes_current_revision`."""
        spec = w.obj["spec"]
        update_rev = f"{w.name}-{self._template_hash(w)}"
        if not w.current_revision:
            w.current_revision = update_rev
        active = [p for _, p in self._pods_of(w) if not _pod_terminating(p)]
        desired = int(spec.get("replicas", 1))
        ready = sum(1 for p in active if _pod_ready(p))
        updated = sum(1 for p in active if self._revision_of(p) == update_rev)
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        if (rolling or self.ondelete_promotes_current_revision) and (
            updated == desired and ready == desired and len(active) == desired
        ):
            w.current_revision = update_rev
        current = sum(1 for p in active if self._revision_of(p) == w.current_revision)
        new: dict[str, Any] = {
            "observedGeneration": w.obj["metadata"]["generation"],
            "replicas": len(active),
            "readyReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": w.current_revision,
            "updateRevision": update_rev,
            "collisionCount": 0,
        }
        keep = {"replicas", "availableReplicas", "collisionCount"}
        return {k: v for k, v in new.items() if v or k in keep}

    def _daemonset_status(self, w: _Workload) -> dict[str, Any]:
        """DaemonSetStatus (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/daemon-set-v1/
        #DaemonSetStatus): per node, whether it runs a daemon pod, an updated one, a Ready/available one."""
        h = self._template_hash(w)
        active = [p for _, p in self._pods_of(w) if not _pod_terminating(p)]
        scheduled = {p["spec"].get("nodeName") for p in active}
        ready = sum(1 for p in active if _pod_ready(p))
        new: dict[str, Any] = {
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": 0,
            "desiredNumberScheduled": w.nodes,
            "numberReady": ready,
            "observedGeneration": w.obj["metadata"]["generation"],
            "updatedNumberScheduled": sum(1 for p in active if self._revision_of(p) == h),
            "numberAvailable": ready,
            "numberUnavailable": max(0, w.nodes - ready),
        }
        keep = {"currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"}
        return {k: v for k, v in new.items() if v or k in keep}

    def _list(self, ns: str, resource: str, query: dict[str, list[str]]) -> dict[str, Any]:
        try:
            reqs = parse_selector(query.get("labelSelector", [""])[0])
        except SelectorError as exc:
            raise _Reply(400, status_object(400, "BadRequest", str(exc))) from None
        store = self.pods if resource == "pods" else self.secrets
        with self._lock:
            items = [
                json.loads(json.dumps(obj))
                for (ons, _), obj in sorted(store.items())
                if ons == ns and matches(reqs, obj["metadata"].get("labels", {}))
            ]
            rv = str(self._rv)
        kind = "PodList" if resource == "pods" else "SecretList"
        return _paged(items, query, rv, kind, "v1")


def _paged(
    items: list[dict[str, Any]], query: dict[str, list[str]], rv: str, kind: str, api_version: str
) -> dict[str, Any]:
    """A list response of ``items``, paged by ``limit`` / ``continue`` (the continue token: an offset)."""
    offset = 0
    if query.get("continue"):
        try:
            offset = int(base64.urlsafe_b64decode(query["continue"][0]).decode())
        except ValueError:
            raise _Reply(400, status_object(400, "BadRequest", "continue key is not valid")) from None
    limit = int(query.get("limit", ["0"])[0] or 0)
    meta: dict[str, Any] = {"resourceVersion": rv}
    page = items[offset:]
    if limit > 0 and len(page) > limit:
        page = page[:limit]
        meta["continue"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
        meta["remainingItemCount"] = len(items) - offset - limit
    return {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": page}


class _Handler(BaseHTTPRequestHandler):
    api: KubeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request_body = self.rfile.read(length) if length else b""
        status, body = self.api.handle(
            method, self.path, self.headers.get("Authorization"), request_body, self.headers.get("Content-Type")
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def running_kube_api(*, tls: bool = False) -> Iterator[KubeApiServer]:
    """A started server, stopped on exit."""
    server = KubeApiServer(tls=tls).start()
    try:
        yield server
    finally:
        server.stop()

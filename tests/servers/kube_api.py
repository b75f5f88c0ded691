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

Tokens and RBAC: the token ``test`` may do anything. :meth:`KubeApiServer.add_token` adds a token limited to
RBAC rules (the ``rules`` of a Role, evaluated like the API server: apiGroups, verbs, resources and
resourceNames within the Role's namespace); :meth:`KubeApiServer.grant_role` reads them from a Role manifest.

Test helpers: :meth:`on_request` runs a function before each request is handled (a concurrent writer between
a client's read and its write), :meth:`secret` and :meth:`secret_data` read a Secret (its data decoded),
:meth:`touch_secret` changes a Secret as another writer would (a new resourceVersion), :meth:`add_pod`
(labels, ``startTime``, containers' ``startedAt``, the ``Ready`` condition) adds or replaces a pod,
:meth:`put_secret` adds or replaces a Secret (values base64-encoded as the API does),
:meth:`lease` reads a Lease, :meth:`lease_writes` lists every accepted Lease write (``(method, holder)``),
:meth:`fail_next` queues error statuses. :meth:`api_client` gives a ``kubernetes.client.ApiClient`` pointed
at the server (``Configuration(host=url, api_key={"authorization": "Bearer <token>"})``). Every request is in
:attr:`requests` as ``(method, path, status)``. Bound to 127.0.0.1 on a free port; use
:func:`running_kube_api` (or ``start``/``stop``) from a fixture. With ``tls=True`` it serves HTTPS with a
throwaway CA (trustme), as the in-cluster API server does, and :meth:`service_account` writes what the
kubelet mounts in a pod (``token``, ``ca.crt``, ``namespace``) and returns its ``KUBERNETES_SERVICE_HOST``/``PORT``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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
        shut(self._httpd, self._thread)
        self._httpd, self._thread = None, None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
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
        statuses = []
        for cname, cstart in containers.items():
            state: dict[str, Any] = (
                {"running": {"startedAt": _time(cstart)}} if cstart is not None else {"waiting": {"reason": "Pending"}}
            )
            statuses.append(
                {
                    "name": cname,
                    "image": f"example/{cname}:1",
                    "imageID": f"docker.io/example/{cname}@sha256:{'0' * 64}",
                    "ready": ready and cstart is not None,
                    "started": cstart is not None,
                    "restartCount": 0,
                    "state": state,
                }
            )
        now = _time(datetime.now(UTC))
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": now},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
        ]
        status: dict[str, Any] = {"phase": phase, "conditions": conditions, "containerStatuses": statuses}
        if started_at is not None:
            status["startTime"] = _time(started_at)
        with self._lock:
            pod = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": self._next_rv(),
                    "creationTimestamp": _time(started_at or datetime.now(UTC)),
                    "labels": dict(labels),
                },
                "spec": {"containers": [{"name": c, "image": f"example/{c}:1"} for c in containers]},
                "status": status,
            }
            self.pods[(namespace, name)] = pod
        return pod

    def remove_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            self.pods.pop((namespace, name), None)

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
        self, method: str, raw_path: str, authorization: str | None, body: bytes = b""
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        with self._lock:
            hook = self._hook
        if hook is not None:
            hook(method, path)
        try:
            status, body_out = 200, self._dispatch(method, path, parse_qs(parts.query), authorization, body)
            if method == "POST":
                status = 201
        except _Reply as reply:
            status, body_out = reply.status, reply.body
        with self._lock:
            self.requests.append((method, path, status))
        return status, body_out

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str | None, body: bytes = b""
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
        kind = "PodList" if resource == "pods" else "SecretList"
        return {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": page}


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

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request_body = self.rfile.read(length) if length else b""
        status, body = self.api.handle(method, self.path, self.headers.get("Authorization"), request_body)
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

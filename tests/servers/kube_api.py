"""A local Kubernetes API server that the real ``kubernetes`` Python client talks to over HTTP.

It serves what the ``kubernetes`` pickup check reads, in the shapes the API server uses:

- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=&limit=&continue=``: a ``PodList`` of the namespace's pods
  matching the selector (equality ``a=b`` / ``a==b``, inequality ``a!=b``, sets ``a in (x,y)`` /
  ``a notin (x,y)``, existence ``a`` / ``!a``, comma-separated and ANDed; a bad selector is a 400
  ``BadRequest``), paged with ``metadata.continue`` when ``limit`` is given;
- ``GET /api/v1/namespaces/{ns}/pods/{name}`` and ``GET /api/v1/namespaces/{ns}/secrets/{name}``;
- errors as ``Status`` objects (``{"kind": "Status", "status": "Failure", "reason", "message", "details",
  "code"}``): 404 ``NotFound`` (``secrets "x" not found``), 401 ``Unauthorized`` for a missing or unknown bearer
  token, 403 ``Forbidden`` (``secrets "x" is forbidden: User "..." cannot get resource "secrets" in API group ""
  in the namespace "ns"``) for a known token whose RBAC rules do not allow the request.

Tokens and RBAC: the token ``test`` may do anything. :meth:`KubeApiServer.add_token` adds a token limited to
RBAC rules (the ``rules`` of a Role, evaluated like the API server: verbs, resources and resourceNames within
the Role's namespace); :meth:`KubeApiServer.grant_role` reads them from a Role manifest.

Test helpers: :meth:`add_pod` (labels, ``startTime``, containers' ``startedAt``, the ``Ready`` condition) adds or
replaces a pod, :meth:`put_secret` adds or replaces a Secret (values base64-encoded as the API does),
:meth:`fail_next` queues error statuses. :meth:`api_client` gives a ``kubernetes.client.ApiClient`` pointed
at the server (``Configuration(host=url, api_key={"authorization": "Bearer <token>"})``). Every request is in
:attr:`requests` as ``(method, path, status)``. Bound to 127.0.0.1 on a free port; use
:func:`running_kube_api` (or ``start``/``stop``) from a fixture.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.servers.loopback import serve, shut

DEFAULT_TOKEN = "test"
DEFAULT_USER = "system:serviceaccount:rotator:rotator"

_PATH_RE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>pods|secrets)(?:/(?P<name>[^/]+))?$")
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
    """One RBAC PolicyRule (core API group only), scoped to a namespace (``None``: a ClusterRole binding)."""

    verbs: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None

    def allows(self, verb: str, resource: str, namespace: str, name: str | None) -> bool:
        if self.namespace is not None and self.namespace != namespace:
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
        if "" not in r.get("apiGroups", []) and "*" not in r.get("apiGroups", []):
            continue
        out.append(
            Rule(
                frozenset(r.get("verbs", [])),
                frozenset(r.get("resources", [])),
                frozenset(r.get("resourceNames", [])),
                ns,
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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        #: token -> (user name, its RBAC rules or None for everything)
        self.tokens: dict[str, tuple[str, list[Rule] | None]] = {DEFAULT_TOKEN: (DEFAULT_USER, None)}
        self.requests: list[tuple[str, str, int]] = []
        self._faults: deque[int] = deque()
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
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeApiServer:
        server = self

        class Handler(_Handler):
            api = server

        self._httpd, self._thread = serve(Handler, "kube-api", poll=0.05)
        return self

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
            self.tokens = {DEFAULT_TOKEN: (DEFAULT_USER, None)}
            self.requests.clear()
            self._faults.clear()

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

    def delete_secret(self, namespace: str, name: str) -> None:
        with self._lock:
            self.secrets.pop((namespace, name), None)

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

    def handle(self, method: str, raw_path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        try:
            status, body = 200, self._dispatch(method, path, parse_qs(parts.query), authorization)
        except _Reply as reply:
            status, body = reply.status, reply.body
        with self._lock:
            self.requests.append((method, path, status))
        return status, body

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str | None
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
        m = _PATH_RE.match(path)
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
        status, body = self.api.handle("GET", self.path, self.headers.get("Authorization"))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def running_kube_api() -> Iterator[KubeApiServer]:
    """A started server, stopped on exit."""
    server = KubeApiServer().start()
    try:
        yield server
    finally:
        server.stop()

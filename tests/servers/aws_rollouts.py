"""ECS deployments and Lambda function updates as AWS documents them: an HTTP proxy, bound to 127.0.0.1, in front
of moto's server.

moto (5.2) answers the calls of the ``ecs`` and ``lambda`` reload targets, but not with the lifecycle they observe:

- ECS ``UpdateService(forceNewDeployment=True)`` rewrites the one deployment in place (a new ``id`` and
  ``createdAt``): there is never an old deployment left ``ACTIVE`` beside the new ``PRIMARY``, the new one keeps
  the old one's ``rolloutState`` and task counts, and nothing ever moves on (``rolloutState`` stays what
  ``MOTO_ECS_SERVICE_RUNNING`` made it at creation; it is never ``FAILED``).
- Lambda's ``FunctionConfiguration`` has no ``RevisionId``, ``UpdateFunctionConfiguration`` ignores the one it
  is sent (no ``PreconditionFailedException``), ``LastUpdateStatus`` is always ``Successful`` (never
  ``InProgress``, so never ``ResourceConflictException`` either) and ``LastModified`` does not change on an update.

Here every request is forwarded to moto, which keeps the resources (clusters, services, functions, their
environments) and validates the calls (an unknown cluster, service or function is moto's own error answer). The
proxy models only what moto lacks, each behaviour beside the text it follows (botocore's
``data/ecs/2014-11-13/service-2.json`` and ``data/lambda/2015-03-31/service-2.json``, the ECS and Lambda API
references, and the Lambda developer guide's "Lambda function states"):

ECS (``Deployment.status``: "PRIMARY: the most recent deployment of a service. ACTIVE: a service deployment that
still has running tasks, but are in the process of being replaced with a new PRIMARY deployment. INACTIVE: a
deployment that has been completely replaced"; ``Deployment.rolloutState``: "When a service deployment is
started, it begins in an IN_PROGRESS state. When the service reaches a steady state, the deployment transitions
to a COMPLETED state. If the service fails to reach a steady state and circuit breaker is turned on, the
deployment transitions to a FAILED state"; "The rolloutState of a service is only returned for services that use
the rolling update (ECS) deployment type that aren't behind a Classic Load Balancer"):

- a service's deployments are taken from moto's answer the first time the proxy sees the service (its
  ``CreateService`` or ``DescribeServices``), then kept here and written into every ``DescribeServices`` and
  ``UpdateService`` answer (the service's ``runningCount``/``pendingCount`` are the deployments' sums);
- ``UpdateService`` with ``forceNewDeployment`` (or a ``taskDefinition``) that moto accepts starts a new
  ``PRIMARY`` deployment (``createdAt`` now, no task running yet, ``IN_PROGRESS``) and turns the previous one
  ``ACTIVE``, its tasks still running;
- the scheduler's progress is the test's to drive: :meth:`AwsRollouts.ecs_tasks_started` (the new tasks run,
  the old deployment is still listed while it drains), :meth:`AwsRollouts.ecs_complete` (the old deployments
  are gone, ``COMPLETED``), :meth:`AwsRollouts.ecs_fail` (the circuit breaker: ``FAILED``, no rollback),
  :meth:`AwsRollouts.ecs_classic_load_balancer` (no ``rolloutState`` at all).

Lambda (``RevisionId``: "Update the function only if the revision ID matches the ID that's specified. Use this
option to avoid modifying a function that has changed since you last read it"; ``PreconditionFailedException``:
"The RevisionId provided does not match the latest RevisionId for the Lambda function or alias";
``UpdateFunctionConfiguration``: "When you update a function, Lambda provisions an instance of the function and
its supporting resources ... During this time, you can't modify the function, but you can still invoke it. The
LastUpdateStatus, LastUpdateStatusReason, and LastUpdateStatusReasonCode fields in the response from
GetFunctionConfiguration indicate when the update is complete"; ``ResourceConflictException``: "The resource
already exists, or another operation is in progress"; ``LastUpdateStatus``: "This is first set to Successful
after function creation completes"):

- every function has a ``RevisionId`` (a new uuid at each change) in ``GetFunctionConfiguration``,
  ``GetFunction`` and the update's answer;
- ``UpdateFunctionConfiguration``/``UpdateFunctionCode`` with a ``RevisionId`` other than the current one: 412
  ``PreconditionFailedException``; while an update is ``InProgress``: 409 ``ResourceConflictException``; else
  moto makes the change and the function is ``InProgress`` with ``LastModified`` now, until
  :meth:`AwsRollouts.lambda_finish` makes it ``Successful`` or ``Failed`` (with a ``LastUpdateStatusReasonCode``);
- :meth:`AwsRollouts.lambda_environment_error` answers ``Environment.Error`` instead of the variables, as Lambda
  does for a caller that may not decrypt them ("Error messages for environment variables that couldn't be
  applied", ``EnvironmentError``).

Also: :meth:`AwsRollouts.fail_next` answers the next request of an operation with an AWS error (e.g. 400
``AccessDeniedException``, moto's IAM enforcement being all-or-nothing per server), and
:meth:`AwsRollouts.before_next` runs a callback when the next request of an operation arrives, before it is
handled (another writer getting in between a read and a write). ``requests`` lists every operation seen.

    with AwsRollouts(moto.url) as aws:
        target = open_target(ReloadConfig(type="ecs", ..., endpoint_url=aws.url), context)
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.servers.loopback import serve, shut

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
_FUNCTION_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/?]+)(?P<rest>/[a-z-]*)?/?(?:\?.*)?$")

Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class _Function:
    revision: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "Successful"
    reason: str | None = None
    reason_code: str | None = None
    last_modified: str = ""
    env_error: dict[str, str] | None = None


def _lambda_time(t: float) -> str:
    """Lambda's ``LastModified`` format (``2019-07-17T23:10:15.832+0000``)."""
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


def function_name(ref: str) -> str:
    """The function name in a FunctionName parameter (a name, a full or partial ARN, with or without qualifier)."""
    parts = ref.split(":")
    return parts[parts.index("function") + 1] if "function" in parts else ref


class AwsRollouts:
    """The proxy. Start it with ``with`` or :meth:`start`; :meth:`stop` ends it."""

    def __init__(self, upstream: str, *, clock: Callable[[], float] = time.time) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.hostname is None or parsed.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.clock = clock
        self._lock = threading.RLock()
        self._services: dict[str, list[dict[str, Any]]] = {}  # "cluster/service" -> deployments
        self._classic: set[str] = set()
        self._functions: dict[str, _Function] = {}
        self._errors: dict[str, list[tuple[int, str, str]]] = {}
        self._before: dict[str, list[Callable[[], None]]] = {}
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- test controls: ECS -------------------------------------------------------------------------------

    def deployments(self, service: str) -> list[dict[str, Any]]:
        """The deployments of ``cluster/service`` as ``DescribeServices`` shows them."""
        with self._lock:
            return copy.deepcopy(self._services[service])

    def _edit(self, service: str, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        with self._lock:
            self._services[service] = edit(self._services[service])

    def ecs_tasks_started(self, service: str) -> None:
        """The PRIMARY deployment's tasks run; the older deployments' tasks are stopped, but they are still
        listed (ACTIVE) while their load balancer targets drain."""

        def edit(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for d in deps:
                if d["status"] == "PRIMARY":
                    d.update(runningCount=d["desiredCount"], pendingCount=0, updatedAt=self.clock())
                else:
                    d.update(runningCount=0, pendingCount=0, updatedAt=self.clock())
            return deps

        self._edit(service, edit)

    def ecs_complete(self, service: str) -> None:
        """Steady state: the older deployments are completely replaced (INACTIVE, no longer listed) and the
        PRIMARY one is COMPLETED with every task running."""

        def edit(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
            primary = [d for d in deps if d["status"] == "PRIMARY"]
            for d in primary:
                d.update(runningCount=d["desiredCount"], pendingCount=0, updatedAt=self.clock())
                if service not in self._classic:
                    d.update(rolloutState="COMPLETED", rolloutStateReason=f"ECS deployment {d['id']} completed.")
            return primary

        self._edit(service, edit)

    def ecs_fail(self, service: str, reason: str = "ECS deployment circuit breaker: tasks failed to start.") -> None:
        """The circuit breaker stopped the PRIMARY deployment (FAILED: "doesn't launch any new tasks"); without
        rollback the older deployment keeps running beside it."""

        def edit(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for d in deps:
                if d["status"] == "PRIMARY":
                    d.update(rolloutState="FAILED", rolloutStateReason=reason, failedTasks=3, updatedAt=self.clock())
            return deps

        self._edit(service, edit)

    def ecs_classic_load_balancer(self, service: str) -> None:
        """The service is behind a Classic Load Balancer: no ``rolloutState`` on its deployments, now or later."""

        def edit(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for d in deps:
                d.pop("rolloutState", None)
                d.pop("rolloutStateReason", None)
            return deps

        with self._lock:
            self._classic.add(service)
            self._edit(service, edit)

    # -- test controls: Lambda ----------------------------------------------------------------------------

    def lambda_revision(self, function: str) -> str:
        with self._lock:
            return self._functions[function].revision

    def lambda_status(self, function: str) -> str:
        with self._lock:
            return self._functions[function].status

    def lambda_finish(self, function: str, *, failed: str | None = None, reason: str = "") -> None:
        """The update in progress ends: ``Successful``, or ``Failed`` with reason code ``failed``."""
        with self._lock:
            fn = self._functions[function]
            if failed is None:
                fn.status, fn.reason, fn.reason_code = "Successful", None, None
            else:
                fn.status, fn.reason_code = "Failed", failed
                fn.reason = reason or f"The function could not be updated ({failed})."

    def lambda_environment_error(self, function: str, code: str = "AccessDeniedException") -> None:
        """From now on the function's environment is shown as ``Environment.Error`` (no variables)."""
        with self._lock:
            self._functions[function].env_error = {
                "ErrorCode": code,
                "Message": "Lambda was unable to decrypt the environment variables because KMS access was denied.",
            }

    # -- test controls: any operation ----------------------------------------------------------------------

    def fail_next(self, operation: str, status: int, code: str, message: str = "injected error") -> None:
        """Answer the next request of ``operation`` with the AWS error ``code`` instead of handling it."""
        with self._lock:
            self._errors.setdefault(operation, []).append((status, code, message))

    def before_next(self, operation: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the next request of ``operation`` arrives, before it is handled."""
        with self._lock:
            self._before.setdefault(operation, []).append(callback)

    def count(self, operation: str) -> int:
        with self._lock:
            return self.requests.count(operation)

    # -- plumbing ------------------------------------------------------------------------------------------

    def forward(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    @staticmethod
    def _json(
        status: int, payload: dict[str, Any], content_type: str, extra: tuple[tuple[str, str], ...] = ()
    ) -> Answer:
        headers = [("Content-Type", content_type), ("x-amzn-RequestId", str(uuid.uuid4())), *extra]
        return status, headers, json.dumps(payload).encode()

    def _error(self, operation: str, status: int, code: str, message: str) -> Answer:
        if operation.startswith("ecs:"):
            return self._json(status, {"__type": code, "message": message}, "application/x-amz-json-1.1")
        return self._json(
            status, {"Type": "User", "message": message}, "application/json", (("x-amzn-ErrorType", f"{code}:"),)
        )

    def _operation(self, method: str, path: str, target: str) -> str:
        if target.startswith(ECS_TARGET):
            return "ecs:" + target[len(ECS_TARGET) :]
        m = _FUNCTION_PATH.match(path)
        if m:
            rest = (m.group("rest") or "").strip("/")
            names = {
                ("GET", "configuration"): "GetFunctionConfiguration",
                ("PUT", "configuration"): "UpdateFunctionConfiguration",
                ("PUT", "code"): "UpdateFunctionCode",
                ("GET", ""): "GetFunction",
                ("DELETE", ""): "DeleteFunction",
            }
            if (method, rest) in names:
                return "lambda:" + names[(method, rest)]
        if method == "POST" and path.split("?")[0].rstrip("/") == "/2015-03-31/functions":
            return "lambda:CreateFunction"
        return f"{method} {path.split('?')[0]}"

    def handle(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        target = headers.get("X-Amz-Target", "") or headers.get("x-amz-target", "")
        operation = self._operation(method, path, target)
        with self._lock:
            self.requests.append(operation)
            before = self._before.get(operation, [])
            callback = before.pop(0) if before else None
            errors = self._errors.get(operation, [])
            error = errors.pop(0) if errors else None
        if callback is not None:
            callback()
        if error is not None:
            return self._error(operation, *error)
        if operation.startswith("ecs:"):
            return self._ecs(operation[4:], method, path, body, headers)
        if operation.startswith("lambda:"):
            name = function_name(urllib.parse.unquote(m.group("name"))) if (m := _FUNCTION_PATH.match(path)) else ""
            return self._lambda(operation[7:], name, method, path, body, headers)
        return self.forward(method, path, body, headers)

    # -- ECS -----------------------------------------------------------------------------------------------

    @staticmethod
    def _service_key(svc: dict[str, Any]) -> str:
        return f"{str(svc.get('clusterArn', '')).rsplit('/', 1)[-1]}/{svc.get('serviceName')}"

    def _show(self, svc: dict[str, Any]) -> None:
        """Write the modelled deployments into one service of an answer (adopting moto's the first time)."""
        key = self._service_key(svc)
        with self._lock:
            if key not in self._services:
                self._services[key] = copy.deepcopy(svc.get("deployments") or [])
            deps = copy.deepcopy(self._services[key])
        svc["deployments"] = deps
        svc["runningCount"] = sum(int(d.get("runningCount") or 0) for d in deps)
        svc["pendingCount"] = sum(int(d.get("pendingCount") or 0) for d in deps)

    def _ecs_side(self, operation: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        side = {k: v for k, v in headers.items() if k.lower() in {"authorization", "x-amz-date", "content-type"}}
        side["X-Amz-Target"] = ECS_TARGET + operation
        status, _, data = self.forward("POST", "/", json.dumps(params).encode(), side)
        return status, (json.loads(data) if data else {})

    def _ecs(self, operation: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        params = json.loads(body) if body else {}
        if operation == "UpdateService":
            # know the service's deployments before moto rewrites its one deployment in place
            status, before = self._ecs_side(
                "DescribeServices",
                {"cluster": params.get("cluster", "default"), "services": [params.get("service")]},
                headers,
            )
            if status == 200:
                for svc in before.get("services") or []:
                    self._show(svc)
        status, resp_headers, data = self.forward(method, path, body, headers)
        if status != 200 or operation not in {"DescribeServices", "UpdateService", "CreateService"}:
            return status, resp_headers, data
        resp = json.loads(data)
        if operation == "DescribeServices":
            for svc in resp.get("services") or []:
                self._show(svc)
        elif operation == "CreateService":
            self._show(resp["service"])
        else:
            svc = resp["service"]
            if params.get("forceNewDeployment") or params.get("taskDefinition"):
                self._new_deployment(self._service_key(svc), svc, params)
            self._show(svc)
        return self._json(200, resp, "application/x-amz-json-1.1")

    def _new_deployment(self, key: str, svc: dict[str, Any], params: dict[str, Any]) -> None:
        now = self.clock()
        desired = int(params.get("desiredCount", svc.get("desiredCount") or 0))
        dep_id = f"ecs-svc/{uuid.uuid4().int % 10**19:019d}"
        new: dict[str, Any] = {
            "id": dep_id,
            "status": "PRIMARY",
            "taskDefinition": svc.get("taskDefinition"),
            "desiredCount": desired,
            "pendingCount": desired,
            "runningCount": 0,
            "failedTasks": 0,
            "createdAt": now,
            "updatedAt": now,
            "launchType": svc.get("launchType") or "EC2",
        }
        if key not in self._classic:
            new.update(rolloutState="IN_PROGRESS", rolloutStateReason=f"ECS deployment {dep_id} in progress.")
        with self._lock:
            old = self._services.setdefault(key, [])
            for d in old:
                if d.get("status") == "PRIMARY":
                    d.update(status="ACTIVE", updatedAt=now)
            self._services[key] = [new, *old]

    # -- Lambda --------------------------------------------------------------------------------------------

    def _function(self, name: str) -> _Function:
        with self._lock:
            fn = self._functions.get(name)
            if fn is None:
                fn = self._functions[name] = _Function(last_modified=_lambda_time(self.clock()))
            return fn

    def _overlay(self, name: str, configuration: dict[str, Any]) -> None:
        fn = self._function(name)
        with self._lock:
            configuration["RevisionId"] = fn.revision
            configuration["LastUpdateStatus"] = fn.status
            configuration["LastModified"] = fn.last_modified
            configuration.pop("LastUpdateStatusReason", None)
            configuration.pop("LastUpdateStatusReasonCode", None)
            if fn.reason is not None:
                configuration["LastUpdateStatusReason"] = fn.reason
            if fn.reason_code is not None:
                configuration["LastUpdateStatusReasonCode"] = fn.reason_code
            if fn.env_error is not None:
                configuration["Environment"] = {"Error": dict(fn.env_error)}

    def _lambda(
        self, operation: str, name: str, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> Answer:
        if operation in {"UpdateFunctionConfiguration", "UpdateFunctionCode"}:
            params = json.loads(body) if body else {}
            fn = self._function(name)
            with self._lock:
                if fn.status == "InProgress":
                    return self._error(
                        "lambda:" + operation,
                        409,
                        "ResourceConflictException",
                        "The operation cannot be performed at this time. An update is in progress for resource: "
                        f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
                    )
                if params.get("RevisionId") not in (None, fn.revision):
                    return self._error(
                        "lambda:" + operation,
                        412,
                        "PreconditionFailedException",
                        "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias "
                        "API to retrieve the latest Revision Id",
                    )
            params.pop("RevisionId", None)
            body = json.dumps(params).encode()
        status, resp_headers, data = self.forward(method, path, body, headers)
        if status == 404 or (operation == "DeleteFunction" and status in (200, 204)):
            with self._lock:
                self._functions.pop(name, None)
        if status not in (200, 201) or operation == "DeleteFunction" or not data:
            return status, resp_headers, data
        resp = json.loads(data)
        if operation in {"UpdateFunctionConfiguration", "UpdateFunctionCode"}:
            fn = self._function(name)
            with self._lock:
                fn.revision = str(uuid.uuid4())
                fn.status, fn.reason_code = "InProgress", None
                fn.reason = "The function is being updated."
                fn.last_modified = _lambda_time(self.clock())
        if operation == "CreateFunction":
            name = str(resp.get("FunctionName") or name)
        config = resp.get("Configuration") if operation == "GetFunction" else resp
        if isinstance(config, dict):
            self._overlay(name, config)
        return self._json(status, resp, "application/json")

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> AwsRollouts:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                status, resp_headers, data = proxy.handle(self.command, self.path, body, headers)
                self.send_response(status)
                for k, v in resp_headers:
                    if k.lower() not in _HOP_BY_HOP and k.lower() not in {"server", "date"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server, self._thread = serve(Handler, "aws-rollouts", poll=0.05)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        shut(self._server, self._thread)
        self._server = self._thread = None

    def __enter__(self) -> AwsRollouts:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

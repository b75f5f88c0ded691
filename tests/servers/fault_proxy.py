"""A small HTTP proxy, bound to 127.0.0.1, that forwards to a server (moto) and injects faults on the way.

Faults, served instead of forwarding the request:

- ``throttle``: 429 with an AWS JSON-1.1 error body ``{"__type": "ThrottlingException", ...}``;
- ``error500``: 500 ``{"__type": "InternalServiceError", ...}``;
- ``drop``: the request is read and the connection closed without an answer;
- ``drop_after``: the request is forwarded (the call is made) and the connection then closed without an
  answer: the client cannot tell whether its call went through;
- ``error(status, type)``: any other AWS JSON error (e.g. 400 AccessDeniedException).

Schedule them with a queue (:meth:`FaultProxy.inject`: the next n matching requests fail) and/or a rate
(:meth:`FaultProxy.set_rate`: each matching request fails with a probability, from a seeded RNG). A fault
may match one operation only, taken from the ``X-Amz-Target`` header (``secretsmanager.PutSecretValue`` ->
``PutSecretValue``). ``requests`` lists the operation of every request seen, ``faults`` those that failed,
``bodies`` each request's JSON parameters (``SecretString``/``SecretBinary`` left out).

``aws_semantics=True`` makes moto answer Secrets Manager calls as AWS documents them where moto differs
(see :class:`AwsSemantics`): deprecated versions left out of ``DescribeSecret`` and ``ListSecretVersionIds``,
a repeated ``PutSecretValue`` that "succeeds but does nothing", and ``ListSecretVersionIds`` in pages.

    with FaultProxy(moto.url) as proxy:
        proxy.inject("throttle", times=3, operation="PutSecretValue")
        store = open_store(..., endpoint_url=proxy.url)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

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


#: request parameters never recorded in ``FaultProxy.bodies``
_VALUES = {"SecretString", "SecretBinary"}


@dataclass(frozen=True)
class Fault:
    """What to answer instead of forwarding: an HTTP status with an AWS error type, or a dropped connection."""

    kind: str
    status: int = 0
    error_type: str = ""
    message: str = ""

    @staticmethod
    def of(kind: str) -> Fault:
        if kind == "throttle":
            return Fault("throttle", 429, "ThrottlingException", "Rate exceeded")
        if kind == "error500":
            return Fault("error500", 500, "InternalServiceError", "injected internal error")
        if kind == "drop":
            return Fault("drop")
        if kind == "drop_after":
            return Fault("drop_after")
        raise ValueError(f"unknown fault kind {kind!r}")

    @staticmethod
    def error(status: int, error_type: str, message: str = "injected error") -> Fault:
        return Fault("error", status, error_type, message)


@dataclass
class _Queued:
    fault: Fault
    remaining: int
    operation: str | None


@dataclass
class _Rate:
    fault: Fault
    rate: float
    operation: str | None


class FaultProxy:
    """Forwarding proxy with injected faults. Start with ``with`` or :meth:`start`; :meth:`stop` ends it."""

    def __init__(self, upstream: str, *, seed: int = 0, aws_semantics: bool = False, page_size: int = 100) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.hostname is None or parsed.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._rates: list[_Rate] = []
        self._rng = random.Random(seed)
        self.requests: list[str] = []
        self.faults: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self._filters: dict[str, Any] = {}
        self.aws = AwsSemantics(self, page_size=page_size) if aws_semantics else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- scheduling ------------------------------------------------------------------------------------------

    def inject(self, fault: str | Fault, *, times: int = 1, operation: str | None = None) -> None:
        """Fail the next ``times`` requests (of ``operation``, or any) with ``fault``."""
        f = Fault.of(fault) if isinstance(fault, str) else fault
        with self._lock:
            self._queue.append(_Queued(f, times, operation))

    def set_rate(self, fault: str | Fault, rate: float, *, operation: str | None = None) -> None:
        """Fail each matching request with probability ``rate`` (seeded, so runs repeat)."""
        f = Fault.of(fault) if isinstance(fault, str) else fault
        with self._lock:
            self._rates.append(_Rate(f, rate, operation))

    def clear(self) -> None:
        """Drop every scheduled fault and the request log."""
        with self._lock:
            self._queue.clear()
            self._rates.clear()
            self.requests.clear()
            self.faults.clear()
            self.bodies.clear()

    def count(self, operation: str) -> int:
        with self._lock:
            return self.requests.count(operation)

    def _choose(self, operation: str) -> Fault | None:
        with self._lock:
            self.requests.append(operation)
            for q in self._queue:
                if q.remaining > 0 and q.operation in (None, operation):
                    q.remaining -= 1
                    self.faults.append((operation, q.fault.kind))
                    return q.fault
            for r in self._rates:
                if r.operation in (None, operation) and self._rng.random() < r.rate:
                    self.faults.append((operation, r.fault.kind))
                    return r.fault
        return None

    def filter_answer(self, operation: str, edit: Any) -> None:
        """Pass every JSON answer to ``operation`` through ``edit(dict) -> None`` (changes it in place)."""
        with self._lock:
            self._filters[operation] = edit

    def _edited(
        self, operation: str, answer: tuple[int, list[tuple[str, str]], bytes]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._lock:
            edit = self._filters.get(operation)
        status, headers, data = answer
        if edit is None or status != 200:
            return answer
        payload = json.loads(data)
        edit(payload)
        return status, headers, json.dumps(payload).encode()

    def _record(self, operation: str, body: bytes) -> None:
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            return
        if isinstance(params, dict):
            with self._lock:
                self.bodies.append((operation, {k: v for k, v in params.items() if k not in _VALUES}))

    def params(self, operation: str) -> list[dict[str, Any]]:
        """The recorded parameters of every ``operation`` request, in order (values left out)."""
        with self._lock:
            return [p for op, p in self.bodies if op == operation]

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request upstream; (status, headers, body) of its answer."""
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1] if target else f"{self.command} {self.path}"
                fault = proxy._choose(operation)
                proxy._record(operation, body)
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.kind != "drop_after":
                    payload = json.dumps({"__type": fault.error_type, "message": fault.message}).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-RequestId", "fault-proxy")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                answer = None
                if proxy.aws is not None and target.startswith("secretsmanager."):
                    answer = proxy.aws.handle(operation, body, headers)
                if answer is None:
                    answer = proxy.forward(self.command, self.path, body, headers)
                answer = proxy._edited(operation, answer)
                if fault is not None and fault.kind == "drop_after":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, resp_headers, data = answer
                self.send_response(status)
                for k, v in resp_headers:
                    if k.lower() not in _HOP_BY_HOP and k.lower() not in {"server", "date"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class AwsSemantics:
    """Secrets Manager as AWS documents it, where moto answers otherwise. Quotes are from the Secrets Manager
    API Reference (the same text ships in botocore's ``data/secretsmanager/2017-10-17/service-2.json``).

    - ``DescribeSecret``: ``VersionIdsToStages`` is "a list of the versions of the secret that have staging
      labels attached. Versions that don't have staging labels are considered deprecated". moto lists them
      with ``[]``; here they are left out.
    - ``ListSecretVersionIds``: "By default, versions without staging labels aren't included"
      (``IncludeDeprecated``); and "if there are more results available, in the response, Secrets Manager
      includes NextToken. To get the next results, call ListSecretVersionIds again with the value from
      NextToken". moto ignores both; here deprecated versions are left out unless ``IncludeDeprecated``, and
      the answer comes in pages of at most ``min(MaxResults, page_size)`` versions.
    - ``PutSecretValue`` with a ``ClientRequestToken`` that is already a version holding a value: "If you call
      this operation with a ClientRequestToken that matches an existing version's VersionId, and you specify
      the same secret data, the operation succeeds but does nothing. However, if the secret data is different,
      then the operation fails" (``ResourceExistsException``). moto moves the requested labels onto such a
      version when it carries ``AWSPENDING`` (dropping ``AWSCURRENT``), and echoes the version's labels
      otherwise; here the request is not forwarded, labels do not move, and the answer has no
      ``VersionStages``. A version Secrets Manager created for a rotation without a value yet ("During
      rotation, Secrets Manager creates an AWSPENDING version ID before creating the new secret version",
      DescribeSecret) is filled in as before.
    - ``CreateSecret`` with ``AddReplicaRegions[].KmsKeyId``: each replica is encrypted with the key it names,
      and ``DescribeSecret`` reports it in ``ReplicationStatus[].KmsKeyId`` ("If you don't include this field,
      Secrets Manager uses aws/secretsmanager", ReplicaRegionType). moto drops the field.
    """

    def __init__(self, proxy: FaultProxy, *, page_size: int = 100) -> None:
        self.proxy = proxy
        self.page_size = page_size
        self._replica_keys: dict[str, dict[str, str]] = {}  # secret name -> replica region -> KmsKeyId

    def _call(self, operation: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        side = {k: v for k, v in headers.items() if k.lower() in {"authorization", "x-amz-date", "content-type"}}
        side["X-Amz-Target"] = f"secretsmanager.{operation}"
        side.setdefault("Content-Type", "application/x-amz-json-1.1")
        status, _, data = self.proxy.forward("POST", "/", json.dumps(params).encode(), side)
        return status, (json.loads(data) if data else {})

    @staticmethod
    def _answer(status: int, payload: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", "fault-proxy")]
        return status, headers, json.dumps(payload).encode()

    def handle(
        self, operation: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The answer AWS would give, or ``None`` to forward the request as it is."""
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            return None
        if operation == "DescribeSecret":
            status, resp = self._call(operation, params, headers)
            if status == 200:
                for key in ("VersionIdsToStages", "SecretVersionsToStages"):
                    if isinstance(resp.get(key), dict):
                        resp[key] = {vid: labels for vid, labels in resp[key].items() if labels}
                keys = self._replica_keys.get(str(resp.get("Name")), {})
                for replica in resp.get("ReplicationStatus") or []:
                    if replica.get("Region") in keys:
                        replica["KmsKeyId"] = keys[replica["Region"]]
            return self._answer(status, resp)
        if operation == "CreateSecret":
            status, resp = self._call(operation, params, headers)
            if status == 200:
                self._replica_keys[str(params.get("Name"))] = {
                    r["Region"]: r["KmsKeyId"] for r in params.get("AddReplicaRegions") or [] if r.get("KmsKeyId")
                }
            return self._answer(status, resp)
        if operation == "ListSecretVersionIds":
            status, resp = self._call(operation, {"SecretId": params.get("SecretId")}, headers)
            if status != 200:
                return self._answer(status, resp)
            versions = [
                v for v in resp.get("Versions", []) if v.get("VersionStages") or params.get("IncludeDeprecated")
            ]
            start = int(params.get("NextToken") or 0)
            size = min(int(params.get("MaxResults") or 100), self.page_size)
            resp["Versions"] = versions[start : start + size]
            resp.pop("NextToken", None)
            if start + size < len(versions):
                resp["NextToken"] = str(start + size)
            return self._answer(200, resp)
        if operation == "PutSecretValue" and params.get("ClientRequestToken"):
            token = params["ClientRequestToken"]
            status, existing = self._call(
                "GetSecretValue", {"SecretId": params.get("SecretId"), "VersionId": token}, headers
            )
            if status != 200:
                return None  # a new version, or one rotation created without a value: moto does it right
            same = existing.get("SecretString") == params.get("SecretString") and existing.get(
                "SecretBinary"
            ) == params.get("SecretBinary")
            if not same:
                return self._answer(
                    400,
                    {
                        "__type": "ResourceExistsException",
                        "message": f"You can't use ClientRequestToken {token} because that value is already in "
                        "use for a version of the secret.",
                    },
                )
            return self._answer(200, {"ARN": existing.get("ARN"), "Name": existing.get("Name"), "VersionId": token})
        return None

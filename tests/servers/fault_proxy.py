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

Quota mode (off by default): :meth:`FaultProxy.enforce_quotas` (or ``FaultProxy(..., quota_scale=...)``) makes the
proxy refuse Secrets Manager calls beyond the per-API request rates of the Secrets Manager quotas page, per
region, the way AWS refuses them: HTTP 400 with ``{"__type": "ThrottlingException", "message": "Rate exceeded"}``
(see :data:`AWS_QUOTAS` and :meth:`FaultProxy.enforce_quotas`). The sliding-window machinery,
:class:`QuotaBook`, lives here because this module needs nothing outside the standard library; the GCP Secret
Manager and Key Vault servers import it from here for their own quota modes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
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


# ---- quota mode: documented request rates enforced over sliding windows ----------------------------------


@dataclass(frozen=True)
class Quota:
    """One documented rate quota: at most ``limit`` requests in any ``window`` seconds, counted per scope.

    ``scope`` says what one counter covers (``"region"``, ``"project"``, ``"secret"``...); the server that uses the
    quota picks the scope key of each request (the region, ``projects/P``, the secret's name...). ``source`` is the
    page that documents the number, title and URL; ``note`` says where the model reads that page one way of two.
    """

    name: str
    limit: int
    window: float
    scope: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: the quota and scope key that were full, and when it would be admitted."""

    quota: Quota
    key: str
    #: seconds until the request would be admitted (the oldest request in the full window leaves it)
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` as delay-seconds, a whole number (RFC 9110, section 10.2.3), rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after - 1e-9)))


class QuotaBook:
    """Documented rate quotas enforced with a sliding-window log, with served and throttled counters per scope.

    A request is admitted when, for every quota it falls under, fewer than ``limit`` requests were admitted in the
    last ``window / scale`` seconds (for that quota's scope key); it then counts against all of them. A refused
    request counts against none: Key Vault documents that "Failed requests that return a 429 do not count towards
    the throttle limits tracked by Key Vault" (Azure Key Vault throttling guidance,
    https://learn.microsoft.com/azure/key-vault/general/overview-throttling); the GCP and AWS pages say nothing
    either way, and a refused request that still used quota would only make a well-behaved client look worse.

    Why a sliding window, not fixed windows or a token bucket: every page states its quotas as "N per minute",
    "N per second" or "maximum transactions allowed in 10 seconds" and none documents a refill rate, a burst size
    or where a window starts. A sliding window is the strictest reading of all three: any interval of that length
    holds at most N admitted requests. A fixed window would let 2N through across a window boundary, and a token
    bucket of capacity N refilled at N per window would let up to 2N through in one window (the full bucket plus
    the refill), either of which a service enforcing the other model could refuse; a client limiter that is never
    refused here fits all of them. It is also the model of the client-side libraries the limiter may use
    (``pyrate-limiter``'s ``Rate(n, interval)``, ``limits``' moving window), so the two agree on what "N per
    window" means.

    ``scale`` is a rate multiplier: every window is ``scale`` times shorter and the limits stay as documented, so
    ``scale=10`` admits ten times the documented rate with the documented burst (600 writes per minute becomes 600
    per 6 seconds). ``limits`` overrides documented limits by quota name (tests use small ones). ``clock`` is any
    monotonic clock in seconds (``time.monotonic`` by default; tests inject a fake one).
    """

    def __init__(
        self,
        quotas: Iterable[Quota],
        *,
        scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        table = {q.name: q for q in quotas}
        for name, limit in (limits or {}).items():
            if name not in table:
                raise KeyError(f"no quota named {name!r} (known: {', '.join(sorted(table))})")
            if limit < 1:
                raise ValueError(f"limit of {name!r} must be at least 1, got {limit!r}")
            table[name] = replace(table[name], limit=int(limit))
        self.quotas: dict[str, Quota] = table
        self.scale = float(scale)
        self.clock: Callable[[], float] = clock or time.monotonic
        self._lock = threading.Lock()
        self._log: dict[tuple[str, str], deque[float]] = {}
        self._served: Counter[tuple[str, str]] = Counter()
        self._throttled: Counter[tuple[str, str]] = Counter()
        #: requests admitted and refused (a request under several quotas counts once here)
        self.requests_served = 0
        self.requests_throttled = 0

    def window(self, name: str) -> float:
        """The enforced window of quota ``name`` in seconds: the documented one divided by ``scale``."""
        return self.quotas[name].window / self.scale

    def admit(self, checks: Iterable[tuple[str, str]]) -> Refusal | None:
        """Count one request under each ``(quota name, scope key)`` of ``checks``, or refuse it.

        Returns ``None`` when admitted, else the :class:`Refusal` of the full window that frees up last (a request
        under several full quotas waits for all of them). Names not in the book are ignored.
        """
        with self._lock:
            now = self.clock()
            wanted: list[tuple[str, str, deque[float]]] = []
            full: list[Refusal] = []
            for name, key in checks:
                quota = self.quotas.get(name)
                if quota is None:
                    continue
                window = quota.window / self.scale
                log = self._log.setdefault((name, key), deque())
                while log and log[0] <= now - window:
                    log.popleft()
                if len(log) >= quota.limit:
                    # the request fits once all but limit - 1 of the logged ones have left the window
                    leaves = log[len(log) - quota.limit] + window
                    full.append(Refusal(quota, key, leaves - now))
                wanted.append((name, key, log))
            if not wanted:
                return None
            if full:
                for refusal in full:
                    self._throttled[(refusal.quota.name, refusal.key)] += 1
                self.requests_throttled += 1
                return max(full, key=lambda r: r.retry_after)
            for name, key, log in wanted:
                log.append(now)
                self._served[(name, key)] += 1
            self.requests_served += 1
            return None

    def served(self, name: str | None = None, key: str | None = None) -> int:
        """Requests admitted under quota ``name`` (any) for scope ``key`` (any)."""
        with self._lock:
            return sum(n for (q, k), n in self._served.items() if name in (None, q) and key in (None, k))

    def throttled(self, name: str | None = None, key: str | None = None) -> int:
        """Requests refused because quota ``name`` (any) was full for scope ``key`` (any)."""
        with self._lock:
            return sum(n for (q, k), n in self._throttled.items() if name in (None, q) and key in (None, k))

    def stats(self) -> dict[str, Any]:
        """Everything a benchmark prints: the scale, the totals, and per quota its enforced limit and window, its
        documented window, its source and, per scope key, the requests served and throttled."""
        with self._lock:
            quotas: dict[str, Any] = {}
            for name, quota in self.quotas.items():
                keys = {k for (q, k) in self._served if q == name} | {k for (q, k) in self._throttled if q == name}
                quotas[name] = {
                    "limit": quota.limit,
                    "window": quota.window / self.scale,
                    "documented_window": quota.window,
                    "scope": quota.scope,
                    "source": quota.source,
                    "served": sum(n for (q, _), n in self._served.items() if q == name),
                    "throttled": sum(n for (q, _), n in self._throttled.items() if q == name),
                    "by_scope": {
                        k: {"served": self._served[(name, k)], "throttled": self._throttled[(name, k)]}
                        for k in sorted(keys)
                    },
                }
            return {
                "scale": self.scale,
                "served": self.requests_served,
                "throttled": self.requests_throttled,
                "quotas": quotas,
            }

    def reset(self) -> None:
        """Empty every window and zero every counter (the quotas, scale and clock stay)."""
        with self._lock:
            self._log.clear()
            self._served.clear()
            self._throttled.clear()
            self.requests_served = self.requests_throttled = 0


_AWS_QUOTAS_PAGE = (
    "AWS Secrets Manager quotas, https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html"
)

#: Secrets Manager's per-API request rates. "Each supported Region: 50 per second", not adjustable, and "each quota
#: is specific to each region" (AWS Secrets Manager quotas,
#: https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html); the account is the one
#: of the caller ("Secrets Manager throttles the account of the identity that makes the requests", same page).
#: The proxy serves one account, so the scope key is the region the request is signed for.
AWS_QUOTAS: tuple[Quota, ...] = (
    # "Combined rate of PutSecretValue, RemoveRegionsFromReplication, ReplicateSecretToRegion,
    # StopReplicationToReplica, UpdateSecret, and UpdateSecretVersionStage API requests": 50 per second in each
    # Region, not adjustable
    Quota("WriteApisPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE),
    # "AWS Secrets Manager increases API requests per second limits" (AWS What's New, 2025-03-04,
    # https://aws.amazon.com/about-aws/whats-new/2025/03/aws-secrets-manager-increases-api-requests-seconds/):
    # GetSecretValue up to 10,000 requests per second, DescribeSecret 40,000, in every Region
    Quota(
        "GetSecretValuePerSecond",
        10_000,
        1.0,
        "region",
        "AWS What's New 2025-03-04, https://aws.amazon.com/about-aws/whats-new/2025/03/"
        "aws-secrets-manager-increases-api-requests-seconds/",
        "older copies of the quotas page list one combined DescribeSecret + GetSecretValue rate of 10,000/s",
    ),
    Quota(
        "DescribeSecretPerSecond",
        40_000,
        1.0,
        "region",
        "AWS What's New 2025-03-04, https://aws.amazon.com/about-aws/whats-new/2025/03/"
        "aws-secrets-manager-increases-api-requests-seconds/",
    ),
    # RotateSecret and CancelRotateSecret combined: 50 per second in each Region, not adjustable (quotas page)
    Quota("RotateApisPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE),
    # TagResource and UntagResource combined: 50 per second in each Region, not adjustable (quotas page)
    Quota("TagApisPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE),
    # RestoreSecret: 50 per second in each Region, not adjustable (quotas page)
    Quota("RestoreSecretPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE),
    # "Combined rate of DeleteResourcePolicy, GetResourcePolicy, PutResourcePolicy, and ValidateResourcePolicy
    # API requests": "Each supported Region: 50 per second"
    Quota("ResourcePolicyApisPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE),
    # BatchGetSecretValue: 100 per second in each Region, not adjustable (quotas page)
    Quota("BatchGetSecretValuePerSecond", 100, 1.0, "region", _AWS_QUOTAS_PAGE),
    # ListSecrets: raised to 100 requests per second ("AWS Secrets Manager increases API requests per second
    # limits", AWS What's New, 2022-11-11, https://aws.amazon.com/about-aws/whats-new/2022/11/
    # aws-secrets-manager-increases-api-requests-per-second-limits/)
    Quota(
        "ListSecretsPerSecond",
        100,
        1.0,
        "region",
        "AWS What's New 2022-11-11, https://aws.amazon.com/about-aws/whats-new/2022/11/"
        "aws-secrets-manager-increases-api-requests-per-second-limits/",
    ),
    # The rows for CreateSecret, DeleteSecret, ListSecretVersionIds and GetRandomPassword were not in the copies of
    # the quotas page that could be read here; they are modelled at the page's control-plane rate, 50 per second
    # each. Check them against the live page before relying on them.
    Quota("CreateSecretPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE, "row not verified: 50/s assumed"),
    Quota("DeleteSecretPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE, "row not verified: 50/s assumed"),
    Quota("ListSecretVersionIdsPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE, "row not verified: 50/s assumed"),
    Quota("GetRandomPasswordPerSecond", 50, 1.0, "region", _AWS_QUOTAS_PAGE, "row not verified: 50/s assumed"),
)

#: which quota each Secrets Manager operation counts against
AWS_OPERATION_QUOTAS: dict[str, str] = {
    **dict.fromkeys(
        (
            "PutSecretValue",
            "RemoveRegionsFromReplication",
            "ReplicateSecretToRegion",
            "StopReplicationToReplica",
            "UpdateSecret",
            "UpdateSecretVersionStage",
        ),
        "WriteApisPerSecond",
    ),
    "GetSecretValue": "GetSecretValuePerSecond",
    "DescribeSecret": "DescribeSecretPerSecond",
    "RotateSecret": "RotateApisPerSecond",
    "CancelRotateSecret": "RotateApisPerSecond",
    "TagResource": "TagApisPerSecond",
    "UntagResource": "TagApisPerSecond",
    "RestoreSecret": "RestoreSecretPerSecond",
    **dict.fromkeys(
        ("DeleteResourcePolicy", "GetResourcePolicy", "PutResourcePolicy", "ValidateResourcePolicy"),
        "ResourcePolicyApisPerSecond",
    ),
    "BatchGetSecretValue": "BatchGetSecretValuePerSecond",
    "ListSecrets": "ListSecretsPerSecond",
    "CreateSecret": "CreateSecretPerSecond",
    "DeleteSecret": "DeleteSecretPerSecond",
    "ListSecretVersionIds": "ListSecretVersionIdsPerSecond",
    "GetRandomPassword": "GetRandomPasswordPerSecond",
}

#: the region of a SigV4 ``Authorization`` header: ``Credential=AKID/20250101/us-east-1/secretsmanager/aws4_request``
_SIGV4_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/")


class FaultProxy:
    """Forwarding proxy with injected faults. Start with ``with`` or :meth:`start`; :meth:`stop` ends it."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        aws_semantics: bool = False,
        page_size: int = 100,
        quota_scale: float | None = None,
        quota_clock: Callable[[], float] | None = None,
    ) -> None:
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
        #: the quota mode's book (windows and counters), or ``None`` while the mode is off (the default)
        self.quotas: QuotaBook | None = None
        if quota_scale is not None:
            self.enforce_quotas(scale=quota_scale, clock=quota_clock)
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

    def enforce_quotas(
        self,
        *,
        scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> QuotaBook:
        """Refuse Secrets Manager calls beyond the documented per-API rates (:data:`AWS_QUOTAS`), per region.

        ``scale`` multiplies every rate (``scale=10``: ten times the documented rate, each window a tenth as
        long), ``limits`` overrides limits by quota name, ``clock`` replaces ``time.monotonic``; see
        :class:`QuotaBook`. A refused call is not forwarded and gets what AWS answers a throttled call of a JSON
        protocol service: HTTP 400 (``ThrottlingException`` "The request was denied due to request throttling",
        "HTTP Status Code: 400", Secrets Manager API Reference, Common Errors,
        https://docs.aws.amazon.com/secretsmanager/latest/apireference/CommonErrors.html) with the error type in
        ``__type`` of an ``application/x-amz-json-1.1`` body and the message "Rate exceeded", as the service answers
        a throttled call ("ThrottlingException: Rate exceeded ... status code: 400" in
        https://github.com/external-secrets/external-secrets/issues/4065, ``"message": "Rate exceeded", "code":
        "ThrottlingException" ... "statusCode": 400`` in
        https://github.com/external-secrets/kubernetes-external-secrets/issues/491); no ``Retry-After``, which
        AWS does not send. botocore retries it as a throttling error in every retry mode
        (and ``adaptive`` mode slows its own sending after one); a test that wants the raw refusal sets
        ``max_attempts`` to 1. Requests that are not Secrets Manager calls (no ``X-Amz-Target``) are not counted.
        """
        book = QuotaBook(AWS_QUOTAS, scale=scale, clock=clock, limits=limits)
        with self._lock:
            self.quotas = book
        return book

    def quotas_off(self) -> None:
        """Leave quota mode: every call is forwarded again (the book, with its counters, is dropped)."""
        with self._lock:
            self.quotas = None

    def _quota_refusal(self, operation: str, target: str, headers: Mapping[str, str]) -> Refusal | None:
        book = self.quotas
        if book is None or not target.startswith("secretsmanager."):
            return None
        quota = AWS_OPERATION_QUOTAS.get(operation)
        if quota is None:
            return None
        match = _SIGV4_REGION.search(headers.get("Authorization", ""))
        region = match.group(1) if match else "us-east-1"
        refusal = book.admit([(quota, region)])
        if refusal is not None:
            with self._lock:
                self.requests.append(operation)
        return refusal

    def clear(self) -> None:
        """Drop every scheduled fault and the request log (and empty the quota windows and counters)."""
        with self._lock:
            self._queue.clear()
            self._rates.clear()
            self.requests.clear()
            self.faults.clear()
            self.bodies.clear()
            book = self.quotas
        if book is not None:
            book.reset()

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
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1] if target else f"{self.command} {self.path}"
                refusal = proxy._quota_refusal(operation, target, self.headers)
                if refusal is not None:
                    # throttled before anything else: not forwarded, and no queued fault is used up
                    self._send_error(400, "ThrottlingException", "Rate exceeded")
                    return
                fault = proxy._choose(operation)
                proxy._record(operation, body)
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.kind != "drop_after":
                    self._send_error(fault.status, fault.error_type, fault.message)
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

            def _send_error(self, status: int, error_type: str, message: str) -> None:
                # an AWS JSON 1.1 error: the type in "__type", the text in "message"
                payload = json.dumps({"__type": error_type, "message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-RequestId", "fault-proxy")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

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

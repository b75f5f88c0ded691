"""A small HTTP proxy, bound to 127.0.0.1, that forwards to a server (moto) and injects faults on the way.

Faults, served instead of forwarding the request:

- ``throttle``: 429 with an AWS JSON-1.1 error body ``{"__type": "ThrottlingException", ...}``;
- ``error500``: 500 ``{"__type": "InternalServiceError", ...}``;
- ``drop``: the request is read and the connection closed without an answer;
- ``error(status, type)``: any other AWS JSON error (e.g. 400 AccessDeniedException).

Schedule them with a queue (:meth:`FaultProxy.inject`: the next n matching requests fail) and/or a rate
(:meth:`FaultProxy.set_rate`: each matching request fails with a probability, from a seeded RNG). A fault
may match one operation only, taken from the ``X-Amz-Target`` header (``secretsmanager.PutSecretValue`` ->
``PutSecretValue``). ``requests`` lists the operation of every request seen, ``faults`` those that failed.

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

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
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
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    payload = json.dumps({"__type": fault.error_type, "message": fault.message}).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-RequestId", "fault-proxy")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP and k.lower() not in {"server", "date"}:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

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

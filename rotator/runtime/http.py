"""The one small HTTP listener of ``rotator run``: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: 200 while the scheduler runs (the process is alive and will run passes); 503 otherwise.
  With leader election the text says whether this replica leads or stands by (and who holds the Lease).
- ``/readyz``: 200 when the last pass finished within twice the interval and the issuer answered it;
  503 with a fixed, short reason otherwise (including before the first pass has finished; the error itself is
  in the log, not in the answer). A standby replica of a leader election is ready (200, "standby"): it runs no
  passes by design.
- ``/metrics``: Prometheus text format.
- ``/``: the read-only status page (:mod:`rotator.status_page`), only with ``http.status_page: true``.

GET only: nothing served here changes anything (other methods get 501 from the standard library).

The listener is reachable by whatever can reach the pod, so it bounds what a client can hold:

- a connection must send its whole request (line and headers) within :data:`REQUEST_TIMEOUT` seconds and may
  stay silent for at most :data:`IDLE_TIMEOUT` seconds (sending the answer too), else it is closed;
- at most :data:`MAX_CONNECTIONS` connections are served at once (one thread each). When all are taken, the
  one that has waited longest for its request is closed to make room (a probe still gets its answer while
  idle sockets pile up); when every one is already answering, the new connection is closed at once;
- every answer, errors included, carries :data:`SECURITY_HEADERS` (the status page sends its own
  Content-Security-Policy, which allows the inline style it needs), and the ``Server`` header says ``rotator``,
  not the Python version.
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

Probe = Callable[[], tuple[bool, str]]

log = structlog.get_logger("rotator")

#: seconds a connection may stay silent (waiting for a request byte, or for the client to take the answer)
IDLE_TIMEOUT = 10.0
#: seconds a connection has to send its request line and headers in full (a client dripping headers is cut off)
REQUEST_TIMEOUT = 10.0
#: connections served at once, one thread each
MAX_CONNECTIONS = 64
#: at most one "connection limit reached" warning this often (seconds)
_WARN_EVERY = 60.0

#: on every answer (the status page at / sends its own Content-Security-Policy, which allows its inline style)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class _DeadlineReader(io.RawIOBase):
    """The request side of a connection: each read waits at most ``idle`` seconds, and none starts after the
    request's deadline (so dripping one byte at a time does not keep a connection forever)."""

    def __init__(self, sock: socket.socket, idle: float, total: float) -> None:
        super().__init__()
        self._sock = sock
        self._idle = idle
        self._total = total
        self._deadline = time.monotonic() + total

    def restart(self) -> None:
        self._deadline = time.monotonic() + self._total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request was not complete within {self._total:g} s")
        self._sock.settimeout(min(self._idle, left))
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._idle)  # for sending the answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of connections waits in the backlog instead of being dropped

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int):
        self.max_connections = max_connections
        self._lock = threading.Condition()
        #: the connections being served, oldest first: True once the request was read (answering)
        self._conns: dict[socket.socket, bool] = {}
        self._threads_alive = 0
        self._warned = -_WARN_EVERY
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._conns) >= self.max_connections and not self._evict_locked():
                refused = True
            else:
                # an evicted connection's thread ends at once, but it counts until it has: under a flood, wait
                # (briefly) for those rather than start more threads
                self._lock.wait_for(lambda: self._threads_alive < 2 * self.max_connections, timeout=1.0)
                refused = self._threads_alive >= 2 * self.max_connections
            if not refused:
                self._conns[request] = False
                self._threads_alive += 1
        if refused:
            self._warn("every connection is answering; closing the new one")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: socket.socket) -> None:
        with self._lock:
            self._conns.pop(request, None)
            self._threads_alive -= 1
            self._lock.notify_all()

    def answering(self, request: socket.socket) -> None:
        """The handler read a whole request: this connection is no longer one to evict."""
        with self._lock:
            if request in self._conns:
                self._conns[request] = True

    def _evict_locked(self) -> bool:
        """Close the connection that has waited longest for its request; False when all are answering."""
        conn = next((c for c, answering in self._conns.items() if not answering), None)
        if conn is None:
            return False
        del self._conns[conn]
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once; the thread closes the socket
        self._warn("connection limit reached; closed the connection idle the longest")
        return True

    def _warn(self, event: str) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(f"http listener: {event}", max_connections=self.max_connections)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # the standard library prints a traceback on stderr; a client that resets or vanishes mid-answer is not
        # worth one (and a flood of them would bury the log), anything else is logged as an error
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("http listener: a client dropped its connection", error=repr(exc))
        else:
            log.error("http listener: answering a request failed", exc_info=True)


class HealthServer:
    def __init__(
        self,
        listen: str,
        *,
        health: Probe,
        ready: Probe,
        metrics: Callable[[], bytes],
        page: Callable[[], bytes] | None = None,
        idle_timeout: float | None = None,
        request_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        probes = {"/healthz": health, "/readyz": ready}
        idle = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        total = REQUEST_TIMEOUT if request_timeout is None else request_timeout

        class Handler(BaseHTTPRequestHandler):
            server_version = "rotator"
            sys_version = ""
            # a request line without a version would get an HTTP/0.9 answer: a bare body, with no headers at all
            default_request_version = "HTTP/1.0"
            timeout = idle
            server: _Server
            _reader: _DeadlineReader
            _sent: set[str]

            def setup(self) -> None:
                super().setup()
                self.rfile.close()  # the plain reader: replaced by one with a deadline
                self._reader = _DeadlineReader(self.connection, idle, total)
                self.rfile = io.BufferedReader(self._reader)
                self._sent = set()

            def handle_one_request(self) -> None:
                self._reader.restart()
                super().handle_one_request()

            def parse_request(self) -> bool:
                ok = super().parse_request()
                if ok:
                    self.server.answering(self.request)
                return ok

            def version_string(self) -> str:
                return self.server_version

            def send_response(self, code: int, message: str | None = None) -> None:
                self._sent = set()
                super().send_response(code, message)

            def send_header(self, keyword: str, value: str) -> None:
                self._sent.add(keyword.lower())
                super().send_header(keyword, value)

            def end_headers(self) -> None:
                for name, value in SECURITY_HEADERS.items():
                    if name.lower() not in self._sent:
                        self.send_header(name, value)
                super().end_headers()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics(), CONTENT_TYPE_LATEST)
                elif path == "/" and page is not None:
                    from rotator.status_page import SECURITY_HEADERS as PAGE_HEADERS

                    self._send(200, page(), "text/html; charset=utf-8", PAGE_HEADERS)
                elif path in probes:
                    ok, why = probes[path]()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        cap = MAX_CONNECTIONS if max_connections is None else max_connections
        self.server = _Server((host, int(port)), Handler, cap)
        self._thread = threading.Thread(target=self.server.serve_forever, name="rotator-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""The one small HTTP listener of ``rotator run``: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: 200 while the scheduler runs (the process is alive and will run passes); 503 otherwise.
  With leader election the text says whether this replica leads or stands by (and who holds the Lease).
- ``/readyz``: 200 when the last pass finished within twice the interval and the issuer answered it;
  503 with the reason otherwise (including before the first pass has finished). A standby replica of a
  leader election is ready (200, "standby"): it runs no passes by design.
- ``/metrics``: Prometheus text format.
- ``/``: the read-only status page (:mod:`rotator.status_page`), only with ``http.status_page: true``.

GET only: nothing served here changes anything (other methods get 501 from the standard library).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(
        self,
        listen: str,
        *,
        health: Probe,
        ready: Probe,
        metrics: Callable[[], bytes],
        page: Callable[[], bytes] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        probes = {"/healthz": health, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics(), CONTENT_TYPE_LATEST)
                elif path == "/" and page is not None:
                    from rotator.status_page import SECURITY_HEADERS

                    self._send(200, page(), "text/html; charset=utf-8", SECURITY_HEADERS)
                elif path in probes:
                    ok, why = probes[path]()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain")

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

        self.server = ThreadingHTTPServer((host, int(port)), Handler)
        self.server.daemon_threads = True
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

"""Tiny HTTP servers on 127.0.0.1 for end-to-end tests of pickup checks and alerts.

- :class:`KeyIdConsumer`: a consumer's key-id endpoint (docs/pickup.md): ``GET`` answers
  ``{"keyId": <key id>}``. The test switches it to another key id (:meth:`KeyIdConsumer.switch`) at the
  moment it chooses, so a pickup check sees the consumers move one by one.
- :class:`WebhookReceiver`: records the JSON body of every ``POST`` (an alert notifier's target). It answers
  ``status`` (200 by default; set 500 to play a failing notifier).

Both listen on a free port (port 0) and are stopped by the context managers :func:`consumers` and
:func:`webhook_receiver` (or :meth:`stop`). Nothing here patches rotator: the checks and notifiers talk real
HTTP to these servers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:0 served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class KeyIdConsumer:
    """A consumer reporting the key id it loaded; :meth:`switch` makes it report another one."""

    def __init__(self, key_id: str | None, name: str = "consumer") -> None:
        self.name = name
        self._key_id = key_id
        self._lock = threading.Lock()
        #: how many times it was asked
        self.asked = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                with owner._lock:
                    owner.asked += 1
                    body = json.dumps({"keyId": owner._key_id, "name": owner.name}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/momento-key-id"

    @property
    def key_id(self) -> str | None:
        with self._lock:
            return self._key_id

    def switch(self, key_id: str | None) -> None:
        """From now on, report ``key_id``."""
        with self._lock:
            self._key_id = key_id

    def stop(self) -> None:
        self._server.stop()


class WebhookReceiver:
    """Records every POSTed JSON body (``received``) with its path and headers (``requests``)."""

    def __init__(self, status: int = 200) -> None:
        #: the HTTP status it answers with
        self.status = status
        #: seconds it waits before answering (a slow or hung webhook)
        self.delay = 0.0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = {"_not_json": raw.decode("utf-8", "replace")}
                with owner._cond:
                    owner._requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    owner._cond.notify_all()
                    status = owner.status
                if owner.delay:
                    time.sleep(owner.delay)
                answer = b'{"ok": true}' if status < 300 else b'{"error": "injected"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = _Server(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/hooks/rotator"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def received(self) -> list[Any]:
        """Every POSTed body, in arrival order."""
        return [r["body"] for r in self.requests]

    def events(self, kind: str | None = None, policy: str | None = None) -> list[dict[str, Any]]:
        """The generic-webhook alerts received (``{"event", "policy", ...}``), optionally filtered."""
        return [
            b
            for b in self.received
            if isinstance(b, dict)
            and "event" in b
            and (kind is None or b["event"] == kind)
            and (policy is None or b.get("policy") == policy)
        ]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        """Wait until at least ``count`` bodies arrived (or ``timeout``); return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [r["body"] for r in self._requests]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def consumers(*key_ids: str | None) -> Iterator[list[KeyIdConsumer]]:
    """Started consumers reporting ``key_ids`` (one each, named ``c1``, ``c2``...), stopped on exit."""
    started: list[KeyIdConsumer] = []
    try:
        for i, kid in enumerate(key_ids, 1):
            started.append(KeyIdConsumer(kid, name=f"c{i}"))
        yield started
    finally:
        for c in started:
            c.stop()


@contextmanager
def webhook_receiver(status: int = 200) -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(status)
    try:
        yield r
    finally:
        r.stop()

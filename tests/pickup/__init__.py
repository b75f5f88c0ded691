"""Pickup-check tests, and :class:`Consumer`: a key-id endpoint the tests switch to a new key when they choose.

A :class:`Consumer` is a tiny HTTP server on 127.0.0.1 (a free port) answering ``GET`` on any path the way
a consumer following docs/pickup.md does: ``{"keyId": <key_id>}`` by default. Its answer can be changed at
any moment (``consumer.key_id = "k0002"``; ``status``, ``body``, ``header``, ``nest``, ``delay``), and it
records the request headers it saw. Use :func:`running_consumers` from a fixture; it stops them all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Consumer:
    """One consumer's key-id endpoint. Attributes may be changed while it runs; reads are atomic enough."""

    def __init__(self, key_id: str | None) -> None:
        #: the key id it reports
        self.key_id = key_id
        #: HTTP status of its answers
        self.status = 200
        #: the raw body to send instead of the JSON answer (e.g. garbage)
        self.body: bytes | None = None
        #: send the key id in this response header (the body then says nothing useful)
        self.header: str | None = None
        #: wrap the key id in these JSON objects, e.g. ("momento",) -> {"momento": {"keyId": ...}}
        self.nest: tuple[str, ...] = ()
        #: seconds to wait before answering
        self.delay = 0.0
        #: a header value it requires (name, value), else it answers 401
        self.require: tuple[str, str] | None = None
        #: the headers of every request it got
        self.seen: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/momento-key-id"

    def start(self) -> Consumer:
        consumer = self

        class Handler(_Handler):
            owner = consumer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def answer(self, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.seen.append(headers)
        if self.delay:
            time.sleep(self.delay)
        if self.require is not None and headers.get(self.require[0].lower()) != self.require[1]:
            return 401, {}, b'{"error": "unauthorized"}'
        out_headers: dict[str, str] = {}
        payload: Any = {"keyId": self.key_id}
        if self.header is not None:
            if self.key_id is not None:
                out_headers[self.header] = self.key_id
            payload = {"status": "ok"}
        for name in reversed(self.nest):
            payload = {name: payload}
        body = self.body if self.body is not None else json.dumps(payload).encode()
        return self.status, out_headers, body


class _Handler(BaseHTTPRequestHandler):
    owner: Consumer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        status, headers, body = self.owner.answer({k.lower(): v for k, v in self.headers.items()})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def running_consumers(*key_ids: str | None) -> Iterator[list[Consumer]]:
    """Started consumers reporting ``key_ids`` (one each), stopped on exit."""
    started: list[Consumer] = []
    try:
        for kid in key_ids:
            started.append(Consumer(kid).start())
        yield started
    finally:
        for c in started:
            c.stop()

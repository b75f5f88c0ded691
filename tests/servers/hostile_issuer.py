"""A hostile or broken Momento key API: a proxy on 127.0.0.1 in front of the emulator that rewrites, slows or
bloats answers the way a broken dependency (or an attacker who took over the issuer's host name) would.

Each *behaviour* is matched by method and path prefix (``("POST", "/api-keys")``) and decides the answer:

- :func:`edit_json`: the real answer, its JSON object edited by a function (e.g. ``api_key`` replaced);
- :func:`replace`: a fixed answer (status, content type, body), the upstream is not asked;
- :func:`drip`: the real (or a given) answer, sent ``chunk`` bytes every ``every`` seconds;
- :func:`drip_headers`: the status line, then one header byte every ``every`` seconds, never the body;
- :func:`endless_pages`: a page of the real listing whose ``next_token`` is fresh on every call;
- :func:`huge_listing`: a 200 whose body is ``size`` bytes of a valid-looking ``key_info`` array, streamed;
- :func:`deep_nesting`: ``depth`` nested arrays.

What it serves departs from the documented contract on purpose (the contract: ``../shared/reference/momento.md``,
from Momento's "API keys HTTP API" page: ``POST /api-keys`` answers ``{"api_key", "key_info"}``, ``GET /api-keys``
pages of at most ``limit`` keys with an optional ``next_token``); everything not matched is the emulator's
documented behaviour, forwarded unchanged.

The proxy forwards to any plain-HTTP upstream, so ``tests/test_hostile_kube.py`` puts it in front of
``tests/servers/kube_api.py`` too (the departures there are from the Kubernetes API's: an API server answers
promptly, with a ``Status`` object of a few hundred bytes for an error).

``calls`` records ``(method, path)`` of every request the proxy saw (the query left out), so a test can count
the calls a pass makes at the server. Nothing is patched in rotator or an SDK: rotator talks HTTP to this.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


#: a behaviour gets the request and a function that asks the emulator, and writes the answer itself
Behaviour = Callable[[Request, Callable[[], Answer], BaseHTTPRequestHandler], None]


def _send(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
    status, headers, body = answer
    handler.send_response(status)
    for k, v in headers.items():
        if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
            handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")  # the proxy closes after a behaviour: say so, so no client reuses it
    handler.end_headers()
    handler.wfile.write(body)


def edit_json(edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Behaviour:
    """The emulator's answer with its JSON object passed through ``edit``."""

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        status, headers, body = upstream()
        if 200 <= status < 300:
            body = json.dumps(edit(json.loads(body))).encode()
        _send(h, (status, headers, body))

    return behave


def replace(status: int, body: bytes, content_type: str = "application/json", *, forward: bool = False) -> Behaviour:
    """A fixed answer; with ``forward`` the request still reaches the emulator first (it acts, the answer lies)."""

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        if forward:
            upstream()
        _send(h, (status, {"Content-Type": content_type}, body))

    return behave


def drip(every: float, chunk: int = 1, body: bytes | None = None) -> Behaviour:
    """The answer's headers at once (with its length), then ``chunk`` bytes of its body every ``every`` s."""

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        status, headers, data = upstream() if body is None else (200, {"Content-Type": "application/json"}, body)
        h.send_response(status)
        h.send_header("Content-Type", headers.get("Content-Type", "application/json"))
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        with contextlib.suppress(OSError):
            for i in range(0, len(data), chunk):
                h.wfile.write(data[i : i + chunk])
                h.wfile.flush()
                time.sleep(every)

    return behave


def drip_headers(every: float, count: int = 100_000) -> Behaviour:
    """A status line, then header bytes one at a time: a client reading headers per socket read never ends."""

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(OSError):
            h.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(count):
                h.wfile.write(b"X")
                h.wfile.flush()
                time.sleep(every)

    return behave


def endless_pages() -> Behaviour:
    """The emulator's first page, always with a new ``next_token``: a listing that never ends."""
    tokens = itertools.count()

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        req.query.pop("next_token", None)  # the emulator is asked for its first page each time
        status, headers, body = upstream()
        data = json.loads(body)
        data["next_token"] = f"page-{next(tokens)}"
        _send(h, (status, headers, json.dumps(data).encode()))

    return behave


def huge_listing(size: int) -> Behaviour:
    """A 200 with a ``key_info`` list of ``size`` bytes, streamed in 64 KiB writes (never held in memory here)."""
    item = json.dumps(
        {
            "key_id": "00000000-0000-4000-8000-000000000000",
            "account_id": "acct",
            "role_id": "operator",
            "description": "x" * 200,
            "issued_at_epoch_seconds": 1,
        }
    ).encode()

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        head, tail = b'{"key_info":[', b"]}"
        n = max(1, (size - len(head) - len(tail)) // (len(item) + 1))
        block_items = max(1, 65536 // (len(item) + 1))
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")  # no length: a client cannot refuse it up front
        h.end_headers()

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        with contextlib.suppress(OSError):
            chunk(head)
            sent = 0
            while sent < n:
                k = min(block_items, n - sent)
                chunk(b",".join([item] * k) + (b"," if sent + k < n else b""))
                sent += k
            chunk(tail)
            h.wfile.write(b"0\r\n\r\n")

    return behave


def huge_body(size: int, status: int = 200, content_type: str = "application/json") -> Behaviour:
    """An answer (any status) whose body is ``size`` bytes of JSON whitespace inside ``{}``, chunked (no length:
    a client cannot refuse it up front), streamed in 64 KiB writes."""

    def behave(req: Request, upstream: Callable[[], Answer], h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b" " * 65536
        with contextlib.suppress(OSError):
            h.wfile.write(b"1\r\n{\r\n")
            for _ in range(size // len(block)):
                h.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            h.wfile.write(b"1\r\n}\r\n0\r\n\r\n")

    return behave


def deep_nesting(depth: int) -> Behaviour:
    """A 200 whose body is ``depth`` nested JSON arrays inside the listing's field."""
    body = b'{"key_info":' + b"[" * depth + b"]" * depth + b"}"
    return replace(200, body)


class HostileIssuer:
    """A proxy to ``upstream`` (the emulator's URL) that applies :attr:`behaviours` to matching requests."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.behaviours: dict[tuple[str, str], Behaviour] = {}
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def on(self, method: str, path: str, behaviour: Behaviour | None) -> None:
        """Answer ``method path...`` with ``behaviour`` (``None``: forward as it is again)."""
        with self._lock:
            if behaviour is None:
                self.behaviours.pop((method, path), None)
            else:
                self.behaviours[(method, path)] = behaviour

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.calls if m == method and p == path)

    def _forward(self, req: Request) -> Answer:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            url = req.path + (f"?{urllib.parse.urlencode(req.query)}" if req.query else "")
            conn.request(req.method, url, body=req.body or None, headers=req.headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def _behaviour(self, req: Request) -> Behaviour | None:
        with self._lock:
            # the longest matching prefix wins
            for (method, path), b in sorted(self.behaviours.items(), key=lambda kv: -len(kv[0][1])):
                if method == req.method and req.path.startswith(path):
                    return b
        return None

    def start(self) -> HostileIssuer:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host", "content-length")
                }
                req = Request(self.command, parts.path, query, headers, body)
                with proxy._lock:
                    proxy.calls.append((self.command, parts.path))
                behaviour = proxy._behaviour(req)
                if behaviour is None:
                    _send(self, proxy._forward(req))
                else:
                    behaviour(req, lambda: proxy._forward(req), self)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), name="hostile-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HostileIssuer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


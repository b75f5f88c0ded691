"""The ``rotator run`` listener against clients that misbehave, over real sockets on 127.0.0.1: silent and
header-dripping connections are dropped, idle sockets cannot pile up threads or lock out a probe, every answer
(errors too) carries the security headers and no Python version, and ``/readyz`` does not echo the issuer's error.

The listener runs in this process (:class:`rotator.runtime.http.HealthServer`, or the one a
:class:`rotator.runtime.daemon.Daemon` starts); its limits are module settings, shortened here so the tests run
in seconds (``raising=False``: the settings are set the same way on a listener that predates them, where these
tests fail on behaviour, not on a missing name).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

import rotator.runtime.http as http_mod
from rotator.runtime.http import HealthServer
from rotator.status_page import SECURITY_HEADERS as PAGE_HEADERS
from tests.support.e2e import free_port

EXPECTED = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def limits(monkeypatch: pytest.MonkeyPatch, **values: float) -> None:
    """Set the listener's module settings (IDLE_TIMEOUT, REQUEST_TIMEOUT, MAX_CONNECTIONS) for one test."""
    for name, value in values.items():
        monkeypatch.setattr(http_mod, name, value, raising=False)


@contextmanager
def listener(
    *,
    metrics: Callable[[], bytes] = lambda: b"# no metrics\n",
    ready: Callable[[], tuple[bool, str]] = lambda: (False, "no pass has finished yet"),
) -> Iterator[tuple[str, int]]:
    server = HealthServer(
        f"127.0.0.1:{free_port()}",
        health=lambda: (True, "ok: scheduler running"),
        ready=ready,
        metrics=metrics,
        page=lambda: b"<!doctype html><title>status</title>",
    )
    server.start()
    try:
        host, port = server.address.rsplit(":", 1)
        yield host, int(port)
    finally:
        server.stop()


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), or None if it still had not after ``within``."""
    started = time.monotonic()
    while True:
        left = within - (time.monotonic() - started)
        if left <= 0:
            return None
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return None
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except OSError:  # reset
            return time.monotonic() - started


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock`` open (no EOF or reset waiting on it); reads nothing else."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(65536, socket.MSG_PEEK) != b""
    except OSError:
        return False


def exchange(address: tuple[str, int], data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send raw ``data`` on a fresh connection, close the sending side, read the answer to the end."""
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/"), raw[:200]
    status = int(lines[0].split()[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    return status, headers, body


# ---- a) connections that send nothing, or too slowly, are dropped; idle ones cannot pile up ---------------------


def test_a_connection_that_sends_nothing_is_closed_within_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    limits(monkeypatch, IDLE_TIMEOUT=0.5, REQUEST_TIMEOUT=5)
    with listener() as address, socket.create_connection(address, timeout=5) as s:
        took = closed_by_server(s, within=4)
        assert took is not None, "the server kept a silent connection open for 4 s (idle timeout 0.5 s)"
        assert 0.3 < took < 2.5, took


def test_a_client_dripping_headers_is_cut_off_at_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # every line comes well within the idle timeout: only the deadline for the whole request stops it
    limits(monkeypatch, IDLE_TIMEOUT=1.0, REQUEST_TIMEOUT=1.5)
    with listener() as address, socket.create_connection(address, timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.0\r\n")
        closed_after = None
        for i in range(40):  # 8 s of headers, one every 0.2 s
            try:
                s.sendall(f"X-Drip-{i}: x\r\n".encode())
            except OSError:
                closed_after = time.monotonic() - started
                break
            if closed_by_server(s, within=0.2) is not None:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "a client sending a header line every 0.2 s held the connection for 8 s"
        assert closed_after < 3.5, closed_after


def test_idle_connections_beyond_the_cap_pile_up_no_threads_and_a_probe_still_gets_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cap = 8
    limits(monkeypatch, IDLE_TIMEOUT=30, REQUEST_TIMEOUT=30, MAX_CONNECTIONS=cap)
    with listener() as address:
        baseline = threading.active_count()
        idle: list[socket.socket] = []
        peak = 0
        try:
            for i in range(200):
                s = socket.create_connection(address, timeout=5)
                idle.append(s)
                if i % 2:
                    s.sendall(b"GET /healthz HTTP/1.0\r\nX-Half: ")  # half a request, never finished
                peak = max(peak, threading.active_count() - baseline)
            # settled: the listener has taken every connection from its backlog and holds at most cap of them
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (
                sum(is_open(s) for s in idle) > cap or threading.active_count() - baseline > cap
            ):
                time.sleep(0.05)
            settled = threading.active_count() - baseline
            assert settled <= cap, f"{settled} connection threads for 200 idle sockets (cap {cap})"
            assert peak <= 2 * cap + 4, peak
            # a probe arriving now is answered: the connection idle the longest made room for it
            conn = http.client.HTTPConnection(*address, timeout=5)
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"ok: scheduler running\n")
            conn.close()
            still_open = sum(is_open(s) for s in idle)
            assert still_open <= cap, f"{still_open} of the 200 idle sockets are still held (cap {cap})"
        finally:
            for s in idle:
                s.close()


def test_when_every_connection_is_answering_a_new_one_is_closed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 4
    limits(monkeypatch, IDLE_TIMEOUT=10, REQUEST_TIMEOUT=10, MAX_CONNECTIONS=cap)
    release = threading.Event()
    inside = threading.Semaphore(0)

    def slow_metrics() -> bytes:
        inside.release()
        release.wait(10)
        return b"# slow\n"

    with listener(metrics=slow_metrics) as address:
        busy = [socket.create_connection(address, timeout=5) for _ in range(cap)]
        try:
            for s in busy:
                s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            for _ in range(cap):
                assert inside.acquire(timeout=5), "the slow scrapes did not all start"
            baseline = threading.active_count()
            with socket.create_connection(address, timeout=5) as extra:
                took = closed_by_server(extra, within=3)
                assert took is not None and took < 1, f"connection {cap + 1} was held while {cap} were answering"
            assert threading.active_count() <= baseline
        finally:
            release.set()
            answers = [_read_to_end(s) for s in busy]  # each scrape's answer, to its end: the scrapes are done
            for s in busy:
                s.close()
        assert all(a.endswith(b"# slow\n") for a in answers), answers
        # once the scrapes are done the listener answers again: a handler gives its slot back just after it
        # closed its connection, so the first connection after may still find every slot taken (closed at once)
        deadline = time.monotonic() + 3
        while True:
            try:
                status, _, body = exchange(address, b"GET /healthz HTTP/1.0\r\n\r\n")
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert (status, body) == (200, b"ok: scheduler running\n")


def _read_to_end(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# ---- b) c) every answer carries the security headers, and no Python version ------------------------------------

REQUESTS = [
    (b"GET / HTTP/1.0\r\n\r\n", 200),
    (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
    (b"GET /readyz HTTP/1.0\r\n\r\n", 503),
    (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", 200),
    (b"GET /nope HTTP/1.0\r\n\r\n", 404),
    (b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 501),
    (b"HEAD /healthz HTTP/1.0\r\n\r\n", 501),
    (b"BREW /pot HTTP/1.0\r\n\r\n", 501),
    (b"GET /\r\n\r\n", 200),  # no version: an HTTP/0.9 answer would have no headers at all
    (b"GARBAGE\r\n", 400),
    (b"GET / HTTP/2.0\r\n", 505),
]


@pytest.mark.parametrize(("request_bytes", "status"), REQUESTS, ids=[r.split(b"\r\n")[0].decode() for r, _ in REQUESTS])
def test_every_answer_carries_the_security_headers_and_no_python_version(request_bytes: bytes, status: int) -> None:
    with listener() as address:
        got, headers, _ = exchange(address, request_bytes)
    assert got == status
    names = [k for k, _ in headers]
    assert len(names) == len(set(names)), f"a header sent twice: {names}"
    h = dict(headers)
    for name, value in EXPECTED.items():
        assert h.get(name) == value, (name, h)
    csp = h.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
    if got == 200 and request_bytes.split()[1] == b"/":
        assert csp == PAGE_HEADERS["Content-Security-Policy"]  # the page's inline style still loads
    else:
        assert "unsafe-inline" not in csp, csp
    assert h.get("server") == "rotator", h.get("server")
    assert "python" not in h["server"].lower() and "basehttp" not in h["server"].lower()


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/metrics", "/nope"])
def test_the_server_header_names_rotator_without_the_python_version(path: str) -> None:
    with listener() as address:
        conn = http.client.HTTPConnection(*address, timeout=5)
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        conn.close()
    server = r.getheader("Server", "")
    assert "python" not in server.lower() and "basehttp" not in server.lower(), server
    assert server == "rotator", server


# ---- d) /readyz does not echo the issuer's error ----------------------------------------------------------------

MARKER = "MARKER-9b1e internal-issuer.corp.example:8443 token=sk_live"


def test_readyz_does_not_echo_the_issuer_error_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rotator import config as config_mod
    from rotator.errors import IssuerUnavailable
    from rotator.metrics import Metrics
    from rotator.runtime.app import build
    from rotator.runtime.daemon import Daemon
    from tests.support.e2e import harness

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise IssuerUnavailable(f"connect to https://{MARKER}/keys failed: connection refused")

    port = free_port()
    with harness(tmp_path, real_time=True) as h:
        policy = {"name": "alpha", "role": "operator", "targets": [{"store": "local", "secret": "alpha/momento"}]}
        cfg = config_mod.load(h.write_config([policy], http={"listen": f"127.0.0.1:{port}"}))
        with build(cfg) as app:
            monkeypatch.setattr(app.engine.issuer, "list_keys", unreachable)
            daemon = Daemon(app, metrics=Metrics())
            with structlog.testing.capture_logs() as logs:
                daemon.start()  # the first pass runs now and finds the issuer unreachable
            try:
                assert daemon.last_report is not None and not daemon.last_report.issuer_ok
                status, _, body = exchange(("127.0.0.1", port), b"GET /readyz HTTP/1.0\r\n\r\n")
            finally:
                daemon.stop()
                daemon.wait()
    text = body.decode()
    assert status == 503, text
    assert "MARKER" not in text and "corp.example" not in text and "sk_live" not in text, text
    assert "the issuer did not answer the last pass" in text
    assert len(text) < 100, text
    assert any(MARKER in str(e.get("error", "")) for e in logs), logs  # the detail is in the log

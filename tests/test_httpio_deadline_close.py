"""httpio's total deadline holds for an answer that closes its connection (``Connection: close``, HTTP/1.0):
http.client drops ``conn.sock`` once it has read such an answer's headers, while the body still comes from that
socket, so the deadline must cut the socket the connection opened, not ``conn.sock`` (found by the webhook
reload target's hostile receiver)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rotator import httpio


@pytest.fixture(params=["close", "http10"])
def dripping(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server that answers headers at once, then drips a 100-byte body one byte per 50 ms."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                proto = "HTTP/1.0" if request.param == "http10" else "HTTP/1.1"
                conn.sendall(f"{proto} 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n".encode())
                for _ in range(100):
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break
                    time.sleep(0.05)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/"
    stop.set()
    t.join(5)
    srv.close()


def test_a_dripping_body_after_connection_close_ends_at_the_deadline(dripping: str) -> None:
    manager = httpio.pool(dripping, timeout=1.0)
    started = time.monotonic()
    with pytest.raises((httpio.DeadlineExceeded, Exception)) as caught:
        httpio.fetch(manager, "GET", dripping, timeout=1.0, max_body=1024)
    took = time.monotonic() - started
    assert took < 2.5, f"the 1 s deadline took {took:.1f}s ({type(caught.value).__name__})"

"""Start and stop the local test servers: a ThreadingHTTPServer on 127.0.0.1 (port 0: a free one) in a daemon thread."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(
    handler: type[BaseHTTPRequestHandler], name: str, *, tls: ssl.SSLContext | None = None, poll: float = 0.5
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``handler`` on 127.0.0.1 (over TLS when ``tls`` is given); returns the server and its thread."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(poll,), name=name, daemon=True)
    thread.start()
    return httpd, thread


def shut(httpd: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    """Stop what :func:`serve` started. Either may be ``None`` (never started, or stopped already)."""
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()
    if thread is not None:
        thread.join(timeout=5)

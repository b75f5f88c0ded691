"""The key API behind a private gateway: a base URL with a path prefix, and ``issuer.page_size``.

A small reverse proxy on 127.0.0.1 serves the emulator under ``/gw/momento`` (as a private API gateway
would) and records every request line, so the tests see what rotator actually sent. Momento's key API is
paginated with ``limit`` 1..100 and ``next_token`` (docs "API keys HTTP API"; /work/shared/reference/momento.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from rotator import config as config_mod
from rotator.errors import ConfigError
from rotator.issuers.emulator import Emulator
from rotator.runtime.app import build

PREFIX = "/gw/momento"


class Gateway:
    """Forwards ``PREFIX/<path>`` to the emulator's ``/<path>``; anything else is 404. Records request paths."""

    def __init__(self, upstream: str) -> None:
        self.paths: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                gateway.paths.append(self.path)
                if not self.path.startswith(PREFIX + "/"):
                    self.send_response(404)
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                r = httpx.request(
                    self.command, upstream + self.path[len(PREFIX) :], content=body, headers=headers, timeout=10
                )
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(emulator: Emulator) -> Iterator[Gateway]:
    gw = Gateway(emulator.url)
    try:
        yield gw
    finally:
        gw.close()


def _config(tmp_path: Path, url: str, key_file: Path, **issuer: object) -> config_mod.Config:
    data = {
        "issuer": {
            "type": "momento",
            "url": url,
            "management_key": {"file": str(key_file)},
            "endpoint": "cell-1-us-east-1-1.emulator.local",
            **issuer,
        },
        "stores": {"local": {"type": "file", "path": str(tmp_path / "secrets")}},
        "policies": [{"name": "a", "role": "operator", "targets": [{"store": "local", "secret": "a"}]}],
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(data))
    return config_mod.load(path)


def test_a_base_url_with_a_path_prefix_reaches_the_api_under_it(
    emulator: Emulator, gateway: Gateway, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, gateway.url + "/", tmp_path / "state" / "owner.key")
    assert cfg.issuer.base_url == gateway.url
    now = datetime.fromtimestamp(emulator.clock(), tz=UTC)
    with build(cfg, clock=lambda: now) as app:
        report = app.engine.run_pass()
    assert report.ok, report.to_json()
    assert gateway.paths, "nothing went through the gateway"
    assert all(p.startswith(PREFIX + "/") for p in gateway.paths), gateway.paths
    assert any(p.startswith(f"{PREFIX}/api-keys") for p in gateway.paths)


def test_page_size_is_the_limit_asked_for_and_every_page_is_read(
    emulator: Emulator, gateway: Gateway, tmp_path: Path
) -> None:
    for i in range(5):
        emulator.mint("viewer", f"made by hand {i}")
    cfg = _config(tmp_path, gateway.url, tmp_path / "state" / "owner.key", page_size=2)
    assert cfg.issuer.page_size == 2
    with build(cfg, preflight=False) as app:
        keys = app.issuer.list_keys()
    assert len(keys) == 6  # the five, and the emulator's bootstrap key
    listing = [p for p in gateway.paths if p.startswith(f"{PREFIX}/api-keys")]
    assert len(listing) == 3 and all("limit=2" in p for p in listing), listing


@pytest.mark.parametrize("size", [0, 101, "ten"])
def test_page_size_outside_1_to_100_is_a_config_error(size: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, "https://gw.example.com/momento", tmp_path / "k", page_size=size)
    assert [i.path for i in info.value.issues] == ["issuer.page_size"]


@pytest.mark.parametrize(
    "url", ["https://gw.example.com/momento?x=1", "https://gw.example.com/#frag", "https://gw example.com/"]
)
def test_a_base_url_with_a_query_fragment_or_space_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, url, tmp_path / "k")
    assert [i.path for i in info.value.issues] == ["issuer.url"]
    assert "path prefix" in str(info.value)


def test_the_emulator_and_validate_share_the_description_limit() -> None:
    from rotator.issuers import emulator as emulator_mod

    assert emulator_mod._MAX_DESCRIPTION == config_mod.KEY_DESCRIPTION_MAX == 1024

"""The status page (issue 14) in headless Chromium: ``rotator status --html FILE`` and the page ``rotator run``
serves at ``/`` with ``http.status_page: true``.

Chromium is Debian's (``make`` links it into .venv/bin), driven over the DevTools protocol on a pipe
(tests/support/browser.py). Each page must load with no console error or warning, no uncaught exception and no
browser log error (a blocked or failed load, a Content-Security-Policy violation), show every configured policy
with a rendered timeline, and carry no key material. Screenshots are kept in build/test-artifacts/ (or
$ROTATOR_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator.runtime.http import HealthServer
from rotator.status_page import SECURITY_HEADERS
from tests.runtime.test_daemon_http import ALPHA, BETA, Daemon
from tests.support.browser import Browser, Loaded
from tests.support.e2e import CHECKOUT, REPORTING, T0, Harness, at, free_port, harness

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ROTATOR_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")

#: a policy added to the config after the last pass: no key yet (the page shows what the next pass will do)
NEWCOMER: dict[str, Any] = dict(CHECKOUT, name="newcomer", targets=[{"store": "local", "secret": "newcomer/momento"}])

#: what the page looks like to a person, asked through DevTools
PROBE = """({
  policies: [...document.querySelectorAll('section.policy')].map(s => s.dataset.policy),
  timelines: [...document.querySelectorAll('section.policy')].map(s => {
    const svg = s.querySelector('svg'); if (!svg) return null;
    const r = svg.getBoundingClientRect();
    return {w: r.width, h: r.height, keys: svg.querySelectorAll('g.key').length};
  }),
  targets: [...document.querySelectorAll('tr[data-target]')].map(t => t.dataset.target),
  forms: document.forms.length, scripts: document.scripts.length,
  external: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  text: document.body.innerText,
})"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def keep(name: str, page: Loaded) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(page.screenshot)
    return path


def plaintexts(h: Harness) -> list[str]:
    """Every key plaintext the file store holds (each secret's versions, every format)."""
    out = []
    for f in h.secrets.rglob("*"):
        if f.is_file() and not f.name.endswith(".json"):
            text = f.read_text(errors="replace")
            out += [tok for tok in text.replace("=", " ").replace('"', " ").split() if len(tok) > 60]
    return out


def check_page(page: Loaded, policies: list[str]) -> dict[str, Any]:
    assert page.problems == [], page.problems
    info: dict[str, Any] = page.evaluate
    assert info["policies"] == policies
    assert info["forms"] == 0 and info["scripts"] == 0 and info["external"] == []
    for name, tl in zip(policies, info["timelines"], strict=True):
        if name != "newcomer":
            assert tl is not None and tl["w"] > 300 and tl["h"] > 40 and tl["keys"] >= 1, (name, tl)
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(page.screenshot) > 10_000
    return info


# ---- rotator status --html ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, Path]]:
    with harness(tmp_path_factory.mktemp("status-html")) as h:
        cfg = h.write_config([CHECKOUT, REPORTING])
        h.once_in_process(cfg, T0)
        h.once_in_process(cfg, at(40))  # both due at 39m: rotated, the old keys wait for grace
        cfg = h.write_config([CHECKOUT, REPORTING, NEWCOMER])
        out = h.root / "status.html"
        r = h.run("-c", str(cfg), "status", "--html", str(out), now=at(42))
        assert r.returncode == 0, r
        assert f"wrote the status page to {out}" in r.stderr
        yield h, out


def test_status_html_renders_every_policy_without_errors(browser: Browser, cli_page: tuple[Harness, Path]) -> None:
    h, out = cli_page
    page = browser.load(out.as_uri(), probe=PROBE)
    keep("status-page-cli.png", page)
    info = check_page(page, ["checkout", "reporting", "newcomer"])
    assert info["targets"] == [
        "local:checkout/momento",
        "local:reporting/env",
        "local:reporting/key",
        "local:newcomer/momento",
    ]
    text = info["text"]
    assert "awaiting-pickup" in text and "grace" in text and "a dry run" in text
    assert "No key at the issuer for this policy." in text and "create a new key" in text
    assert h.newest_id("checkout") in text
    for secret in plaintexts(h):
        assert secret not in out.read_text()


def test_status_html_writes_only_the_page(cli_page: tuple[Harness, Path]) -> None:
    h, _out = cli_page
    before = h.snapshot()
    r = h.run("-c", str(h.root / "rotator.yaml"), "status", "--html", str(h.root / "again.html"), now=at(43))
    assert r.returncode == 0 and (h.root / "again.html").read_text().startswith("<!doctype html>")
    assert h.snapshot() == before  # a dry run: no key made, revoked or written


# ---- rotator run: the page at / -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with harness(tmp_path_factory.mktemp("status-served"), real_time=True) as h:
        port = free_port()
        cfg = h.write_config(
            [ALPHA, BETA],
            interval="1s",
            jitter="0s",
            clock_skew="1s",
            pass_timeout="10s",
            http={"listen": f"127.0.0.1:{port}", "status_page": True},
        )
        d = Daemon(h, cfg, port)
        try:
            d.wait_listening()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = d.get("/")
                # the page shows what the last pass found (and did): after the pass that made the first keys,
                # the next one (a second later) finds them
                sections = r.text.split('<section class="policy"')[1:] if r is not None else []
                if len(sections) == 2 and all('class="key"' in s for s in sections):
                    break
                time.sleep(0.2)
            yield d
        finally:
            d.stop()
            d.close()


def test_the_daemon_serves_the_page_with_a_policy_that_forbids_loading_anything(served: Daemon) -> None:
    r = served.get("/")
    assert r is not None and r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_the_served_page_renders_every_policy_without_errors(browser: Browser, served: Daemon) -> None:
    page = browser.load(served.base + "/", probe=PROBE)
    path = keep("status-page.png", page)
    info = check_page(page, ["alpha", "beta"])
    assert "last pass" in info["text"] and "a dry run" not in info["text"]
    assert path.stat().st_size > 10_000
    for secret in plaintexts(served.h):
        assert secret not in served.get("/").text  # type: ignore[union-attr]


def test_the_page_changes_nothing(served: Daemon) -> None:
    for method in ("POST", "PUT", "DELETE"):
        r = httpx.request(method, served.base + "/", timeout=5)
        assert r.status_code == 501, (method, r.status_code)


def test_without_status_page_there_is_no_page() -> None:
    server = HealthServer(
        f"127.0.0.1:{free_port()}", health=lambda: (True, "ok"), ready=lambda: (True, "ok"), metrics=lambda: b""
    )
    server.start()
    try:
        r = httpx.get(f"http://{server.address}/", timeout=5)
        assert r.status_code == 404
    finally:
        server.stop()


def test_the_page_before_the_first_pass() -> None:
    from rotator.config import from_mapping
    from rotator.status_page import render

    cfg = from_mapping(
        {
            "issuer": {"type": "emulator"},
            "stores": {"local": {"type": "file", "path": "unused"}},
            "policies": [{"name": "p", "role": "viewer", "targets": [{"store": "local", "secret": "p"}]}],
        },
        source="t",
    )
    assert "no pass has finished yet" in render(None, cfg, T0)


# ---- the harness itself -------------------------------------------------------------------------------------


def test_the_browser_check_sees_console_errors_exceptions_and_failed_loads(browser: Browser, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!doctype html><html><body><img src="http://127.0.0.1:9/x.png">'
        '<script>console.error("boom"); notAFunction();</script></body></html>'
    )
    page = browser.load(bad.as_uri())
    joined = "\n".join(page.problems)
    assert "console.error: boom" in joined
    assert "notAFunction" in joined
    assert "Failed to load resource" in joined

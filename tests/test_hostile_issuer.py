"""A broken or hostile key API never makes rotator store a non-key, revoke a working key, hang, or leak.

``rotator`` runs as a real process against :class:`tests.servers.hostile_issuer.HostileIssuer`, a proxy on
127.0.0.1 in front of the emulator that rewrites its answers; the store is a real directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.servers.hostile_issuer import HostileIssuer, edit_json
from tests.support.e2e import CHECKOUT, T0, Harness, at, current_payload, harness, payload_key_id

SECRET = "checkout/momento"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def proxy(h: Harness) -> Iterator[HostileIssuer]:
    with HostileIssuer(h.url) as p:
        yield p


def _setup(h: Harness, proxy: HostileIssuer) -> tuple[str, str]:
    """A first (honest) pass through the proxy: the config path and the working key id every target holds."""
    cfg = str(h.write_config([CHECKOUT], url=proxy.url))
    r = h.run("once", "--config", cfg, now=T0)
    assert r.returncode == 0, r.explain()
    working = payload_key_id("json", current_payload(h.secret_dir(SECRET)))
    assert h.live_ids("checkout") == [working]
    return cfg, working


def _other_jwt(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, "a-signing-secret-the-emulator-never-used-0123", algorithm="HS256")


def _api_key(value: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        data["api_key"] = value(data)
        return data

    return edit


#: answers to ``POST /api-keys`` that are 200 with a ``key_info`` for the key the emulator created, but
#: whose ``api_key`` is not that key
FAULTY_KEYS: dict[str, Callable[[dict[str, Any]], str]] = {
    "not a key": lambda d: "not-a-key",
    "an HTML page": lambda d: "<html><body><h1>502 Bad Gateway</h1></body></html>",
    "a legacy token": lambda d: _other_jwt({"c": "cell", "cp": "cp"}),
    "a JWT that is not a v2 key": lambda d: _other_jwt({"jti": d["key_info"]["key_id"]}),
    "a v2 key of another key id": lambda d: _other_jwt({"t": "g", "jti": "00000000-0000-4000-8000-0000000000aa"}),
    "a v2 key with another expiry": lambda d: _other_jwt(
        {"t": "g", "jti": d["key_info"]["key_id"], "exp": int(d["key_info"]["expires_at_epoch_seconds"]) + 86400}
    ),
    "a v2 key whose exp is not a number": lambda d: _other_jwt(
        {"t": "g", "jti": d["key_info"]["key_id"], "exp": "soon"}
    ),
}


@pytest.mark.parametrize("case", sorted(FAULTY_KEYS))
def test_a_create_answer_that_is_not_the_key_is_revoked_and_never_stored(
    h: Harness, proxy: HostileIssuer, case: str
) -> None:
    cfg, working = _setup(h, proxy)
    before = current_payload(h.secret_dir(SECRET))
    proxy.on("POST", "/api-keys", edit_json(_api_key(FAULTY_KEYS[case])))

    r = h.run("once", "--config", cfg, now=at(40))  # due at 39m

    assert r.returncode == 1, r.explain()
    assert current_payload(h.secret_dir(SECRET)) == before  # every target still serves the working key
    created = [k for k in h.policy_keys("checkout") if k.key_id != working]
    assert len(created) == 1
    assert created[0].revoked_at is not None, "the useless, live key the faulty answer named must be revoked"
    assert working in h.live_ids("checkout")
    summary = r.summary()
    assert summary["counts"]["failed"] >= 1, summary
    assert "not a usable key" in r.stdout + r.stderr
    assert "not-a-key" not in r.stdout + r.stderr  # the answer's key text is never echoed

    # later passes against the same broken issuer never revoke the working key either, past every grace
    for minutes in (50, 58):
        r2 = h.run("once", "--config", cfg, now=at(minutes))
        assert r2.returncode == 1, r2.explain()
        assert working in h.live_ids("checkout")
        assert current_payload(h.secret_dir(SECRET)) == before


def test_a_faulty_answer_naming_the_working_key_id_does_not_revoke_it(h: Harness, proxy: HostileIssuer) -> None:
    cfg, working = _setup(h, proxy)
    before = current_payload(h.secret_dir(SECRET))

    def claim_working(data: dict[str, Any]) -> dict[str, Any]:
        data["key_info"]["key_id"] = working
        data["api_key"] = "garbage"
        return data

    proxy.on("POST", "/api-keys", edit_json(claim_working))
    r = h.run("once", "--config", cfg, now=at(40))

    assert r.returncode == 1, r.explain()
    assert proxy.count("DELETE", f"/api-keys/{working}") == 0
    assert working in h.live_ids("checkout")
    assert current_payload(h.secret_dir(SECRET)) == before
    assert "already knows" in r.stdout + r.stderr


def test_a_create_answer_that_is_the_key_is_stored(h: Harness, proxy: HostileIssuer) -> None:
    """The check refuses faulty keys only: the emulator's own answer, edited to be the same, goes through."""
    cfg, working = _setup(h, proxy)
    proxy.on("POST", "/api-keys", edit_json(lambda d: d))
    r = h.run("once", "--config", cfg, now=at(40))
    assert r.returncode == 0, r.explain()
    new = payload_key_id("json", current_payload(h.secret_dir(SECRET)))
    assert new != working
    assert new in h.live_ids("checkout")


def test_a_steady_pass_is_exactly_one_listing(h: Harness, proxy: HostileIssuer) -> None:
    cfg, _ = _setup(h, proxy)
    proxy.calls.clear()
    r = h.run("once", "--config", cfg, now=T0 + timedelta(minutes=5))
    assert r.returncode == 0, r.explain()
    assert r.summary()["counts"]["created"] == 0
    assert proxy.calls == [("GET", "/api-keys")], proxy.calls

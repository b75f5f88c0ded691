"""A broken or hostile key API never makes rotator store a non-key, revoke a working key, hang, or leak.

``rotator`` runs as a real process against :class:`tests.servers.hostile_issuer.HostileIssuer`, a proxy on
127.0.0.1 in front of the emulator that rewrites its answers; the store is a real directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.servers.hostile_issuer import (
    HostileIssuer,
    deep_nesting,
    drip,
    drip_headers,
    edit_json,
    endless_pages,
    huge_listing,
)
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


# ---- bounded reads: size, total time, pages, nesting (item 2) ------------------------------------------------

#: runs the command given as arguments and prints its wall time and peak RSS (KiB): the child's alone
MEASURE = """
import resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.monotonic() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stderr.write(p.stderr)
print(json.dumps({"rc": p.returncode, "wall": wall, "rss_kib": rss, "stdout": p.stdout}))
""".replace("import resource", "import json, resource")


def _measured(h: Harness, cfg: str, *args: str) -> dict[str, Any]:
    import subprocess
    import sys

    from tests.support.e2e import ROTATOR

    now = T0 + timedelta(minutes=5)
    h.clock.set(now)
    p = subprocess.run(
        [sys.executable, "-c", MEASURE, ROTATOR, *args, "--config", cfg, "--now", now.isoformat()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=h.work,
        check=False,
    )
    out: dict[str, Any] = json.loads(p.stdout)
    out["stderr"] = p.stderr
    return out


def _bounded_config(h: Harness, proxy: HostileIssuer, **issuer: Any) -> str:
    return str(
        h.write_config(
            [CHECKOUT],
            url=proxy.url,
            name="bounded.yaml",
            issuer={"timeout": "2s", "max_attempts": 1, **issuer},
            pass_timeout="4s",
        )
    )


def test_a_100_mib_listing_is_refused_within_100_mb(h: Harness, proxy: HostileIssuer) -> None:
    _setup(h, proxy)
    cfg = _bounded_config(h, proxy, timeout="30s")
    proxy.on("GET", "/api-keys", huge_listing(100 * 1024 * 1024))
    m = _measured(h, cfg, "plan")
    assert m["rc"] == 1, m
    assert m["rss_kib"] < 100 * 1024, f"peak RSS {m['rss_kib'] / 1024:.0f} MiB"
    assert "larger than 4194304 bytes" in m["stderr"] + m["stdout"], m


@pytest.mark.parametrize("behaviour", ["drip the body", "drip the headers"])
def test_a_dripping_issuer_is_cut_at_the_request_deadline(h: Harness, proxy: HostileIssuer, behaviour: str) -> None:
    _setup(h, proxy)
    cfg = _bounded_config(h, proxy)
    baseline = _measured(h, cfg, "plan")
    assert baseline["rc"] == 0, baseline
    # 1 byte a second: each socket read succeeds, so only a total deadline ends it
    proxy.on("GET", "/api-keys", drip(1.0) if behaviour == "drip the body" else drip_headers(1.0))
    m = _measured(h, cfg, "plan")
    assert m["rc"] == 1, m
    assert m["wall"] - baseline["wall"] < 2 + 1, f"took {m['wall']:.1f}s against {baseline['wall']:.1f}s"
    assert "timeout" in m["stderr"] + m["stdout"], m


def test_a_listing_that_never_ends_stops_within_pass_timeout(h: Harness, proxy: HostileIssuer) -> None:
    _setup(h, proxy)
    cfg = _bounded_config(h, proxy)
    baseline = _measured(h, cfg, "plan")
    proxy.on("GET", "/api-keys", endless_pages())
    m = _measured(h, cfg, "plan")
    assert m["rc"] == 1, m
    assert m["wall"] - baseline["wall"] < 4 + 1, f"took {m['wall']:.1f}s"
    assert "longer than 4s (pass_timeout)" in m["stderr"] + m["stdout"], m


def test_deeply_nested_json_is_a_malformed_answer_not_a_crash(h: Harness, proxy: HostileIssuer) -> None:
    _setup(h, proxy)
    cfg = _bounded_config(h, proxy)
    proxy.on("GET", "/api-keys", deep_nesting(100_000))
    m = _measured(h, cfg, "plan")
    assert m["rc"] == 1, m  # not 70 (RecursionError)
    assert "unexpected response from the key API" in m["stderr"] + m["stdout"], m


def test_a_key_listed_twice_is_revoked_once(h: Harness, proxy: HostileIssuer) -> None:
    cfg, working = _setup(h, proxy)
    r = h.run("once", "--config", cfg, now=at(40))  # a new key; the old one awaits grace
    assert r.returncode == 0, r.explain()

    def twice(data: dict[str, Any]) -> dict[str, Any]:
        data["key_info"] = data["key_info"] + data["key_info"]
        return data

    proxy.on("GET", "/api-keys", edit_json(twice))
    proxy.calls.clear()
    r = h.run("once", "--config", cfg, now=at(50))  # past grace (5m): the old key is retired and revoked
    assert r.returncode == 0, r.explain()
    assert proxy.count("DELETE", f"/api-keys/{working}") == 1, proxy.calls
    assert r.summary()["counts"]["revoked"] == 1

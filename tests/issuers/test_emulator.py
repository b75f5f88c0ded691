"""The local Momento key API emulator, spoken to over real HTTP (raw httpx, and the real client)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import momento
import pytest

from rotator.errors import ConfigError
from rotator.issuers.emulator import (
    BOOTSTRAP_DESCRIPTION,
    OPERATOR_ROLE_ID,
    OWNER_ROLE_ID,
    VIEWER_ROLE_ID,
    Emulator,
    main,
)
from rotator.issuers.momento import MomentoIssuer
from rotator.model import SecretText
from tests.issuers.conftest import FakeClock

ENDPOINT = "cell-4-us-west-2-1.prod.a.momentohq.com"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    """A raw HTTP client authenticated with the bootstrap owner key."""
    with httpx.Client(base_url=emulator.url, headers={"Authorization": emulator.bootstrap_key.reveal()}) as c:
        yield c


def create(http: httpx.Client, role_id: str = VIEWER_ROLE_ID, expiry: object = "never") -> httpx.Response:
    return http.post("/api-keys", json={"role_id": role_id, "description": "d", "expiry": expiry})


# ---- binding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
def test_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Emulator(tmp_path / "db", host=host)
    assert not (tmp_path / "db").exists()


def test_serves_on_loopback_with_a_free_port(emulator: Emulator) -> None:
    assert emulator.url.startswith("http://127.0.0.1:")
    assert not emulator.url.endswith(":0")


# ---- the bootstrap key and persistence ---------------------------------------------------------------


def test_bootstrap_key_file_is_private_and_authenticates(emulator: Emulator, tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "owner.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    key = SecretText(key_file.read_text().strip())
    assert key == emulator.bootstrap_key
    with MomentoIssuer(emulator.url, key) as c:
        (info,) = c.list_keys()
    assert info.role_id == OWNER_ROLE_ID
    assert info.description == BOOTSTRAP_DESCRIPTION
    assert info.expires_at is None


def test_database_file_is_private(emulator: Emulator) -> None:
    assert stat.S_IMODE(emulator.db_path.stat().st_mode) == 0o600


def test_restart_with_the_same_database_keeps_keys_and_the_bootstrap_key(tmp_path: Path) -> None:
    db, key_file = tmp_path / "e.db", tmp_path / "owner.key"
    with Emulator(db, bootstrap_key_file=key_file) as first:
        bootstrap = first.bootstrap_key
        with MomentoIssuer(first.url, bootstrap) as c:
            created = c.create_key(OPERATOR_ROLE_ID, "survives", None)
    with Emulator(db, bootstrap_key_file=key_file) as second:
        assert second.bootstrap_key == bootstrap
        with MomentoIssuer(second.url, bootstrap) as c:
            ids = {k.key_id for k in c.list_keys()}
        with MomentoIssuer(second.url, created.api_key) as c:
            assert len(c.list_roles()) == 3  # a key minted before the restart still authenticates
    assert created.info.key_id in ids
    assert len(ids) == 2


def test_restart_without_the_key_file_mints_a_new_bootstrap_key(tmp_path: Path) -> None:
    db, key_file = tmp_path / "e.db", tmp_path / "owner.key"
    with Emulator(db, bootstrap_key_file=key_file) as first:
        old = first.bootstrap_key
    key_file.unlink()
    with Emulator(db, bootstrap_key_file=key_file) as second:
        assert second.bootstrap_key != old
        assert SecretText(key_file.read_text().strip()) == second.bootstrap_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        with MomentoIssuer(second.url, second.bootstrap_key) as c:
            owners = [k for k in c.list_keys() if k.description == BOOTSTRAP_DESCRIPTION]
    assert len(owners) == 2


def test_database_never_holds_a_plaintext_key(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with Emulator(db, bootstrap_key_file=tmp_path / "owner.key") as emu:
        with MomentoIssuer(emu.url, emu.bootstrap_key) as c:
            keys = [c.create_key(VIEWER_ROLE_ID, f"k{i}", None).api_key for i in range(5)]
            c.revoke_key(c.list_keys()[-1].key_id)
        keys += [emu.mint("operator").api_key, emu.bootstrap_key]
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("e.db"))
    assert data
    for key in keys:
        plaintext = key.reveal()
        signature = plaintext.rsplit(".", 1)[1]
        assert plaintext.encode() not in data
        assert signature.encode() not in data


# ---- keys --------------------------------------------------------------------------------------------


def test_minted_key_is_a_v2_jwt_accepted_by_the_momento_sdk(emulator: Emulator, clock: FakeClock) -> None:
    issued = emulator.mint("operator", "sdk", datetime.fromtimestamp(clock() + 600, UTC))
    claims = jwt.decode(issued.api_key.reveal(), options={"verify_signature": False})
    nonce = claims.pop("n")
    assert isinstance(nonce, str) and len(nonce) >= 16  # keys cannot be rebuilt from the database
    assert claims == {"t": "g", "jti": issued.info.key_id, "iat": int(clock()), "exp": int(clock()) + 600}
    provider = momento.CredentialProvider.from_api_key_v2(issued.api_key.reveal(), ENDPOINT)
    assert provider.control_endpoint == f"control.{ENDPOINT}"


def test_create_answers_the_plaintext_and_the_key_object(http: httpx.Client, clock: FakeClock) -> None:
    r = create(http, OPERATOR_ROLE_ID, int(clock()) + 60)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"api_key", "key_info"}
    assert set(body["key_info"]) == {
        "key_id",
        "account_id",
        "description",
        "role_id",
        "issued_at_epoch_seconds",
        "expires_at_epoch_seconds",
    }
    assert body["key_info"]["expires_at_epoch_seconds"] == int(clock()) + 60


def test_never_expiring_key_object_has_no_expiry_field(http: httpx.Client) -> None:
    assert "expires_at_epoch_seconds" not in create(http).json()["key_info"]


@pytest.mark.parametrize("expiry", ["soon", 1.5, True, None, "past"])
def test_create_refuses_a_bad_expiry(http: httpx.Client, clock: FakeClock, expiry: object) -> None:
    if expiry == "past":
        expiry = int(clock()) - 1
    r = create(http, VIEWER_ROLE_ID, expiry)
    assert r.status_code == 400
    assert set(r.json()) == {"code", "message"}


def test_create_refuses_a_body_that_is_not_json(http: httpx.Client) -> None:
    r = http.post("/api-keys", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_create_with_an_unknown_role_is_404(http: httpx.Client) -> None:
    assert create(http, "no-such-role").status_code == 404


def test_delete_unknown_or_revoked_key_is_404(http: httpx.Client) -> None:
    key_id = create(http).json()["key_info"]["key_id"]
    assert http.delete(f"/api-keys/{key_id}").json() == {}
    assert http.delete(f"/api-keys/{key_id}").status_code == 404
    assert http.delete("/api-keys/unknown").status_code == 404


# ---- listing -----------------------------------------------------------------------------------------


def test_list_orders_by_issue_time_then_key_id(emulator: Emulator, http: httpx.Client, clock: FakeClock) -> None:
    clock.advance(10)  # after the bootstrap key
    later = emulator.mint("viewer", "later")
    clock.advance(-100)  # before it
    earlier = [emulator.mint("viewer", "earlier").info.key_id for _ in range(3)]
    ids = [k["key_id"] for k in http.get("/api-keys").json()["key_info"]]
    assert ids[:3] == sorted(earlier)
    assert ids[-1] == later.info.key_id


def test_list_paginates_with_next_token(emulator: Emulator, http: httpx.Client) -> None:
    for _ in range(6):
        emulator.mint("viewer")
    seen: list[str] = []
    params: dict[str, str] = {"limit": "3"}
    pages = 0
    while True:
        body = http.get("/api-keys", params=params).json()
        pages += 1
        assert len(body["key_info"]) <= 3
        seen += [k["key_id"] for k in body["key_info"]]
        if "next_token" not in body:
            break
        params["next_token"] = body["next_token"]
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7


def test_list_hides_revoked_keys_but_shows_expired_ones(
    emulator: Emulator, http: httpx.Client, clock: FakeClock
) -> None:
    expired = emulator.mint("viewer", "expired", clock() + 1)
    revoked = emulator.mint("viewer", "revoked")
    http.delete(f"/api-keys/{revoked.info.key_id}")
    clock.advance(5)
    ids = {k["key_id"] for k in http.get("/api-keys").json()["key_info"]}
    assert expired.info.key_id in ids
    assert revoked.info.key_id not in ids


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", ""])
def test_list_refuses_a_bad_limit(http: httpx.Client, limit: str) -> None:
    assert http.get("/api-keys", params={"limit": limit}).status_code == 400


def test_list_refuses_a_bad_next_token(http: httpx.Client) -> None:
    assert http.get("/api-keys", params={"next_token": "%%%"}).status_code == 400


def test_roles_filter_by_type_and_paginate(http: httpx.Client) -> None:
    first = http.get("/roles", params={"type": "system", "limit": "2"}).json()
    assert [r["role_name"] for r in first["roles"]] == ["owner", "operator"]
    rest = http.get("/roles", params={"type": "system", "limit": "2", "next_token": first["next_token"]}).json()
    assert [r["role_name"] for r in rest["roles"]] == ["viewer"]
    assert "next_token" not in rest
    assert http.get("/roles", params={"type": "custom"}).json() == {"roles": []}
    assert http.get("/roles", params={"type": "other"}).status_code == 400


# ---- auth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api-keys"), ("POST", "/api-keys"), ("DELETE", "/api-keys/x"), ("GET", "/roles")]
)
def test_missing_key_is_401_with_a_json_error(emulator: Emulator, method: str, path: str) -> None:
    r = httpx.request(method, emulator.url + path)
    assert r.status_code == 401
    assert set(r.json()) == {"code", "message"}


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"Bearer {jwt.encode({'t': 'g', 'jti': 'x'}, 'k' * 32, algorithm='HS256')}",
        jwt.encode({"t": "g", "jti": "x"}, "k" * 32, algorithm="HS256"),
    ],
    ids=["malformed", "bearer", "foreign-signature"],
)
def test_bad_key_is_401(emulator: Emulator, header: str) -> None:
    assert httpx.get(emulator.url + "/roles", headers={"Authorization": header}).status_code == 401


def test_forged_key_with_the_right_id_but_other_claims_is_401(emulator: Emulator, http: httpx.Client) -> None:
    # a token for a live key id that is not byte-for-byte the key that was issued (hash mismatch)
    key_id = create(http).json()["key_info"]["key_id"]
    forged = jwt.encode({"t": "g", "jti": key_id, "iat": 1}, "k" * 32, algorithm="HS256")
    assert httpx.get(emulator.url + "/roles", headers={"Authorization": forged}).status_code == 401


def test_expired_key_is_401_by_the_emulator_clock(emulator: Emulator, clock: FakeClock) -> None:
    key = emulator.mint("owner", "expiring", clock() + 10).api_key.reveal()
    assert httpx.get(emulator.url + "/api-keys", headers={"Authorization": key}).status_code == 200
    clock.advance(10)
    assert httpx.get(emulator.url + "/api-keys", headers={"Authorization": key}).status_code == 401


def test_revoked_key_is_401(emulator: Emulator, http: httpx.Client) -> None:
    issued = emulator.mint("owner")
    http.delete(f"/api-keys/{issued.info.key_id}")
    r = httpx.get(emulator.url + "/roles", headers={"Authorization": issued.api_key.reveal()})
    assert r.status_code == 401


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_non_owner_key_is_403_on_api_keys_but_may_list_roles(emulator: Emulator, role: str) -> None:
    headers = {"Authorization": emulator.mint(role).api_key.reveal()}
    with httpx.Client(base_url=emulator.url, headers=headers) as c:
        assert c.get("/api-keys").status_code == 403
        assert create(c).status_code == 403
        assert c.delete("/api-keys/x").status_code == 403
        assert c.get("/roles").status_code == 200


def test_unknown_route_is_404(http: httpx.Client) -> None:
    r = http.get("/caches")
    assert r.status_code == 404
    assert set(r.json()) == {"code", "message"}


# ---- failure injection and latency -------------------------------------------------------------------


def test_injected_throttling_carries_retry_after(emulator: Emulator, http: httpx.Client) -> None:
    emulator.failure_statuses = (429,)
    emulator.failure_rate = 1.0
    r = http.get("/roles")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    emulator.failure_rate = 0.0
    assert http.get("/roles").status_code == 200


def test_injected_failure_comes_before_anything_else(emulator: Emulator) -> None:
    emulator.failure_statuses = (500,)
    emulator.failure_rate = 1.0
    assert httpx.get(emulator.url + "/api-keys").status_code == 500  # not 401: nothing was checked


def test_failure_rate_is_about_right_and_seeded(tmp_path: Path) -> None:
    def statuses(seed: int) -> list[int]:
        with (
            Emulator(tmp_path / f"{seed}.db", failure_rate=0.3, seed=seed) as emu,
            httpx.Client(base_url=emu.url, headers={"Authorization": emu.bootstrap_key.reveal()}) as c,
        ):
            return [c.get("/roles").status_code for _ in range(100)]

    first = statuses(5)
    assert 15 <= sum(s != 200 for s in first) <= 45
    assert set(first) == {200, 429, 500}
    assert statuses(5) == first


def test_latency_delays_every_answer(emulator: Emulator, http: httpx.Client) -> None:
    emulator.latency = 0.2
    started = time.monotonic()
    http.get("/roles")
    assert time.monotonic() - started >= 0.2


def test_out_of_range_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="failure_rate"):
        Emulator(tmp_path / "db", failure_rate=1.5)
    with pytest.raises(ConfigError, match="latency"):
        Emulator(tmp_path / "db", latency=-1)


def test_repr_shows_no_key(emulator: Emulator) -> None:
    assert emulator.bootstrap_key.reveal() not in repr(emulator)


# ---- the command -------------------------------------------------------------------------------------


def test_command_prints_the_url_and_key_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "owner.key"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from rotator.issuers.emulator import main; sys.exit(main(sys.argv[1:]))",
            "--port",
            "0",
            "--db",
            str(tmp_path / "e.db"),
            "--bootstrap-key-file",
            str(key_file),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        key = key_file.read_text().strip()
        assert str(key_file) in line
        assert key not in line
        r = httpx.get(url + "/roles", headers={"Authorization": key})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert key not in proc.stdout.read() + (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_refuses_a_public_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--db", str(tmp_path / "e.db")]) == 2
    assert "loopback" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "e.db")


@pytest.mark.parametrize("kind", ["under-a-file", "not-a-database"])
def test_main_exits_2_for_a_db_path_it_cannot_use(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_text("this is not an SQLite database, it only has the name\n" * 20)
    db = tmp_path / "f" / "e.db" if kind == "under-a-file" else tmp_path / "f"
    assert main(["--port", "0", "--db", str(db), "--bootstrap-key-file", str(tmp_path / "k")]) == 2
    assert "rotator emulator: cannot open --db" in capsys.readouterr().err

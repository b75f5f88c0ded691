"""Momento key formats: which kind a key is, the endpoint's shape, Momento's wording for misuse, and the
payloads rotator stores, which the real ``momento`` SDK must accept."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import momento
import pytest

from rotator import keys
from rotator.errors import KeyFormatError
from rotator.issuers.emulator import Emulator
from rotator.model import SecretText

SIGNING = "a-test-signing-secret-of-32-bytes!!"
PUBLIC_CELLS = [
    "cell-4-us-west-2-1.prod.a.momentohq.com",
    "cell-us-east-1-1.prod.a.momentohq.com",
    "cell-1-eu-west-1-1.prod.a.momentohq.com",
    "cell-ap-northeast-1-1.prod.a.momentohq.com",
]


def v2_key(key_id: str = "3f1c6a2e-1111-4222-8333-444455556666", **extra: object) -> str:
    return jwt.encode({"t": "g", "jti": key_id, **extra}, SIGNING, algorithm="HS256")


def legacy_token() -> str:
    return jwt.encode(
        {"sub": "someone@example.com", "c": "cache.cell-4-us-west-2-1.prod.a.momentohq.com",
         "cp": "control.cell-4-us-west-2-1.prod.a.momentohq.com"},
        SIGNING,
        algorithm="HS256",
    )


def v1_key(endpoint: str = PUBLIC_CELLS[0]) -> str:
    body = json.dumps({"endpoint": endpoint, "api_key": legacy_token()})
    return base64.b64encode(body.encode()).decode()


# ---- key_kind -------------------------------------------------------------------------------------------


def test_v2_key() -> None:
    assert keys.key_kind(v2_key()) == "v2"


def test_v2_key_inside_secret_text() -> None:
    assert keys.key_kind(SecretText(v2_key())) == "v2"


def test_v1_key() -> None:
    assert keys.key_kind(v1_key()) == "v1"


def test_v1_key_endpoint() -> None:
    assert keys.v1_endpoint(SecretText(v1_key("cell-1-eu-west-1-1.prod.a.momentohq.com"))) == (
        "cell-1-eu-west-1-1.prod.a.momentohq.com"
    )


def test_legacy_token() -> None:
    assert keys.key_kind(legacy_token()) == "legacy"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "a.b.c",
        "not.a.jwt",
        jwt.encode({"t": "x", "jti": "k"}, SIGNING, algorithm="HS256"),  # a JWT of another type
        jwt.encode({"sub": "k"}, SIGNING, algorithm="HS256"),  # no t, no c/cp
        base64.b64encode(b'{"endpoint": "cell-1-us-east-1-1.x"}').decode(),  # base64 JSON without api_key
        base64.b64encode(b"just text").decode(),
    ],
)
def test_garbage_is_unknown(text: str) -> None:
    assert keys.key_kind(text) == "unknown"


def test_key_id_of_a_v2_key_is_its_jti() -> None:
    assert keys.key_id_of(SecretText(v2_key("my-key-id"))) == "my-key-id"


# ---- check_endpoint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", PUBLIC_CELLS)
def test_public_cells_are_accepted(host: str) -> None:
    assert keys.check_endpoint(host) == host


def test_endpoint_is_normalised_to_lowercase() -> None:
    assert keys.check_endpoint(" Cell-4-US-West-2-1.prod.a.momentohq.com ") == PUBLIC_CELLS[0]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://cell-4-us-west-2-1.prod.a.momentohq.com",
        "http://cell-4-us-west-2-1.prod.a.momentohq.com",
        "cell-4-us-west-2-1.prod.a.momentohq.com:443",
        "cell-4-us-west-2-1.prod.a.momentohq.com/",
        "cache.cell-4-us-west-2-1.prod.a.momentohq.com/path",
    ],
)
def test_scheme_port_or_path_is_rejected(endpoint: str) -> None:
    with pytest.raises(KeyFormatError, match="without scheme, port or path"):
        keys.check_endpoint(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    ["", "not a host", "cell_4_us_west_2_1.prod", "-cell-4-us-west-2-1.prod.a.momentohq.com", "a..b", "x" * 300],
)
def test_junk_is_rejected(endpoint: str) -> None:
    with pytest.raises(KeyFormatError):
        keys.check_endpoint(endpoint)


@pytest.mark.parametrize(
    "endpoint", ["example.com", "cell-4-us-west-2-1", "cache.mycorp.internal", "mga.registry.prod.a.momentohq.com"]
)
def test_non_cell_hosts_are_rejected_with_the_fix(endpoint: str) -> None:
    with pytest.raises(KeyFormatError, match="private_endpoints"):
        keys.check_endpoint(endpoint)


def test_private_cell_pattern_is_allowed() -> None:
    pattern = r"cache\.[a-z]+\.mycorp\.internal"
    assert keys.check_endpoint("cache.eu.mycorp.internal", private=[pattern]) == "cache.eu.mycorp.internal"


def test_private_cell_pattern_must_match_in_full() -> None:
    with pytest.raises(KeyFormatError):
        keys.check_endpoint("cache.eu.mycorp.internal.evil.com", private=[r"cache\.[a-z]+\.mycorp\.internal"])


# ---- require_endpoint: Momento's wording ----------------------------------------------------------------


def test_v2_key_without_endpoint_is_missing_required_property() -> None:
    key = v2_key()
    with pytest.raises(KeyFormatError) as info:
        keys.require_endpoint(SecretText(key), None)
    assert str(info.value) == "Missing required property: endpoint"


def test_v2_key_where_v1_is_expected_uses_the_received_a_v2_key_text() -> None:
    key = v2_key()
    with pytest.raises(KeyFormatError) as info:
        keys.require_endpoint(SecretText(key), PUBLIC_CELLS[0], expect="v1")
    msg = str(info.value)
    assert msg.startswith("Received a v2 API key. Are you using the correct key? Or did you mean to use ")
    assert msg.endswith(" instead?")
    assert "key_version: v2" in msg  # rotator's option, where Momento says fromApiKeyV2()
    assert key not in msg


def test_v2_key_with_endpoint() -> None:
    assert keys.require_endpoint(SecretText(v2_key()), PUBLIC_CELLS[1]) == PUBLIC_CELLS[1]


def test_v1_key_brings_its_own_endpoint() -> None:
    assert keys.require_endpoint(SecretText(v1_key(PUBLIC_CELLS[2])), None) == PUBLIC_CELLS[2]


def test_v1_key_where_v2_is_expected_names_the_option() -> None:
    key = v1_key()
    with pytest.raises(KeyFormatError, match="key_version: v1") as info:
        keys.require_endpoint(SecretText(key), PUBLIC_CELLS[0], expect="v2")
    assert key not in str(info.value)


def test_garbage_key_is_refused_without_quoting_it() -> None:
    key = "definitely-not-a-key-0123456789"
    with pytest.raises(KeyFormatError) as info:
        keys.require_endpoint(SecretText(key), PUBLIC_CELLS[0])
    assert key not in str(info.value)


# ---- render / parse -------------------------------------------------------------------------------------

EXPIRES = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_render_json() -> None:
    key = v2_key("kid")
    p = keys.render("json", SecretText(key), endpoint=PUBLIC_CELLS[0], key_id="kid", expires_at=EXPIRES)
    assert json.loads(p.value.reveal()) == {
        "apiKey": key,
        "endpoint": PUBLIC_CELLS[0],
        "keyId": "kid",
        "expiresAt": "2031-03-01T12:00:00Z",
    }
    assert p.content_type == "application/json"


def test_render_env() -> None:
    key = v2_key("kid")
    p = keys.render("env", SecretText(key), endpoint=PUBLIC_CELLS[0], key_id="kid", expires_at=None)
    assert p.value.reveal().splitlines() == [
        f"MOMENTO_API_KEY={key}",
        f"MOMENTO_ENDPOINT={PUBLIC_CELLS[0]}",
        "MOMENTO_KEY_ID=kid",
        "MOMENTO_KEY_EXPIRES_AT=never",
    ]


def test_render_key_is_the_raw_key() -> None:
    key = v2_key("kid")
    p = keys.render("key", SecretText(key), endpoint=PUBLIC_CELLS[0], key_id="kid", expires_at=EXPIRES)
    assert p.value.reveal() == key


def test_render_is_deterministic() -> None:
    key = SecretText(v2_key("kid"))
    for fmt in ("json", "env", "key"):
        a = keys.render(fmt, key, endpoint=PUBLIC_CELLS[0], key_id="kid", expires_at=EXPIRES)
        b = keys.render(fmt, key, endpoint=PUBLIC_CELLS[0], key_id="kid", expires_at=EXPIRES)
        assert a == b


def test_render_unknown_format() -> None:
    with pytest.raises(KeyFormatError, match="json, env or key"):
        keys.render("xml", SecretText(v2_key()), endpoint=PUBLIC_CELLS[0], key_id="k", expires_at=None)


@pytest.mark.parametrize("fmt", ["json", "env", "key"])
@pytest.mark.parametrize("expires_at", [EXPIRES, None])
def test_render_parse_round_trip(fmt: str, expires_at: datetime | None) -> None:
    key = SecretText(v2_key("kid"))
    p = keys.render(fmt, key, endpoint=PUBLIC_CELLS[0], key_id="kid", expires_at=expires_at)
    assert keys.parse_api_key(fmt, p.value) == key


@pytest.mark.parametrize(
    ("fmt", "payload"),
    [("json", "not json {"), ("json", '{"key": "x"}'), ("json", "[1]"), ("env", "MOMENTO_ENDPOINT=x\n")],
)
def test_parse_bad_payload_does_not_quote_it(fmt: str, payload: str) -> None:
    secret = "sekrit-payload-marker"
    with pytest.raises(KeyFormatError) as info:
        keys.parse_api_key(fmt, SecretText(payload + secret))
    assert secret not in str(info.value)


# ---- THE SDK TEST: every payload rotator renders is accepted by the real momento SDK ---------------------


@pytest.fixture(scope="module")
def minted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, str]]]:
    """(key id, plaintext) of keys the emulator mints (never expiring and expiring), plus a PyJWT-made key."""
    emu = Emulator(Path(tmp_path_factory.mktemp("emu")) / "emulator.db")
    try:
        out = []
        for expires in (None, EXPIRES):
            issued = emu.mint("operator", "sdk test [rotator:sdk]", expires)
            out.append((issued.info.key_id, issued.api_key.reveal()))
        out.append(("pyjwt-key", v2_key("pyjwt-key")))
        yield out
    finally:
        emu.stop()


SDK_ENDPOINTS = [PUBLIC_CELLS[0], PUBLIC_CELLS[3], "cell-1-us-east-1-1.emulator.local"]


@pytest.mark.parametrize("endpoint", SDK_ENDPOINTS)
@pytest.mark.parametrize("expires_at", [EXPIRES, None])
def test_sdk_accepts_json_payloads(minted: list[tuple[str, str]], endpoint: str, expires_at: datetime | None) -> None:
    for key_id, api_key in minted:
        text = keys.render("json", SecretText(api_key), endpoint=endpoint, key_id=key_id, expires_at=expires_at)
        data = json.loads(text.value.reveal())
        provider = momento.CredentialProvider.from_api_key_v2(data["apiKey"], data["endpoint"])
        assert provider.auth_token == api_key
        assert provider.cache_endpoint == f"cache.{endpoint}"
        assert provider.control_endpoint == f"control.{endpoint}"


@pytest.mark.parametrize("endpoint", SDK_ENDPOINTS)
def test_sdk_accepts_key_payloads(minted: list[tuple[str, str]], endpoint: str) -> None:
    for key_id, api_key in minted:
        text = keys.render("key", SecretText(api_key), endpoint=endpoint, key_id=key_id, expires_at=EXPIRES)
        # format `key`: the raw key in one secret, the endpoint in another (written as the bare host)
        provider = momento.CredentialProvider.from_api_key_v2(text.value.reveal(), endpoint)
        assert provider.auth_token == api_key
        assert provider.cache_endpoint == f"cache.{endpoint}"


@pytest.mark.parametrize("endpoint", SDK_ENDPOINTS)
@pytest.mark.parametrize("expires_at", [EXPIRES, None])
def test_sdk_accepts_env_payloads(
    minted: list[tuple[str, str]], endpoint: str, expires_at: datetime | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key_id, api_key in minted:
        text = keys.render("env", SecretText(api_key), endpoint=endpoint, key_id=key_id, expires_at=expires_at)
        # as a consumer would: every NAME=VALUE line into the environment (e.g. docker --env-file)
        for line in text.value.reveal().splitlines():
            name, sep, value = line.partition("=")
            assert sep, line
            monkeypatch.setenv(name, value)
        provider = momento.CredentialProvider.from_environment_variables_v2()
        assert provider.auth_token == api_key
        assert provider.cache_endpoint == f"cache.{endpoint}"


def test_the_sdk_refuses_what_rotator_calls_not_v2() -> None:
    # the SDK and rotator agree on what a v2 key is: a legacy token and a v1 key are refused by both
    for key in (legacy_token(), v1_key()):
        assert keys.key_kind(key) != "v2"
        with pytest.raises(momento.errors.InvalidArgumentException):
            momento.CredentialProvider.from_api_key_v2(key, PUBLIC_CELLS[0])

"""MomentoIssuer against the real emulator over HTTP on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import random
import socket
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import jwt
import momento
import pytest

from rotator.errors import (
    ConfigError,
    IssuerAuthError,
    IssuerBadRequest,
    IssuerError,
    IssuerNotFound,
    IssuerPermissionError,
    IssuerUnavailable,
)
from rotator.issuers.base import KeyIssuer
from rotator.issuers.emulator import OPERATOR_ROLE_ID, OWNER_ROLE_ID, VIEWER_ROLE_ID, Emulator
from rotator.issuers.momento import MomentoIssuer, _parse_retry_after
from rotator.model import SecretText
from tests.issuers.conftest import FakeClock
from tests.support.crash import SimulatedCrash, count_calls, crash_after

ENDPOINT = "cell-4-us-west-2-1.prod.a.momentohq.com"


def client(emulator: Emulator, key: SecretText | None, sleeps: list[float], **kw: object) -> MomentoIssuer:
    return MomentoIssuer(emulator.url, key, sleep=sleeps.append, rng=random.Random(3), **kw)  # type: ignore[arg-type]


def all_text(exc: BaseException) -> str:
    """Everything an exception could show: str, repr and the formatted chain."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


# ---- round trip --------------------------------------------------------------------------------------


def test_is_a_key_issuer(issuer: MomentoIssuer) -> None:
    assert isinstance(issuer, KeyIssuer)


def test_create_list_revoke_round_trip(issuer: MomentoIssuer) -> None:
    created = issuer.create_key(OPERATOR_ROLE_ID, "checkout [rotator:checkout]", None)
    listed = {k.key_id: k for k in issuer.list_keys()}
    assert listed[created.info.key_id] == created.info
    assert listed[created.info.key_id].policy == "checkout"
    issuer.revoke_key(created.info.key_id)
    assert created.info.key_id not in {k.key_id for k in issuer.list_keys()}


def test_create_key_with_expiry_reports_it_in_utc(issuer: MomentoIssuer, clock: FakeClock) -> None:
    expires = datetime.fromtimestamp(clock() + 3600, UTC)
    created = issuer.create_key(VIEWER_ROLE_ID, "short-lived", expires)
    assert created.info.expires_at == expires
    assert created.info.expires_at.tzinfo is not None
    assert created.info.issued_at == datetime.fromtimestamp(clock(), UTC)
    assert created.info.role_id == VIEWER_ROLE_ID


def test_create_key_without_expiry_has_no_expires_at(issuer: MomentoIssuer) -> None:
    created = issuer.create_key(VIEWER_ROLE_ID, "forever", None)
    assert created.info.expires_at is None
    assert [k.expires_at for k in issuer.list_keys() if k.key_id == created.info.key_id] == [None]


def test_created_key_is_a_v2_jwt_the_momento_sdk_accepts(issuer: MomentoIssuer) -> None:
    created = issuer.create_key(OPERATOR_ROLE_ID, "sdk", None)
    claims = jwt.decode(created.api_key.reveal(), options={"verify_signature": False})
    assert claims["t"] == "g"
    assert claims["jti"] == created.info.key_id
    provider = momento.CredentialProvider.from_api_key_v2(created.api_key.reveal(), ENDPOINT)
    assert provider.cache_endpoint == f"cache.{ENDPOINT}"


def test_created_key_authenticates_at_the_issuer(issuer: MomentoIssuer, emulator: Emulator) -> None:
    created = issuer.create_key(OWNER_ROLE_ID, "second owner", None)
    with client(emulator, created.api_key, []) as other:
        assert created.info.key_id in {k.key_id for k in other.list_keys()}


def test_list_keys_includes_expired_keys(issuer: MomentoIssuer, emulator: Emulator, clock: FakeClock) -> None:
    minted = emulator.mint("viewer", "lapses", datetime.fromtimestamp(clock() + 60, UTC))
    clock.advance(120)
    assert minted.info.key_id in {k.key_id for k in issuer.list_keys()}


def test_list_keys_follows_next_token_over_every_page(emulator: Emulator, sleeps: list[float]) -> None:
    minted = {emulator.mint("viewer", f"k{i}").info.key_id for i in range(120)}
    with (
        client(emulator, emulator.bootstrap_key, sleeps, page_size=7) as small_pages,
        count_calls("momento") as calls,
    ):
        keys = small_pages.list_keys()
    ids = [k.key_id for k in keys]
    assert len(ids) == len(set(ids)) == 121  # the bootstrap key too
    assert minted <= set(ids)
    assert calls == [("momento", "list_keys", "200")] * 18  # ceil(121 / 7)


def test_list_keys_default_page_size_is_100(issuer: MomentoIssuer, emulator: Emulator) -> None:
    for i in range(200):
        emulator.mint("viewer", f"k{i}")
    with count_calls("momento") as calls:
        assert len(issuer.list_keys()) == 201
    assert len(calls) == 3


def test_list_roles_follows_pagination(emulator: Emulator, sleeps: list[float]) -> None:
    with (
        client(emulator, emulator.bootstrap_key, sleeps, page_size=1) as one_per_page,
        count_calls("momento") as calls,
    ):
        roles = one_per_page.list_roles()
    assert [(r.role_name, r.role_type) for r in roles] == [
        ("owner", "system"),
        ("operator", "system"),
        ("viewer", "system"),
    ]
    assert [r.role_id for r in roles] == [OWNER_ROLE_ID, OPERATOR_ROLE_ID, VIEWER_ROLE_ID]
    assert calls == [("momento", "list_roles", "200")] * 3


def test_list_roles_by_type(issuer: MomentoIssuer) -> None:
    assert issuer.list_roles("custom") == []
    assert len(issuer.list_roles("system")) == 3


def test_every_http_attempt_is_recorded_once(issuer: MomentoIssuer) -> None:
    with count_calls("momento") as calls:
        created = issuer.create_key(VIEWER_ROLE_ID, "counted", None)
        issuer.list_keys()
        issuer.revoke_key(created.info.key_id)
        issuer.list_roles()
    assert calls == [
        ("momento", "create_key", "200"),
        ("momento", "list_keys", "200"),
        ("momento", "revoke_key", "200"),
        ("momento", "list_roles", "200"),
    ]


def test_a_crash_inside_record_call_is_not_swallowed(issuer: MomentoIssuer) -> None:
    with pytest.raises(SimulatedCrash), crash_after(1, service="momento"):
        issuer.create_key(VIEWER_ROLE_ID, "dies after create [rotator:p]", None)
    # the key was created before the "process died": it is there for the engine to sweep
    assert [k.policy for k in issuer.list_keys()].count("p") == 1


# ---- revoke ------------------------------------------------------------------------------------------


def test_revoke_twice_is_fine(issuer: MomentoIssuer) -> None:
    created = issuer.create_key(VIEWER_ROLE_ID, "twice", None)
    issuer.revoke_key(created.info.key_id)
    with count_calls("momento") as calls:
        issuer.revoke_key(created.info.key_id)
    assert calls == [("momento", "revoke_key", "404")]


def test_revoke_unknown_key_counts_as_done(issuer: MomentoIssuer) -> None:
    issuer.revoke_key("00000000-0000-4000-8000-0000000000ff")


def test_revoked_key_stops_authenticating(issuer: MomentoIssuer, emulator: Emulator) -> None:
    created = issuer.create_key(OWNER_ROLE_ID, "soon revoked", None)
    issuer.revoke_key(created.info.key_id)
    with client(emulator, created.api_key, []) as revoked, pytest.raises(IssuerAuthError):
        revoked.list_keys()


# ---- typed errors ------------------------------------------------------------------------------------


def _foreign_key() -> str:
    return jwt.encode({"t": "g", "jti": "00000000-0000-4000-8000-0000000000aa"}, "x" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda emu, clock: SecretText(_foreign_key()), id="unknown"),
        pytest.param(lambda emu, clock: SecretText("not-a-momento-key"), id="malformed"),
        pytest.param(lambda emu, clock: SecretText(emu.bootstrap_key.reveal()[:-4] + "AAAA"), id="bad-signature"),
    ],
)
def test_bad_management_key_is_an_auth_error(
    emulator: Emulator, clock: FakeClock, make_key: Callable[[Emulator, FakeClock], SecretText]
) -> None:
    with client(emulator, make_key(emulator, clock), []) as bad, pytest.raises(IssuerAuthError) as err:
        bad.list_keys()
    assert err.value.status == 401
    assert err.value.operation == "list_keys"
    assert "missing, unknown, expired or revoked" in str(err.value)
    assert "Owner" in str(err.value)


def test_expired_management_key_is_an_auth_error(emulator: Emulator, clock: FakeClock) -> None:
    owner = emulator.mint("owner", "expires", datetime.fromtimestamp(clock() + 60, UTC))
    with client(emulator, owner.api_key, []) as c:
        c.list_keys()  # still valid
        clock.advance(61)
        with pytest.raises(IssuerAuthError):
            c.list_keys()


@pytest.mark.parametrize("value", ["", "has space", "line\nbreak", "clé"])
def test_unsendable_management_key_fails_without_a_request(emulator: Emulator, value: str) -> None:
    with (
        client(emulator, SecretText(value), []) as c,
        count_calls("momento") as calls,
        pytest.raises(IssuerAuthError, match="malformed"),
    ):
        c.list_keys()
    assert calls == []


def test_missing_management_key_is_an_auth_error(emulator: Emulator) -> None:
    with client(emulator, None, []) as c, pytest.raises(IssuerAuthError, match="no management key"):
        c.list_keys()


def test_set_management_key_takes_effect(emulator: Emulator) -> None:
    with client(emulator, SecretText(_foreign_key()), []) as c:
        with pytest.raises(IssuerAuthError):
            c.list_roles()
        c.set_management_key(emulator.bootstrap_key)
        assert len(c.list_roles()) == 3


@pytest.mark.parametrize("role", ["viewer", "operator"])
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.list_keys(), id="list"),
        pytest.param(lambda c: c.create_key(VIEWER_ROLE_ID, "x", None), id="create"),
        pytest.param(lambda c: c.revoke_key("00000000-0000-4000-8000-0000000000ff"), id="revoke"),
    ],
)
def test_non_owner_key_is_a_permission_error(
    emulator: Emulator, role: str, call: Callable[[MomentoIssuer], object]
) -> None:
    key = emulator.mint(role, "not an owner").api_key
    with client(emulator, key, []) as c, pytest.raises(IssuerPermissionError) as err:
        call(c)
    assert err.value.status == 403
    assert "Use an Owner API key" in str(err.value)


def test_non_owner_key_may_list_roles(emulator: Emulator) -> None:
    with client(emulator, emulator.mint("viewer").api_key, []) as c:
        assert len(c.list_roles()) == 3


def test_unknown_role_is_not_found(issuer: MomentoIssuer) -> None:
    with pytest.raises(IssuerNotFound, match="nope") as err:
        issuer.create_key("nope", "x", None)
    assert err.value.status == 404


def test_expiry_in_the_past_is_a_bad_request(issuer: MomentoIssuer, clock: FakeClock) -> None:
    with pytest.raises(IssuerBadRequest) as err:
        issuer.create_key(VIEWER_ROLE_ID, "x", datetime.fromtimestamp(clock() - 10, UTC))
    assert err.value.status == 400
    assert "expiry" in str(err.value)


def test_naive_expiry_is_refused_before_any_request(issuer: MomentoIssuer) -> None:
    with count_calls("momento") as calls, pytest.raises(IssuerBadRequest, match="timezone-aware"):
        issuer.create_key(VIEWER_ROLE_ID, "x", datetime.now() + timedelta(days=1))
    assert calls == []


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="https"):
        MomentoIssuer("http://example.com", SecretText("x" * 20))


# ---- retries -----------------------------------------------------------------------------------------


def test_throttling_is_retried_honouring_retry_after(
    issuer: MomentoIssuer, emulator: Emulator, sleeps: list[float]
) -> None:
    emulator.failure_statuses = (429,)
    emulator.failure_rate = 1.0
    with count_calls("momento") as calls, pytest.raises(IssuerUnavailable) as err:
        issuer.list_keys()
    assert calls == [("momento", "list_keys", "429")] * 5
    assert sleeps == [1.0] * 4
    assert err.value.status == 429
    assert "list_keys" in str(err.value) and "429" in str(err.value)


def test_retry_after_is_capped_at_backoff_max(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.failure_statuses = (429,)
    emulator.failure_rate = 1.0
    emulator.retry_after = 120
    with (
        client(emulator, emulator.bootstrap_key, sleeps, max_attempts=3, backoff_max=2.5) as c,
        pytest.raises(IssuerUnavailable),
    ):
        c.list_roles()
    assert sleeps == [2.5, 2.5]


def test_server_errors_are_retried_with_jittered_exponential_backoff(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.failure_statuses = (500,)
    emulator.failure_rate = 1.0
    with (
        client(emulator, emulator.bootstrap_key, sleeps, backoff_base=0.5, backoff_max=3.0) as c,
        count_calls("momento") as calls,
        pytest.raises(IssuerUnavailable) as err,
    ):
        c.create_key(VIEWER_ROLE_ID, "x", None)
    assert calls == [("momento", "create_key", "500")] * 5
    assert err.value.status == 500
    assert len(sleeps) == 4
    for attempt, delay in enumerate(sleeps, start=1):
        assert 0.0 <= delay <= min(3.0, 0.5 * 2 ** (attempt - 1))
    assert len(set(sleeps)) == 4  # jittered, not constant


def test_operations_succeed_through_a_30_percent_failure_rate(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.failure_rate = 0.3
    with client(emulator, emulator.bootstrap_key, sleeps) as c, count_calls("momento") as calls:
        created = [c.create_key(VIEWER_ROLE_ID, f"k{i}", None) for i in range(10)]
        listed = {k.key_id for k in c.list_keys()}
        for k in created:
            c.revoke_key(k.info.key_id)
        roles = c.list_roles()
    assert {k.info.key_id for k in created} <= listed
    assert len(roles) == 3
    statuses = {status for _, _, status in calls}
    assert statuses & {"429", "500"}, "no failure was injected: the test proves nothing"
    assert len(sleeps) == sum(1 for _, _, s in calls if s in ("429", "500"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_issuer_is_unavailable_after_retries(sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    key = SecretText(_foreign_key())
    with (
        MomentoIssuer(url, key, sleep=sleeps.append, max_attempts=4) as c,
        count_calls("momento") as calls,
        pytest.raises(IssuerUnavailable) as err,
    ):
        c.list_keys()
    assert calls == [("momento", "list_keys", "error")] * 4
    assert len(sleeps) == 3
    assert err.value.status is None
    assert "connection error" in str(err.value)
    assert url in str(err.value)
    assert key.reveal() not in all_text(err.value)


def test_timeouts_are_retried_then_unavailable(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.latency = 0.3
    with (
        client(emulator, emulator.bootstrap_key, sleeps, timeout=0.05, max_attempts=2) as c,
        count_calls("momento") as calls,
        pytest.raises(IssuerUnavailable, match="timeout"),
    ):
        c.list_roles()
    assert calls == [("momento", "list_roles", "error")] * 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.25", 0.25), ("-4", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_seconds_parsing(header: str | None, expected: float | None) -> None:
    assert _parse_retry_after(header) == expected


def test_retry_after_http_date_parsing() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = _parse_retry_after(when)
    assert parsed is not None and 25 <= parsed <= 30


# ---- secrecy -----------------------------------------------------------------------------------------


def test_no_error_text_or_repr_carries_a_key(emulator: Emulator, clock: FakeClock, sleeps: list[float]) -> None:
    owner = emulator.mint("owner", "about to be revoked")
    viewer = emulator.mint("viewer", "viewer")
    errors: list[IssuerError] = []
    with client(emulator, owner.api_key, sleeps, max_attempts=2) as c:
        created = c.create_key(VIEWER_ROLE_ID, "made", None)
        calls: tuple[Callable[[], object], ...] = (
            lambda: c.create_key("unknown-role", "x", None),
            lambda: c.create_key(VIEWER_ROLE_ID, "x", datetime.fromtimestamp(clock() - 1, UTC)),
        )
        for call in calls:
            with pytest.raises(IssuerError) as err:
                call()
            errors.append(err.value)
        emulator.failure_rate = 1.0
        with pytest.raises(IssuerError) as err:
            c.list_keys()
        errors.append(err.value)
        emulator.failure_rate = 0.0
        c.set_management_key(viewer.api_key)
        with pytest.raises(IssuerError) as err:
            c.list_keys()
        errors.append(err.value)
        c.set_management_key(owner.api_key)
        c.revoke_key(owner.info.key_id)
        with pytest.raises(IssuerError) as err:
            c.list_keys()
        errors.append(err.value)
        texts = [all_text(e) for e in errors] + [repr(c), repr(created), str(created), repr(created.api_key)]
    for secret in (owner.api_key, viewer.api_key, created.api_key, emulator.bootstrap_key):
        for text in texts:
            assert secret.reveal() not in text

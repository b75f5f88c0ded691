"""The ``http`` pickup check against consumer servers on 127.0.0.1 that switch keys when the test says."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from rotator.errors import ConfigError
from rotator.pickup import base
from rotator.pickup.http import CheckConfig, HttpCheck, open_check
from tests.pickup import Consumer, running_consumers
from tests.support.crash import SimulatedCrash, count_calls, crash_after

OLD, NEW = "k0001", "k0002"
PUBLISHED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

MakeCheck = Callable[..., HttpCheck]


@pytest.fixture
def make_check() -> Iterator[MakeCheck]:
    opened: list[HttpCheck] = []

    def make(urls: list[str], **cfg: Any) -> HttpCheck:
        check = open_check(CheckConfig.model_validate({"type": "http", "urls": urls, **cfg}))
        opened.append(check)
        return check

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def three() -> Iterator[list[Consumer]]:
    with running_consumers(NEW, NEW, NEW) as cs:
        yield cs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_all_consumers_on_the_new_key_is_ok(three: list[Consumer], make_check: MakeCheck) -> None:
    v = make_check([c.url for c in three]).check("checkout", NEW, PUBLISHED)
    assert v.ok
    assert v.lagging == ()
    assert v.key_id == NEW
    assert v.check == "http"


def test_one_consumer_on_the_old_key_lags_and_is_named(three: list[Consumer], make_check: MakeCheck) -> None:
    three[1].key_id = OLD
    v = make_check([c.url for c in three]).check("checkout", NEW, PUBLISHED)
    assert not v.ok
    assert v.lagging == (f"{three[1].url} (reports {OLD})",)
    assert "1 of 3" in v.detail


def test_consumers_switching_one_by_one_are_ok_only_after_the_last(make_check: MakeCheck) -> None:
    with running_consumers(OLD, OLD, OLD) as cs:
        check = make_check([c.url for c in cs])
        for i, c in enumerate(cs):
            v = check.check("checkout", NEW, PUBLISHED)
            assert not v.ok
            assert len(v.lagging) == len(cs) - i
            c.key_id = NEW
        assert check.check("checkout", NEW, PUBLISHED).ok


def test_an_unreachable_consumer_lags(three: list[Consumer], make_check: MakeCheck) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/momento-key-id"
    v = make_check([three[0].url, dead]).check("checkout", NEW, PUBLISHED)
    assert not v.ok
    assert v.lagging == (f"{dead} (unreachable: ConnectError)",)


def test_a_consumer_slower_than_the_timeout_lags(three: list[Consumer], make_check: MakeCheck) -> None:
    three[0].delay = 1.0
    v = make_check([three[0].url], timeout=0.2).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (unreachable: ReadTimeout)",)


def test_consumers_are_asked_concurrently(make_check: MakeCheck) -> None:
    with running_consumers(NEW, NEW, NEW, NEW) as cs:
        for c in cs:
            c.delay = 0.3
        started = time.monotonic()
        assert make_check([c.url for c in cs]).check("checkout", NEW, PUBLISHED).ok
        assert time.monotonic() - started < 1.0


def test_a_non_2xx_status_lags_even_with_the_right_key_id(three: list[Consumer], make_check: MakeCheck) -> None:
    three[0].status = 503
    v = make_check([three[0].url]).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (status 503)",)


def test_garbage_json_lags(three: list[Consumer], make_check: MakeCheck) -> None:
    three[0].body = b"<html>hello</html>"
    v = make_check([three[0].url]).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (not JSON)",)


def test_json_without_the_field_lags(three: list[Consumer], make_check: MakeCheck) -> None:
    three[0].body = b'{"keyId": 12}'
    three[1].body = b'["k0002"]'
    v = make_check([three[0].url, three[1].url]).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (no string field keyId)", f"{three[1].url} (no string field keyId)")


def test_a_nested_field_path_is_followed(three: list[Consumer], make_check: MakeCheck) -> None:
    for c in three:
        c.nest = ("momento",)
    three[2].key_id = OLD
    v = make_check([c.url for c in three], key_id_field="momento.keyId").check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[2].url} (reports {OLD})",)


def test_a_top_level_field_does_not_satisfy_a_nested_path(three: list[Consumer], make_check: MakeCheck) -> None:
    v = make_check([three[0].url], key_id_field="momento.keyId").check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (no string field momento.keyId)",)


def test_header_mode_reads_the_header_and_ignores_the_body(three: list[Consumer], make_check: MakeCheck) -> None:
    for c in three:
        c.header = "X-Momento-Key-Id"
    three[0].body = b"not json at all"
    three[1].key_id = OLD
    v = make_check([c.url for c in three], header="X-Momento-Key-Id").check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[1].url} (reports {OLD})",)


def test_header_mode_without_the_header_lags(three: list[Consumer], make_check: MakeCheck) -> None:
    v = make_check([three[0].url], header="X-Momento-Key-Id").check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (no header X-Momento-Key-Id)",)


def test_the_auth_header_is_sent_from_the_env_var(
    three: list[Consumer], make_check: MakeCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "Bearer pickup-token-0123456789"
    monkeypatch.setenv("PICKUP_TOKEN", token)
    for c in three:
        c.require = ("Authorization", token)
    check = make_check([c.url for c in three], auth_header={"env": "PICKUP_TOKEN"})
    v = check.check("checkout", NEW, PUBLISHED)
    assert v.ok
    assert all(c.seen[-1]["authorization"] == token for c in three)
    assert token not in repr(v) and "pickup-token" not in repr(check.config)


def test_the_auth_header_is_read_at_each_check(
    three: list[Consumer], make_check: MakeCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    three[0].require = ("X-Api-Token", "second-token-value")
    monkeypatch.setenv("PICKUP_TOKEN", "first-token-value")
    check = make_check([three[0].url], auth_header={"name": "X-Api-Token", "env": "PICKUP_TOKEN"})
    assert check.check("checkout", NEW, PUBLISHED).lagging == (f"{three[0].url} (status 401)",)
    monkeypatch.setenv("PICKUP_TOKEN", "second-token-value")
    assert check.check("checkout", NEW, PUBLISHED).ok


def test_a_missing_auth_env_var_makes_every_consumer_lag_without_asking(
    three: list[Consumer], make_check: MakeCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PICKUP_TOKEN", raising=False)
    check = make_check([c.url for c in three], auth_header={"env": "PICKUP_TOKEN"})
    with count_calls("pickup-http") as calls:
        v = check.check("checkout", NEW, PUBLISHED)
    assert not v.ok
    assert v.lagging == tuple(f"{c.url} (env var PICKUP_TOKEN is not set)" for c in three)
    assert "PICKUP_TOKEN" in v.detail and "Authorization" in v.detail
    assert calls == []
    assert all(c.seen == [] for c in three)


def test_an_auth_env_var_that_is_no_header_value_lags_without_asking(
    three: list[Consumer], make_check: MakeCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PICKUP_TOKEN", "Bearer abc\r\nX-Injected: 1")
    v = make_check([three[0].url], auth_header={"env": "PICKUP_TOKEN"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (env var PICKUP_TOKEN is not a valid header value)",)
    assert "abc" not in repr(v)
    assert three[0].seen == []


def test_every_request_is_recorded_once(three: list[Consumer], make_check: MakeCheck) -> None:
    three[1].status = 500
    dead = f"http://127.0.0.1:{_free_port()}/"
    with count_calls("pickup-http") as calls:
        make_check([three[0].url, three[1].url, dead]).check("checkout", NEW, PUBLISHED)
    assert sorted(calls) == sorted(
        [("pickup-http", "get", "200"), ("pickup-http", "get", "500"), ("pickup-http", "get", "ConnectError")]
    )


def test_a_crash_inside_record_call_is_not_swallowed(three: list[Consumer], make_check: MakeCheck) -> None:
    check = make_check([c.url for c in three])
    with crash_after(1, service="pickup-http"), pytest.raises(SimulatedCrash):
        check.check("checkout", NEW, PUBLISHED)


def test_user_info_in_a_url_is_not_shown(three: list[Consumer], make_check: MakeCheck) -> None:
    three[0].key_id = OLD
    url = three[0].url.replace("http://", "http://alice:s3cret-pass@")
    v = make_check([url]).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"{three[0].url} (reports {OLD})",)
    assert "s3cret" not in repr(v)


def test_open_check_through_the_registry(three: list[Consumer]) -> None:
    check = base.open_check(CheckConfig(type="http", urls=[three[0].url]))
    try:
        assert isinstance(check, base.PickupCheck)
        assert check.check("checkout", NEW, PUBLISHED).ok
    finally:
        check.close()


@pytest.mark.parametrize(
    "body",
    [
        {"urls": []},
        {"urls": ["ftp://host/x"]},
        {"urls": ["checkout.internal/keyid"]},
        {"urls": ["https://a/x", "https://a/x"]},
        {"urls": ["https://a/x"], "header": "X-Key-Id", "key_id_field": "keyId"},
        {"urls": ["https://a/x"], "key_id_field": "momento..keyId"},
        {"urls": ["https://a/x"], "auth_header": {"name": "Authorization"}},
        {"urls": ["https://a/x"], "auth_header": {"env": "NOT-A-NAME"}},
        {"urls": ["https://a/x"], "timeout": 0},
        {"urls": ["https://a/x"], "surprise": 1},
    ],
)
def test_bad_configs_are_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CheckConfig.model_validate({"type": "http", **body})


def test_config_defaults_and_durations() -> None:
    cfg = CheckConfig.model_validate({"type": "http", "urls": ["https://a/x"], "timeout": "1500ms"})
    assert cfg.timeout == 1.5
    assert cfg.key_id_field == "keyId" and cfg.header is None and cfg.verify is True
    assert CheckConfig.model_validate({"type": "http", "urls": ["https://a/x"]}).timeout == 5.0


def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="CA bundle"):
        open_check(CheckConfig(type="http", urls=["https://a/x"], verify=str(tmp_path / "missing.pem")))

"""The bad-input corpus: one :class:`Case` per way a careless or hostile user can get rotator's input wrong.

Each case starts from a valid config (:func:`base_config`: two policies and a file store, against the test's
emulator, at a time when a pass would create a key for each policy) and breaks one thing: a config field, the
YAML, the file's encoding, size or kind, an environment variable, or a command-line flag. ``field`` is what
the error message must name (a config path such as ``policies[0].role``, a flag such as ``--now``, or for
encodings and special files the word that says what is wrong).

``online`` marks the cases only the preflight can see (a role the issuer does not know, a store directory
that cannot be written); ``validate`` runs them with ``--online``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Data = dict[str, Any]


@dataclass(frozen=True)
class Ctx:
    """Where a case may put things: ``root`` is the harness's tree, ``scratch`` a per-case directory."""

    root: Path
    secrets: Path
    scratch: Path
    key_file: Path


@dataclass(frozen=True)
class Case:
    id: str
    field: str
    #: change the valid config in place (``data``), or return bytes to write as the file instead
    edit: Callable[[Data, Ctx], bytes | None] | None = None
    #: command-line arguments added after the command (a case's own --now replaces the default one)
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    online: bool = False
    #: make the config path something other than a written file (fifo, directory, device...): returns the path
    special: Callable[[Ctx], str] | None = None
    #: prepare the filesystem before the run (e.g. a regular file where a store directory belongs)
    setup: Callable[[Ctx], None] | None = None


def base_config(url: str, key_file: Path, secrets: Path) -> Data:
    """A valid config: at T0 (no keys yet) a pass would create and publish a key for both policies."""
    return {
        "issuer": {
            "type": "momento",
            "url": url,
            "management_key": {"file": str(key_file)},
            "endpoint": "cell-1-us-east-1-1.emulator.local",
        },
        "interval": "1m",
        "jitter": "0s",
        "clock_skew": "1m",
        "pass_timeout": "1m",
        "stores": {"local": {"type": "file", "path": str(secrets)}},
        "policies": [
            {
                "name": "checkout",
                "role": "operator",
                "description": "checkout cache access",
                "lifetime": "1h",
                "rotate_before": "20m",
                "grace": "5m",
                "orphan_after": "10m",
                "targets": [{"store": "local", "secret": "checkout/momento"}],
            },
            {
                "name": "reporting",
                "role": "viewer",
                "description": "reporting job",
                "lifetime": "1h",
                "rotate_before": "20m",
                "grace": "5m",
                "orphan_after": "10m",
                "format": "env",
                "targets": [{"store": "local", "secret": "reporting/momento.env"}],
            },
        ],
    }


def dump(data: Data) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


# ---- small builders ---------------------------------------------------------------------------------------


def top(key: str, value: Any) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d[key] = value

    return edit


def drop(key: str) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        del d[key]

    return edit


def issuer(key: str, value: Any) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d["issuer"][key] = value

    return edit


def store(key: str, value: Any) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d["stores"]["local"][key] = value

    return edit


def pol(key: str, value: Any, i: int = 0) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d["policies"][i][key] = value

    return edit


def pol_drop(key: str, i: int = 0) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        del d["policies"][i][key]

    return edit


def target(key: str, value: Any) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d["policies"][0]["targets"][0][key] = value

    return edit


def defaults(key: str, value: Any) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d.setdefault("defaults", {})[key] = value

    return edit


def text(transform: Callable[[str], str]) -> Callable[[Data, Ctx], bytes]:
    """The valid config's YAML text, transformed."""

    def edit(d: Data, c: Ctx) -> bytes:
        return transform(dump(d).decode()).encode("utf-8")

    return edit


def raw(make: Callable[[Data, Ctx], bytes]) -> Callable[[Data, Ctx], bytes]:
    return make


def mk(source: dict[str, Any]) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        d["issuer"]["management_key"] = source

    return edit


def alerts(value: dict[str, Any]) -> Callable[[Data, Ctx], None]:
    return top("alerts", value)


# ---- special files and filesystem set-ups -----------------------------------------------------------------


def fifo(c: Ctx) -> str:
    p = c.scratch / "fifo.yaml"
    os.mkfifo(p)
    return str(p)


def symlink_to_fifo(c: Ctx) -> str:
    target_ = c.scratch / "real-fifo"
    os.mkfifo(target_)
    link = c.scratch / "link.yaml"
    link.symlink_to(target_)
    return str(link)


def directory(c: Ctx) -> str:
    p = c.scratch / "conf.d"
    p.mkdir()
    return str(p)


def missing(c: Ctx) -> str:
    return str(c.scratch / "no-such-config.yaml")


def big_file(c: Ctx) -> str:
    p = c.scratch / "huge.yaml"
    line = b"unknown_key_with_a_long_name_0000: some value that takes room\n"
    with p.open("wb") as f:
        for _ in range(10 * (1 << 20) // len(line) + 1):
            f.write(line)
    return str(p)


def store_under_regular_file(d: Data, c: Ctx) -> None:
    (c.scratch / "a-file").write_text("a regular file where the store's parent directory belongs\n")
    d["stores"]["local"]["path"] = str(c.scratch / "a-file" / "secrets")


def store_world_readable(d: Data, c: Ctx) -> None:
    p = c.scratch / "shared-secrets"
    p.mkdir()
    p.chmod(0o755)
    d["stores"]["local"]["path"] = str(p)


def store_foreign_owner(d: Data, c: Ctx) -> None:
    p = c.scratch / "someone-elses"
    p.mkdir(mode=0o700)
    os.chown(p, os.geteuid() + 4242, -1)
    d["stores"]["local"]["path"] = str(p)


def target_dir_is_a_file(d: Data, c: Ctx) -> None:
    p = c.scratch / "secrets"
    (p / "checkout").mkdir(parents=True, mode=0o700)
    p.chmod(0o700)
    (p / "checkout" / "momento").write_text("a regular file where the target's directory belongs\n")
    d["stores"]["local"]["path"] = str(p)


def key_file(content: str) -> Callable[[Data, Ctx], None]:
    def edit(d: Data, c: Ctx) -> None:
        p = c.scratch / "owner.key"
        p.write_text(content)
        d["issuer"]["management_key"] = {"file": str(p)}

    return edit


def local_emulator(db: str, port: int = 0) -> Callable[[Data, Ctx], None]:
    """``type: emulator`` (in this process) with its database at ``db`` (relative to the case's scratch dir)."""

    def edit(d: Data, c: Ctx) -> None:
        if db == "under-a-file":
            (c.scratch / "a-file").write_text("not a directory\n")
        if db == "garbage.db":
            (c.scratch / "garbage.db").write_bytes(b"this is not an SQLite database, it only has the name\n" * 20)
        path = c.scratch / ("a-file/emulator.db" if db == "under-a-file" else db)
        d["issuer"] = {
            "type": "emulator",
            "endpoint": "cell-1-us-east-1-1.emulator.local",
            "emulator": {"db": str(path), "bootstrap_key_file": str(c.scratch / "owner.key"), "port": port},
        }

    return edit


def emulator_port_in_use(d: Data, c: Ctx) -> None:
    from urllib.parse import urlsplit

    port = urlsplit(d["issuer"]["url"]).port or 0  # the test's own emulator listens there
    local_emulator("fresh.db", port)(d, c)


def cloud(body: dict[str, Any]) -> Callable[[Data, Ctx], None]:
    """A second store, ``cloud``, defined (and so checked) though no target uses it."""

    def edit(d: Data, c: Ctx) -> None:
        d["stores"]["cloud"] = body

    return edit


HTTP_CHECK = {"type": "http", "urls": ["http://127.0.0.1:9/id"]}


def refused_key(d: Data, c: Ctx) -> None:
    from tests.support.e2e import fake_v2_key

    key_file(fake_v2_key())(d, c)


def expired_jwt() -> str:
    import jwt

    return jwt.encode(
        {"t": "g", "jti": "k-expired", "exp": 1_000_000_000}, "some-secret-of-32-bytes-or-more!!", "HS256"
    )


def billion_laughs(d: Data, c: Ctx) -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]")
    return (dump(d).decode() + "\n".join(lines) + "\n").encode()


def many_unknown_keys(d: Data, c: Ctx) -> bytes:
    return dump(d) + b"".join(b"unknown_%05d: 1\n" % i for i in range(16000))


def two_policies_same_secret(d: Data, c: Ctx) -> None:
    d["policies"][1]["targets"] = [{"store": "local", "secret": "checkout/momento"}]


def self_not_owner(d: Data, c: Ctx) -> None:
    d["issuer"]["management_key"] = {"store": "local", "secret": "checkout/momento"}
    d["policies"][0]["self"] = True


# ---- the corpus ----------------------------------------------------------------------------------------------

T = Case
CASES: list[Case] = [
    # top level
    T("interval-zero", "interval", top("interval", "0s")),
    T("interval-negative", "interval", top("interval", -5)),
    T("interval-overflow", "interval", top("interval", "99999999999d")),
    T("interval-nan", "interval", top("interval", float("nan"))),
    T("interval-list", "interval", top("interval", ["1m"])),
    T("jitter-word", "jitter", top("jitter", "soon")),
    T("concurrency-zero", "concurrency", top("concurrency", 0)),
    T("concurrency-word", "concurrency", top("concurrency", "many")),
    T("concurrency-huge", "concurrency", top("concurrency", 10**30)),
    T("pass-timeout-zero", "pass_timeout", top("pass_timeout", "0s")),
    T("drift-check-word", "drift_check_every", top("drift_check_every", "sometimes")),
    T("verify-for-negative", "verify_for", top("verify_for", -1)),
    T("clock-skew-infinite", "clock_skew", top("clock_skew", float("inf"))),
    T("log-level-word", "log_level", top("log_level", "verbose")),
    T("unknown-top-key", "intreval", top("intreval", "1m")),
    T("http-listen-word", "http.listen", top("http", {"listen": "nowhere"})),
    T("metrics-unknown-field", "metrics.push", top("metrics", {"push": "x"})),
    T("alerts-notifier-type", "alerts.notifiers[0]", alerts({"notifiers": [{"type": "pager"}]})),
    T("alerts-sns-arn", "alerts.notifiers[0]", alerts({"notifiers": [{"type": "sns", "topic_arn": "arn:x"}]})),
    T("alerts-before-word", "alerts.alert_before", alerts({"alert_before": "later"})),
    T("alerts-webhook-url-missing", "alerts.notifiers[0]", alerts({"notifiers": [{"type": "webhook"}]})),
    T(
        "alerts-slack-timeout-word",
        "alerts.notifiers[0]",
        alerts({"notifiers": [{"type": "slack", "url": "https://h", "timeout": "soon"}]}),
    ),
    T("alerts-state-file-list", "alerts.state_file", alerts({"state_file": ["/a"]})),
    T("alerts-on-success-word", "alerts.on_success", alerts({"on_success": "perhaps"})),
    T("http-listen-port-99999", "http.listen", top("http", {"listen": "127.0.0.1:99999"})),
    T("metrics-pushgateway-list", "metrics.pushgateway", top("metrics", {"pushgateway": ["http://x"]})),
    T("defaults-orphan-after-word", "defaults.orphan_after", defaults("orphan_after", "whenever")),
    T("defaults-rotate-every-negative", "defaults.rotate_every", defaults("rotate_every", -1)),
    T("defaults-lifetime-zero", "lifetime", defaults("lifetime", "0s")),
    T("defaults-format-xml", "defaults.format", defaults("format", "xml")),
    T("defaults-rotate-before-150pct", "defaults.rotate_before", defaults("rotate_before", "150%")),
    T("defaults-grace-negative", "defaults.grace", defaults("grace", -300)),
    T("defaults-grace-nan", "defaults.grace", defaults("grace", float("nan"))),
    T("defaults-unknown-field", "defaults.graec", defaults("graec", "1h")),
    T("top-level-list", "mapping", raw(lambda d, c: b"- issuer\n- policies\n")),
    T("top-level-scalar", "mapping", raw(lambda d, c: b"hello\n")),
    T("empty-file", "mapping", raw(lambda d, c: b"")),
    T("policies-missing", "policies", drop("policies")),
    T("policies-empty", "policies", top("policies", [])),
    T("issuer-missing", "issuer", drop("issuer")),
    # issuer
    T("issuer-type-word", "issuer.type", issuer("type", "vault")),
    T("issuer-type-list", "issuer.type", issuer("type", ["momento"])),
    T("issuer-url-ftp", "issuer.url", issuer("url", "ftp://mga.example.com")),
    T("issuer-url-query", "issuer.url", issuer("url", "https://mga.example.com/?x=1")),
    T("issuer-url-plain-http", "issuer.url", issuer("url", "http://mga.example.com")),
    T("issuer-endpoint-word", "issuer.endpoint", issuer("endpoint", "not a host")),
    T("issuer-key-version", "issuer.key_version", issuer("key_version", "v3")),
    T("issuer-private-endpoints-regex", "issuer.private_endpoints", issuer("private_endpoints", ["("])),
    T("issuer-timeout-zero", "issuer.timeout", issuer("timeout", "0s")),
    T("issuer-max-attempts-zero", "issuer.max_attempts", issuer("max_attempts", 0)),
    T("issuer-page-size-zero", "issuer.page_size", issuer("page_size", 0)),
    T("issuer-page-size-101", "issuer.page_size", issuer("page_size", 101)),
    T("issuer-unknown-field", "issuer.urll", issuer("urll", "https://x")),
    T("issuer-emulator-failure-rate", "issuer.emulator.failure_rate", issuer("emulator", {"failure_rate": 2})),
    T("issuer-emulator-port", "issuer.emulator.port", issuer("emulator", {"port": 70000})),
    T("issuer-emulator-latency-negative", "issuer.emulator.latency", issuer("emulator", {"latency": -1})),
    T("emulator-db-under-a-file", "issuer.emulator.db", local_emulator("under-a-file"), online=True),
    T("emulator-db-not-a-database", "issuer.emulator.db", local_emulator("garbage.db"), online=True),
    T("emulator-port-in-use", "issuer.emulator.port", emulator_port_in_use, online=True),
    T("mk-env-and-file", "issuer.management_key", mk({"env": "A", "file": "/x"})),
    T("mk-env-not-a-name", "issuer.management_key.env", mk({"env": "not a name"})),
    T("mk-store-unknown", "issuer.management_key.store", mk({"store": "nope", "secret": "x"})),
    T("mk-store-no-secret", "issuer.management_key", mk({"store": "local"})),
    T("mk-format-xml", "issuer.management_key.format", mk({"env": "A", "format": "xml"})),
    T("mk-bootstrap-env-not-a-name", "issuer.management_key.bootstrap_env", mk({"env": "A", "bootstrap_env": "1x"})),
    T("mk-file-missing", "issuer.management_key", mk({"file": "/nonexistent/owner.key"}), online=True),
    T("mk-env-unset", "issuer.management_key", mk({"env": "ROTATOR_TEST_UNSET_MGMT_KEY"}), online=True),
    T("mk-file-empty", "issuer.management_key", key_file(""), online=True),
    T("mk-file-not-a-key", "issuer.management_key", key_file("hello, not a key\n"), online=True),
    T("mk-file-key-the-issuer-refuses", "management key was refused", lambda d, c: refused_key(d, c), online=True),
    T("mk-file-expired", "issuer.management_key", key_file(expired_jwt()), online=True),
    # stores
    T("store-type-s3", "stores.local.type", store("type", "s3")),
    T("store-type-list", "stores.local.type", store("type", ["file"])),
    T("store-type-missing", "stores.local.type", lambda d, c: d["stores"]["local"].pop("type") and None),
    T("store-body-list", "stores.local", top("stores", {"local": ["file"]})),
    T("store-unknown-field", "stores.local.colour", store("colour", "red")),
    T("store-destroy-after-word", "stores.local.destroy_after", store("destroy_after", "later")),
    T("store-name-spaces", "stores.my store", lambda d, c: d["stores"].update({"my store": {"type": "file"}})),
    T("store-path-unset-var", "stores.local.path", store("path", "${ROTATOR_TEST_UNSET_DIR}/secrets")),
    T(
        "store-path-empty-var",
        "stores.local.path",
        store("path", "${ROTATOR_TEST_EMPTY_DIR}/secrets"),
        env={"ROTATOR_TEST_EMPTY_DIR": ""},
    ),
    T("store-path-under-regular-file", "stores.local.path", store_under_regular_file, online=True),
    T("store-path-world-readable", "stores.local.path", store_world_readable, online=True),
    T("store-path-foreign-owner", "stores.local.path", store_foreign_owner, online=True),
    T("aws-region-word", "stores.cloud.region", cloud({"type": "aws", "region": "Mars 1"})),
    T("aws-endpoint-url-word", "stores.cloud.endpoint_url", cloud({"type": "aws", "endpoint_url": "not a url"})),
    T("aws-max-attempts-word", "stores.cloud.max_attempts", cloud({"type": "aws", "max_attempts": "lots"})),
    T("azure-vault-url-missing", "stores.cloud.vault_url", cloud({"type": "azure"})),
    T("azure-vault-url-http", "stores.cloud.vault_url", cloud({"type": "azure", "vault_url": "http://kv.example"})),
    T(
        "azure-timeout-zero",
        "stores.cloud.timeout",
        cloud({"type": "azure", "vault_url": "https://x.vault.azure.net", "timeout": 0}),
    ),
    T("gcp-project-missing", "stores.cloud.project", cloud({"type": "gcp"})),
    T("gcp-transport-pigeon", "stores.cloud.transport", cloud({"type": "gcp", "project": "p", "transport": "pigeon"})),
    T("gcp-keep-retired-99", "stores.cloud.keep_retired", cloud({"type": "gcp", "project": "p", "keep_retired": 99})),
    T("target-dir-is-regular-file", "policies[0].targets[0].secret", target_dir_is_a_file, online=True),
    # policies
    T("policy-not-mapping", "policies[0]", top("policies", ["checkout"])),
    T("policy-name-missing", "policies[0].name", pol_drop("name")),
    T("policy-name-upper", "policies[0].name", pol("name", "Checkout")),
    T("policy-name-list", "policies[0].name", pol("name", ["checkout"])),
    T("policy-name-duplicate", "policies[1].name", pol("name", "checkout", 1)),
    T("role-missing", "policies[0].role", pol_drop("role")),
    T("role-blank", "policies[0].role", pol("role", "   ")),
    T("role-list", "policies[0].role", pol("role", ["operator"])),
    T("role-unknown", "policies[0].role", pol("role", "superuser"), online=True),
    T("role-unknown-second-policy", "policies[1].role", pol("role", "admin", 1), online=True),
    T("description-too-long", "policies[0].description", pol("description", "x" * 1100)),
    T("description-with-marker", "policies[0].description", pol("description", "a [rotator:other]")),
    T("description-mapping", "policies[0].description", pol("description", {"a": 1})),
    T("lifetime-word", "policies[0].lifetime", pol("lifetime", "forever")),
    T("lifetime-overflow", "policies[0].lifetime", pol("lifetime", "99999999999d")),
    T("lifetime-zero", "policies[0].lifetime", pol("lifetime", "0s")),
    T("lifetime-never-without-rotate-every", "policies[0].rotate_every", pol("lifetime", "never")),
    T("rotate-before-longer-than-lifetime", "policies[0].rotate_before", pol("rotate_before", "2h")),
    T("rotate-before-bad-percent", "policies[0].rotate_before", pol("rotate_before", "abc%")),
    T("rotate-before-nan", "policies[0].rotate_before", pol("rotate_before", float("nan"))),
    T("rotate-before-too-short", "policies[0].rotate_before", pol("rotate_before", "1m")),
    T("rotate-every-with-lifetime", "policies[0].rotate_every", pol("rotate_every", "30d")),
    T("grace-negative", "policies[0].grace", pol("grace", -300)),
    T("grace-nan", "policies[0].grace", pol("grace", float("nan"))),
    T("grace-bool", "policies[0].grace", pol("grace", True)),
    T("orphan-after-shorter-than-pass-timeout", "policies[0].orphan_after", pol("orphan_after", "30s")),
    T("format-xml", "policies[0].format", pol("format", "xml")),
    T("format-key-without-endpoint-secret", "policies[0].targets[0].endpoint_secret", pol("format", "key")),
    T("targets-empty", "policies[0].targets", pol("targets", [])),
    T("targets-scalar", "policies[0].targets", pol("targets", "local")),
    T("target-not-mapping", "policies[0].targets[0]", pol("targets", ["local"])),
    T("target-store-unknown", "policies[0].targets[0].store", target("store", "nope")),
    T("target-store-list", "policies[0].targets[0].store", target("store", ["local"])),
    T("target-secret-escapes", "policies[0].targets[0].secret", target("secret", "../../etc/escape")),
    T("target-secret-twice", "policies[1].targets[0]", two_policies_same_secret),
    T("pickup-type-list", "policies[0].pickup[0].type", pol("pickup", [{"type": ["http"]}])),
    T("pickup-type-unknown", "policies[0].pickup[0].type", pol("pickup", [{"type": "ping"}])),
    T("pickup-http-no-urls", "policies[0].pickup[0]", pol("pickup", [{"type": "http"}])),
    T("max-wait-without-pickup", "policies[0].max_wait", pol("max_wait", "1h")),
    T("pickup-http-urls-scalar", "policies[0].pickup[0].urls", pol("pickup", [{"type": "http", "urls": "http://x"}])),
    T("pickup-http-timeout-negative", "policies[0].pickup[0].timeout", pol("pickup", [{**HTTP_CHECK, "timeout": -1}])),
    T("pickup-k8s-namespace-missing", "policies[0].pickup[0].namespace", pol("pickup", [{"type": "kubernetes"}])),
    T(
        "revoke-after-shorter-than-grace",
        "policies[0].revoke_after",
        lambda d, c: d["policies"][0].update(pickup=[HTTP_CHECK], revoke_after="1m"),
    ),
    T(
        "max-wait-over-revoke-after",
        "policies[0].max_wait",
        lambda d, c: d["policies"][0].update(pickup=[HTTP_CHECK], revoke_after="1h", max_wait="2h"),
    ),
    T("self-word", "policies[0].self", pol("self", "maybe")),
    T(
        "endpoint-secret-escapes",
        "policies[0].targets[0].endpoint_secret",
        lambda d, c: d["policies"][0].update(
            format="key", targets=[{"store": "local", "secret": "k", "endpoint_secret": "../x"}]
        ),
    ),
    T("target-unknown-field", "policies[0].targets[0].colour", target("colour", "red")),
    T("self-with-operator-role", "policies[0].role", self_not_owner),
    T("policy-unknown-field", "policies[0].rol", pol("rol", "operator")),
    # the YAML, its encoding and its size
    T("binary-garbage", "byte offset", raw(lambda d, c: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")),
    T("latin1-description", "byte offset", raw(lambda d, c: dump(d).replace(b"checkout cache access", b"caf\xe9"))),
    T("utf16-with-bom", "UTF-16", raw(lambda d, c: dump(d).decode().encode("utf-16"))),
    T("utf16-without-bom", "byte offset", raw(lambda d, c: dump(d).decode().encode("utf-16-le"))),
    T("utf8-bom-then-bad-interval", "interval", raw(lambda d, c: b"\xef\xbb\xbf" + dump({**d, "interval": "0s"}))),
    T("yaml-unclosed-flow", "line", raw(lambda d, c: b"issuer: [\n")),
    T("yaml-tab-indent", "line", text(lambda t: t.replace("  type: momento", "\ttype: momento"))),
    T("yaml-deep-nesting", "nest", raw(lambda d, c: b"[" * 50000 + b"]" * 50000)),
    T("yaml-billion-laughs", "aliases", raw(billion_laughs)),
    T("yaml-duplicate-top-key", "interval", text(lambda t: t + "interval: 5m\n")),
    T(
        "yaml-duplicate-policy-key",
        "policies[0].role",
        text(lambda t: t.replace("  role: operator\n", "  role: operator\n  role: owner\n")),
    ),
    T(
        "yaml-python-tag",
        "interval",
        text(lambda t: t.replace("interval: 1m", "interval: !!python/object/apply:os.getpid []")),
    ),
    T("yaml-two-documents", "document", text(lambda t: t + "---\ninterval: 5m\n")),
    T("yaml-impossible-date", "interval", text(lambda t: t.replace("interval: 1m", "interval: 2026-13-45"))),
    T("yaml-unhashable-key", "unhashable", raw(lambda d, c: b"{[a, b]: 1}\n")),
    T("yaml-unknown-keys-16000", "unknown field", raw(many_unknown_keys)),
    T("yaml-unset-var-in-role", "policies[0].role", pol("role", "${ROTATOR_TEST_UNSET_ROLE}")),
    # special files and the environment
    T("config-is-fifo", "FIFO", special=fifo),
    T("config-is-symlink-to-fifo", "FIFO", special=symlink_to_fifo),
    T("config-is-directory", "directory", special=directory),
    T("config-is-dev-zero", "device", special=lambda c: "/dev/zero"),
    T("config-is-missing", "cannot read", special=missing),
    T("config-is-10-mib", "bytes", special=big_file),
    T("max-bytes-env-word", "ROTATOR_CONFIG_MAX_BYTES", env={"ROTATOR_CONFIG_MAX_BYTES": "lots"}),
    T("max-bytes-env-tiny", "bytes", env={"ROTATOR_CONFIG_MAX_BYTES": "10"}),
    # command-line flags
    T("now-empty", "--now", args=("--now", "")),
    T("now-year-9999", "--now", args=("--now", "9999-12-31T23:59:00Z")),
    T("now-year-1", "--now", args=("--now", "0001-01-01T00:00:00Z")),
    T("now-offset-overflow", "--now", args=("--now", "+99999999999d")),
    T("now-offset-backwards-overflow", "--now", args=("--now", "-99999999999d")),
    T("now-word", "--now", args=("--now", "yesterday")),
    T("now-without-zone", "--now", args=("--now", "2031-03-01T12:00:00")),
    T("now-offset-nan", "--now", args=("--now", "+nan")),
    T("policy-unknown", "--policy", args=("--policy", "nope")),
    T("flag-misspelt", "--polcy", args=("--polcy", "checkout")),
    T("flag-unknown", "--dry-run", args=("--dry-run",)),
    T("log-level-flag-word", "--log-level", args=("--log-level", "verbose")),
    T("config-flag-without-value", "--config", args=("--config",)),
    T("stray-argument", "surprise", args=("surprise",)),
]

"""Momento key formats: which kind of key a string is, the endpoint's shape, and the payloads rotator stores.

All parsing is local and never checks signatures (neither do Momento's SDKs). Error messages use the
wording Momento's SDKs use, adapted to rotator's option names, and never include the key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rotator.errors import KeyFormatError
from rotator.model import SecretText
from rotator.redaction import JWT_RE

KeyKind = Literal["v2", "v1", "legacy", "unknown"]
PayloadFormat = Literal["json", "env", "key"]

#: public cells: cell-[<n>-]<aws-region>-<n>.<domain>, e.g. cell-4-us-west-2-1.prod.a.momentohq.com
CELL_RE = re.compile(r"^cell-(?:\d+-)?[a-z]{2}(?:-gov)?-[a-z]+-\d+-\d+(?:\.[a-z0-9-]+)+\Z")
_HOST_RE = re.compile(
    r"^(?=.{1,253}\Z)"
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z"
)

V2_WHERE_V1 = (
    "Received a v2 API key. Are you using the correct key? Or did you mean to use "
    "`key_version: v2` (with `endpoint`) instead?"
)
MISSING_ENDPOINT = "Missing required property: endpoint"


def _b64url_json(segment: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, unverified, or ``None`` when ``token`` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    if _b64url_json(parts[0]) is None:
        return None
    return _b64url_json(parts[1])


def _is_canonical_base64(s: str) -> bool:
    try:
        return base64.b64encode(base64.b64decode(s, validate=True)).decode() == s
    except (binascii.Error, ValueError):
        return False


def _v1_fields(s: str) -> dict[str, Any] | None:
    if not _is_canonical_base64(s):
        return None
    try:
        data = json.loads(base64.b64decode(s))
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("endpoint"), str) and isinstance(data.get("api_key"), str):
        return data
    return None


def key_kind(key: SecretText | str) -> KeyKind:
    """Which Momento key format ``key`` is: ``v2`` (JWT with ``t == "g"``), ``v1`` (base64 JSON with
    ``endpoint`` and ``api_key``), ``legacy`` (JWT with ``c`` and ``cp``) or ``unknown``."""
    s = key.reveal() if isinstance(key, SecretText) else key
    s = s.strip()
    if not s:
        return "unknown"
    if _v1_fields(s) is not None:
        return "v1"
    claims = jwt_claims(s)
    if claims is None:
        return "unknown"
    if claims.get("t") == "g":
        return "v2"
    if "c" in claims and "cp" in claims:
        return "legacy"
    return "unknown"


def v1_endpoint(key: SecretText) -> str | None:
    """The endpoint embedded in a v1 key, else ``None``."""
    fields = _v1_fields(key.reveal().strip())
    return None if fields is None else str(fields["endpoint"])


def key_id_of(key: SecretText) -> str | None:
    """The key id a key carries, when it carries one (a v2 key's ``jti``), else ``None``."""
    claims = jwt_claims(key.reveal().strip())
    jti = claims.get("jti") if claims else None
    return jti if isinstance(jti, str) else None


def check_issued(
    key: SecretText, key_id: str, expires_at: datetime | None, *, clock_skew: float
) -> None:
    """Raise KeyFormatError unless ``key`` is a key rotator can store as ``key_id`` (checked offline).

    - its format is one rotator recognises: a v2 key (a JWT whose ``t`` claim is ``"g"``) or a v1 key
      (base64 JSON with ``endpoint`` and ``api_key``); a legacy token, an HTML page or any other text is not;
    - the key id it carries (a v2 key's ``jti``) is ``key_id``, the id the issuer's answer names;
    - its ``exp`` claim, where it has one, is ``expires_at`` (the expiry asked for) within ``clock_skew``
      seconds, and a key asked to never expire carries none.

    The message says what is wrong and never includes the key.
    """
    kind = key_kind(key)
    if kind not in ("v2", "v1"):
        what = "a legacy token" if kind == "legacy" else "neither a v2 nor a v1 Momento API key"
        raise KeyFormatError(f"the issued key for {key_id} is {what}")
    if kind == "v1":
        return
    claims = jwt_claims(key.reveal().strip()) or {}
    jti = claims.get("jti")
    if jti is not None and jti != key_id:
        shown = jti if isinstance(jti, str) and _ID_RE.fullmatch(jti) else "another id"
        raise KeyFormatError(f"the issued key carries key id {shown}, not {key_id} as the issuer's answer says")
    exp = claims.get("exp")
    if exp is None:
        return  # a key without exp may still expire at the issuer: the listing says when, and the plan follows it
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise KeyFormatError(f"the issued key for {key_id} has an exp claim that is not a number")
    if expires_at is None:
        raise KeyFormatError(
            f"the issued key for {key_id} expires (exp claim) although a key that never expires was asked for"
        )
    if abs(float(exp) - expires_at.timestamp()) > clock_skew:
        raise KeyFormatError(
            f"the issued key for {key_id} expires at {_iso(datetime.fromtimestamp(float(exp), UTC))}, "
            f"not at {_iso(expires_at)} as asked (beyond clock_skew)"
        )


#: what a key id shown in a message may look like (an id from a hostile answer is not echoed otherwise)
_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_endpoint(endpoint: str, *, private: list[str] | tuple[str, ...] = ()) -> str:
    """``endpoint`` if it is a Momento cell host, else raise KeyFormatError saying what a cell looks like.

    ``private`` holds regular expressions for private cells (``issuer.private_endpoints``), matched in full.
    """
    host = endpoint.strip().lower()
    if host.startswith(("https://", "http://")) or "/" in host or ":" in host:
        raise KeyFormatError(
            f"endpoint {endpoint!r} must be a bare cell host without scheme, port or path, "
            "e.g. cell-4-us-west-2-1.prod.a.momentohq.com"
        )
    if not _HOST_RE.match(host):
        raise KeyFormatError(f"endpoint {endpoint!r} is not a valid host name")
    if CELL_RE.match(host) or any(re.fullmatch(p, host) for p in private):
        return host
    raise KeyFormatError(
        f"endpoint {endpoint!r} does not look like a Momento cell host "
        "(cell-[<n>-]<region>-<n>.<domain>, e.g. cell-4-us-west-2-1.prod.a.momentohq.com); "
        "for a private cell add a pattern to issuer.private_endpoints"
    )


def require_endpoint(key: SecretText, endpoint: str | None, *, expect: Literal["auto", "v1", "v2"] = "auto") -> str:
    """The endpoint to pair with ``key``: the configured one, or the one a v1 key embeds.

    Raises KeyFormatError with Momento's wording: a v2 key without an endpoint is
    ``Missing required property: endpoint``; a v2 key where a v1 key is expected is the "Received a v2 API
    key" message.
    """
    kind = key_kind(key)
    if kind == "unknown":
        raise KeyFormatError("the key is not a Momento API key (neither a v2 key, a v1 key nor a legacy token)")
    if expect == "v1" and kind == "v2":
        raise KeyFormatError(V2_WHERE_V1)
    if expect == "v2" and kind != "v2":
        raise KeyFormatError(f"expected a v2 API key but received a {kind} key; set `key_version: {kind}`")
    if kind == "v1" and not endpoint:
        found = v1_endpoint(key)
        assert found is not None
        return found
    if not endpoint:
        raise KeyFormatError(MISSING_ENDPOINT)
    return endpoint


# ---- stored payloads -------------------------------------------------------------------------------------

CONTENT_TYPES: dict[str, str] = {"json": "application/json", "env": "text/plain", "key": "text/plain"}


@dataclass(frozen=True)
class Payload:
    """What one target stores for one key, and its content type."""

    value: SecretText
    content_type: str


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(fmt: str, api_key: SecretText, *, endpoint: str, key_id: str, expires_at: datetime | None) -> Payload:
    """The payload for format ``fmt``. Deterministic: the same key always renders the same bytes.

    - ``json``: ``{"apiKey", "endpoint", "keyId", "expiresAt"}`` (expiresAt ISO 8601 UTC, or null)
    - ``env``: ``MOMENTO_API_KEY=``, ``MOMENTO_ENDPOINT=``, ``MOMENTO_KEY_ID=``, ``MOMENTO_KEY_EXPIRES_AT=`` lines
    - ``key``: the raw key (the endpoint goes to the target's ``endpoint_secret``)
    """
    key = api_key.reveal()
    if fmt == "json":
        body = json.dumps(
            {"apiKey": key, "endpoint": endpoint, "keyId": key_id, "expiresAt": _iso(expires_at)},
            separators=(",", ":"),
        )
    elif fmt == "env":
        body = (
            f"MOMENTO_API_KEY={key}\nMOMENTO_ENDPOINT={endpoint}\nMOMENTO_KEY_ID={key_id}\n"
            f"MOMENTO_KEY_EXPIRES_AT={_iso(expires_at) or 'never'}\n"
        )
    elif fmt == "key":
        body = key
    else:
        raise KeyFormatError(f"unknown payload format {fmt!r}: use json, env or key")
    return Payload(SecretText(body), CONTENT_TYPES[fmt])


def _env_fields(text: str) -> dict[str, str]:
    """``NAME=value`` lines (an ``export`` prefix and quotes around the value allowed), later lines winning."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep:
            fields[name.strip()] = value.strip().strip("\"'")
    return fields


def payload_key_id(payload: SecretText | str, fmt: str | None = None) -> str | None:
    """The key id a stored payload names: the one rule for the engine, every store and the pickup checks.

    - ``json``: its ``keyId``, else the ``jti`` of its ``apiKey``;
    - ``env``: the ``MOMENTO_KEY_ID=`` line (``export`` and quotes allowed), else the ``jti`` of
      ``MOMENTO_API_KEY=``;
    - ``key``: the raw key's id (a v2 key's ``jti``).

    ``fmt`` None: told from the text (``{`` starts JSON; a ``MOMENTO_*=`` line makes it env; else a raw key).
    ``None`` when it names none (a value rotator did not write). Never raises, never shows the payload.
    """
    text = (payload.reveal() if isinstance(payload, SecretText) else payload).strip()
    if fmt is None:
        if text.startswith("{"):
            fmt = "json"
        elif any(name.startswith("MOMENTO_") for name in _env_fields(text)):
            fmt = "env"
        else:
            fmt = "key"
    api_key: object
    if fmt == "json":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        kid, api_key = data.get("keyId"), data.get("apiKey")
    elif fmt == "env":
        fields = _env_fields(text)
        kid, api_key = fields.get("MOMENTO_KEY_ID"), fields.get("MOMENTO_API_KEY")
    elif fmt == "key":
        kid, api_key = None, text if "\n" not in text else None
    else:
        return None
    if isinstance(kid, str) and kid.strip():
        return kid.strip()
    return (key_id_of(SecretText(api_key)) or None) if isinstance(api_key, str) and api_key else None


def parse_api_key(fmt: str, payload: SecretText) -> SecretText:
    """The API key inside a stored payload of format ``fmt``. Raises KeyFormatError (without the payload)."""
    text = payload.reveal()
    if fmt == "json":
        try:
            data = json.loads(text)
        except ValueError:
            raise KeyFormatError("the stored value is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("apiKey"), str):
            raise KeyFormatError("the stored JSON has no string field 'apiKey'")
        return SecretText(data["apiKey"])
    if fmt == "env":
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() == "MOMENTO_API_KEY":
                return SecretText(value.strip())
        raise KeyFormatError("the stored value has no MOMENTO_API_KEY= line")
    if fmt == "key":
        return SecretText(text.strip())
    raise KeyFormatError(f"unknown payload format {fmt!r}: use json, env or key")


# ---- values quoted in messages -----------------------------------------------------------------------------

# key-shaped text: a JWT (v2 keys, legacy tokens), base64 JSON (v1 keys), or a long mixed base64 run
_B64_RUN_RE = re.compile(r"[A-Za-z0-9+/_=-]{32,}")
# a run without '/': for "a long base64 string", so that paths and webhook URLs are not taken for secrets
_B64_PLAIN_RE = re.compile(r"[A-Za-z0-9+_=-]{32,}")
SECRET_HINT = "a key does not belong in this field (read secrets with {env: VAR} or {file: PATH})"  # noqa: S105


def key_shape(token: str) -> str | None:
    kind = key_kind(token)
    if kind == "v2":
        return "a Momento API key (v2)"
    if kind == "v1":
        return "a Momento API key (v1)"
    if kind == "legacy":
        return "a Momento legacy token"
    if JWT_RE.fullmatch(token):
        return "a JWT"
    if token.startswith("eyJ") or (
        any(c.isdigit() for c in token) and any(c.isupper() for c in token) and any(c.islower() for c in token)
    ):
        return "a long base64 string (a secret?)"
    return None


def describe_secrets(text: str) -> str:
    """``text`` with every key-shaped token replaced by a short description of it and a hint."""
    if len(text) < 32:
        return text

    def sub(m: re.Match[str]) -> str:
        what = key_shape(m.group(0))
        return m.group(0) if what is None else f"<{what}: {SECRET_HINT}>"

    text = JWT_RE.sub(sub, text)
    text = _B64_RUN_RE.sub(lambda m: sub(m) if m.group(0).startswith("eyJ") else m.group(0), text)
    return _B64_PLAIN_RE.sub(sub, text)


def momento_keys_in(text: str) -> list[str]:
    """Descriptions of the Momento keys (v1, v2, legacy) found in ``text``."""
    if len(text) < 32:
        return []
    found = []
    for m in (*JWT_RE.finditer(text), *_B64_RUN_RE.finditer(text)):
        if key_kind(m.group(0)) in ("v1", "v2", "legacy"):
            found.append(key_shape(m.group(0)) or "a Momento API key")
    return found


def shown(value: Any) -> str:
    """``repr(value)`` for a message, unless it is shaped like a key: then a description of it."""
    text = repr(value)
    described = describe_secrets(text)
    if described != text:  # described, not shown: never cut a key in two (a part could slip through)
        return described
    return text if len(text) <= 120 else text[:100] + "...'"

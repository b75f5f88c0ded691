"""The one redactor of rotator, and the registry of everything it scrubs.

- :data:`SECRETS` holds the plaintexts alive in this process (every :class:`SecretText`, weakly) and every
  credential rotator was configured with (pinned for the life of the process).
- :func:`redact_text` / :func:`redact_value` replace those values, and anything shaped like a JWT or a v1
  key (:data:`JWT_RE`, the one pattern of a key-shaped token), with ``[REDACTED]``. Every log line (the
  structlog processor in :mod:`rotator.observability`), error, summary, alert and page passes them.

The ground floor: it imports nothing of rotator's, so every module may use it.
"""

from __future__ import annotations

import re
import threading
import weakref
from typing import Any

__all__ = ["JWT_RE", "REDACTED", "SECRETS", "SecretText", "redact_text", "redact_value"]


class _SecretRegistry:
    """What the redactor scrubs from every log line, error, summary, alert and page: the plaintexts alive in
    this process (held weakly: an issued key is dropped with its last reference), and every credential rotator
    was configured with (pinned for the life of the process: the management key, notifier URLs and headers,
    pickup tokens, user info and query values in any URL)."""

    #: shorter values are not scrubbed (they would blank ordinary words)
    MIN_LENGTH = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: weakref.WeakSet[SecretText] = weakref.WeakSet()
        self._pinned: set[str] = set()

    def add(self, s: SecretText) -> None:
        with self._lock:
            self._values.add(s)

    def pin(self, value: str) -> None:
        """Scrub ``value`` (and its stripped form) for the life of the process."""
        for v in {value, value.strip()}:
            if len(v) >= self.MIN_LENGTH:
                with self._lock:
                    self._pinned.add(v)

    def pin_url(self, url: str) -> None:
        """Pin the credentials a URL may carry: its user info, and each query value."""
        from urllib.parse import parse_qsl, urlsplit

        try:
            parts = urlsplit(url)
        except ValueError:
            return
        if "@" in parts.netloc:
            userinfo = parts.netloc.rpartition("@")[0]
            self.pin(userinfo)
            for piece in userinfo.split(":"):
                self.pin(piece)
        for _, value in parse_qsl(parts.query, keep_blank_values=False):
            self.pin(value)

    def values(self) -> list[str]:
        """Every value to scrub, longest first (a URL that holds a token is replaced whole)."""
        with self._lock:
            found = {s.reveal() for s in list(self._values)} | self._pinned
        return sorted(found, key=len, reverse=True)


SECRETS = _SecretRegistry()


class SecretText:
    """A plaintext secret (an API key or a payload holding one). Never shown by ``repr``, ``str`` or ``format``.

    Call :meth:`reveal` at the one place that must hand the value to a client library.
    """

    __slots__ = ("__value", "__weakref__")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretText wraps a str")
        self.__value = value
        if len(value) >= 8:
            SECRETS.add(self)

    def reveal(self) -> str:
        return self.__value

    def __repr__(self) -> str:
        return "SecretText('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretText) and other.__value == self.__value

    def __hash__(self) -> int:
        return hash(self.__value)

    def __len__(self) -> int:
        return len(self.__value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretText cannot be pickled")



REDACTED = "[REDACTED]"
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
# a v1 key is base64 of '{"endpoint"...' or '{"api_key"...': it starts with eyJ too, without dots
_B64_JSON_RE = re.compile(r"eyJ[A-Za-z0-9+/]{40,}={0,2}")


def redact_text(text: str) -> str:
    """``text`` with every known plaintext and every key-shaped token replaced by ``[REDACTED]``."""
    for value in SECRETS.values():
        if value and value in text:
            text = text.replace(value, REDACTED)
    text = JWT_RE.sub(REDACTED, text)
    return _B64_JSON_RE.sub(REDACTED, text)


def redact_value(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with every string redacted."""
    return _redact(value)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))

"""Every error rotator raises, in one tree.

::

    RotatorError
    ├── ConfigError              bad config or bad input; exit code 2; nothing was changed
    ├── MissingExtraError        an optional extra (``momento-rotator[aws]``...) is not installed
    ├── KeyFormatError           a Momento key or endpoint has the wrong shape
    ├── IssuerError              the Momento key API failed (names the operation)
    │   ├── IssuerUnavailable    connection errors, timeouts, 429 and 5xx after retries
    │   ├── IssuerAuthError      401: the management key is missing, unknown, expired or revoked
    │   ├── IssuerPermissionError 403: the management key's role may not manage keys
    │   ├── IssuerNotFound       404: unknown role or key
    │   └── IssuerBadRequest     400: the request was rejected
    ├── StoreError               a secret store failed (names the store and the secret)
    │   ├── StoreUnavailable     throttling, 5xx, connection errors after retries
    │   ├── StorePermissionError access denied; names the missing permission
    │   ├── StoreNotFound        the secret or the version does not exist
    │   ├── StoreConflict        the secret is in a state rotator must not overwrite
    │   └── StoreIntegrityError  a read-back did not return what was written
    └── PickupError              a pickup check could not get an answer

Messages name the policy, target, store or operation and never carry secret material.
SDK and HTTP exceptions are translated at the boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass


class RotatorError(Exception):
    """Base of every error rotator raises."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is and how to fix it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(RotatorError):
    """The configuration (or a command-line input) is invalid. Exit code 2; nothing was changed."""

    def __init__(self, issues: list[ConfigIssue] | str, *, source: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        self.issues = issues
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"{head} ({len(issues)} error{'s' if len(issues) != 1 else ''}):\n{lines}")


class MissingExtraError(RotatorError):
    """A backend needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, *, package: str = "rotator") -> None:
        self.extra = extra
        self.package = package
        install = f"momento-rotator[{extra}]" if package == "rotator" else package
        super().__init__(
            f"the {extra!r} backend needs {module!r}, which is not installed: run  pip install '{install}'"
        )


class KeyFormatError(RotatorError, ValueError):
    """A Momento API key or endpoint does not have the expected shape."""


class IssuerError(RotatorError):
    """The Momento key API failed."""

    def __init__(self, message: str, *, status: int | None = None, operation: str | None = None) -> None:
        self.status = status
        self.operation = operation
        super().__init__(message)


class IssuerUnavailable(IssuerError):
    """The issuer could not be reached or kept failing (429/5xx) after retries."""


class IssuerAuthError(IssuerError):
    """401: the management key is missing, unknown, expired or revoked."""


class IssuerPermissionError(IssuerError):
    """403: the management key is valid but its role may not manage API keys."""


class IssuerNotFound(IssuerError):
    """404: the role or key does not exist."""


class IssuerBadRequest(IssuerError):
    """400: the issuer rejected the request body or parameters."""


class IssuerFaulty(IssuerError):
    """The issuer answered 200 with something that is not the key it claims (not a Momento key, another key
    id, another expiry). Nothing was stored; the answer's key was revoked when it could be."""


class StoreError(RotatorError):
    """A secret store operation failed."""

    def __init__(self, message: str, *, store: str | None = None, secret: str | None = None) -> None:
        self.store = store
        self.secret = secret
        where = ", ".join(p for p in (f"store {store!r}" if store else "", f"secret {secret!r}" if secret else "") if p)
        super().__init__(f"{message} ({where})" if where else message)


class StoreUnavailable(StoreError):
    """Throttling, 5xx or connection errors that outlasted the retries."""


class StorePermissionError(StoreError):
    """Access denied; the message names the missing permission or role."""


class StoreNotFound(StoreError):
    """The secret or version does not exist."""


class StoreConflict(StoreError):
    """The secret is in a state rotator must not overwrite (foreign value, foreign rotation, deleted)."""


class StorePreconditionFailed(StoreConflict):
    """A compare-and-set found the target changed since it was read: the write was not made.

    Not a failure of the store: another pass (or a person) got there first. The next pass re-reads and plans
    again.
    """


class StoreIntegrityError(StoreError):
    """A read-back returned something other than what was written."""


class DeadlinePassed(RotatorError):
    """The pass ran past ``pass_timeout`` (on the monotonic clock): no further mutation may start."""


class PickupError(RotatorError):
    """A pickup check could not get an answer from its consumers."""


class ReloadError(RotatorError):
    """A reload target could not start or observe a reload (the message names the unit and, for a refusal,
    the permission to grant; never a token or a value)."""

    def __init__(self, message: str, *, target: str | None = None, unit: str | None = None) -> None:
        self.target = target
        self.unit = unit
        where = "/".join(p for p in (target, unit) if p)
        super().__init__(f"{message} (reload {where})" if where else message)


class ReloadConflict(ReloadError):
    """The unit changed since it was observed (another pass or a person restarted it): nothing was done.
    Not a failure: the next pass observes it again."""

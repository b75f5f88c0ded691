"""The key-issuer contract: what rotator needs from Momento's key-management API."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from rotator.model import IssuedKey, KeyInfo, Role, SecretText


@runtime_checkable
class KeyIssuer(Protocol):
    """Creates, lists and revokes API keys. Every method raises only :class:`rotator.errors.IssuerError`s."""

    def list_keys(self) -> list[KeyInfo]:
        """Every live key in the account (all pages). Raises IssuerAuthError, IssuerUnavailable, ..."""
        ...

    def create_key(self, role_id: str, description: str, expires_at: datetime | None) -> IssuedKey:
        """Create a key; the plaintext is returned once, wrapped in SecretText. Not idempotent."""
        ...

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key. Idempotent: a key that is already gone (404) counts as revoked."""
        ...

    def list_roles(self) -> list[Role]:
        """Every role (system and custom), all pages."""
        ...

    def set_management_key(self, key: SecretText) -> None:
        """Use ``key`` for every later request: rotator's own key was rotated (a policy with ``self: true``).
        Local: makes no call. An issuer that needs no key (a test double) ignores it."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...
